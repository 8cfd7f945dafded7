"""resin's stdout: a queue of whole packets, written with writev.

The outbox alone owns the rule *bytes queued => stdout watched*: `flush`
writes what the pipe takes, runs the resume callback when the backlog falls
below the low watermark (which may queue more), and only then states its
interest in stdout. The loop calls `flush` before every wait.
"""

from __future__ import annotations

import errno
from itertools import islice

from resin_py.lite import TYPE_CHECKING, deque
from resin_py.runtime.loop import WRITE

if TYPE_CHECKING:
    from collections.abc import Callable

    from resin_py.runtime.fdio import Buffer, Fds
    from resin_py.runtime.loop import Poller

# Above this many bytes waiting for resin's stdout, stop reading children's
# pipes and resin's own stdin: the children block, the BEAM's port turns
# busy, instead of resin's memory growing.
OUT_HIGH_WATER = 1024 * 1024
# ... and resume once the backlog is below this.
OUT_LOW_WATER = 256 * 1024
# writev takes at most this many buffers per call.
IOV_MAX = 1024


class Outbox:
    __slots__ = (
        "_fds", "_poller", "_queue", "blocking", "fd", "high_water", "low_water", "on_broken",
        "on_pause_change", "paused", "size",
    )

    def __init__(self, fd: int, fds: Fds, poller: Poller, *, blocking: bool = False,
                 high_water: int = OUT_HIGH_WATER, low_water: int = OUT_LOW_WATER) -> None:
        self.fd = fd
        self.high_water = high_water
        self.low_water = low_water
        self._fds = fds
        self._poller = poller
        self._queue: deque[Buffer] = deque()
        self.size = 0  # bytes queued
        self.paused = False  # above OUT_HIGH_WATER, not yet below OUT_LOW_WATER
        self.blocking = blocking  # stdout cannot be polled (a regular file): writes block
        # Called with the new state when `paused` changes; a resume may queue more.
        self.on_pause_change: Callable[[bool], None] = _nothing
        # The reader is gone (EPIPE or another write error): what was queued is dropped.
        self.on_broken: Callable[[OSError], None] = _nothing_err

    def push(self, *parts: Buffer) -> None:
        """Queue bytes (whole packets); written by the next `flush`."""
        queue = self._queue
        for part in parts:
            if part:
                queue.append(part)
                self.size += len(part)
        if self.size > self.high_water and not self.paused:
            self.paused = True
            self.on_pause_change(True)

    def flush(self) -> None:
        """Write what stdout takes now; resume the producers if the backlog is
        low; then watch stdout exactly when bytes are left."""
        while True:
            self._write()
            if not (self.paused and self.size < self.low_water):
                break
            self.paused = False
            self.on_pause_change(False)  # may push, even past the high watermark again
        self._poller.set_interest(self.fd, WRITE if self._queue and not self.blocking else 0,
                                  self.flush)

    def _write(self) -> None:
        queue = self._queue
        writev = self._fds.writev
        while queue:
            try:
                n = writev(self.fd, list(islice(queue, IOV_MAX)))
            except BlockingIOError:
                return
            except OSError as exc:
                queue.clear()
                self.size = 0
                self.on_broken(exc)
                return
            self.size -= n
            while n:
                first = queue[0]
                if len(first) <= n:
                    n -= len(first)
                    queue.popleft()
                else:
                    queue[0] = memoryview(first)[n:]
                    n = 0

    def __len__(self) -> int:
        return self.size


def is_disconnect(exc: OSError) -> bool:
    """The client went away (as opposed to a write error worth logging)."""
    return exc.errno == errno.EPIPE


def _nothing(_paused: bool) -> None:
    pass


def _nothing_err(_exc: OSError) -> None:
    pass
