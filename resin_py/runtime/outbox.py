"""resin's stdout: a queue of whole packets, written with writev, and frames
whose bytes move from a child's pipe by splice(2).

The outbox alone owns the rule *bytes queued => stdout watched*: `flush`
writes what the pipe takes, runs the resume callback when the backlog falls
below the low watermark (which may queue more), and only then states its
interest in stdout. The loop calls `flush` before every wait.

A spliced frame (`splice`) is its header followed by bytes that stay in the
child's pipe until the kernel moves them. Its length is in the header, so
once begun it is finished before anything else is written: if resin's
stdout fills up part way, the rest is *pending* and `flush` moves it first.
Meanwhile nobody may read that child's pipe, and the bytes count in `size`
like queued ones (watermarks, final flush).
"""

from __future__ import annotations

import errno
from itertools import islice

from resin_py.lite import TYPE_CHECKING, deque
from resin_py.runtime.fdio import SPLICE_ENABLED
from resin_py.runtime.loop import WRITE

if TYPE_CHECKING:
    from collections.abc import Callable
    from enum import Enum

    from resin_py.runtime.fdio import Buffer, Fds
    from resin_py.runtime.loop import Poller
else:
    from resin_py.protocol.common import LiteEnum as Enum

# Above this many bytes waiting for resin's stdout, stop reading children's
# pipes and resin's own stdin: the children block, the BEAM's port turns
# busy, instead of resin's memory growing.
OUT_HIGH_WATER = 1024 * 1024
# ... and resume once the backlog is below this.
OUT_LOW_WATER = 256 * 1024
# writev takes at most this many buffers per call.
IOV_MAX = 1024


class Spliced(Enum):
    """What became of a frame handed to `Outbox.splice` (it is never refused:
    a frame begun is resin's to finish)."""

    ALL = "all"  # the header and every byte went out
    PART = "part"  # the rest is pending: `flush` moves it before anything else
    READ = "read"  # the source cannot be spliced (or stdout broke): the frame's
    #                bytes were read and queued instead; use reads from now on


class Outbox:
    __slots__ = (
        "_error", "_fds", "_head", "_idle_wanted", "_left", "_poller", "_queue", "_src",
        "blocking", "broken", "fd", "high_water", "low_water", "on_broken", "on_idle",
        "on_pause_change", "paused", "size", "splicing",
    )

    def __init__(self, fd: int, fds: Fds, poller: Poller, *, blocking: bool = False,
                 high_water: int = OUT_HIGH_WATER, low_water: int = OUT_LOW_WATER) -> None:
        self.fd = fd
        self.high_water = high_water
        self.low_water = low_water
        self._fds = fds
        self._poller = poller
        self._queue: deque[Buffer] = deque()
        self.size = 0  # bytes queued, and those of a pending spliced frame
        self.paused = False  # above OUT_HIGH_WATER, not yet below OUT_LOW_WATER
        self.blocking = blocking  # stdout cannot be polled (a regular file): writes block
        # Called with the new state when `paused` changes; a resume may queue more.
        self.on_pause_change: Callable[[bool], None] = _nothing
        # The reader is gone (EPIPE or another write error): what was queued, and
        # all that comes later, is dropped. Called once.
        self.on_broken: Callable[[OSError], None] = _nothing_err
        # Frames may be spliced: stdout is a pipe that epoll watches.
        self.splicing = SPLICE_ENABLED and not blocking and fds.is_pipe(fd)
        # The pending spliced frame: its source pipe (-1: none), the rest of its
        # header, and its bytes still in the source.
        self._src = -1
        self._head: Buffer = b""
        self._left = 0
        # Called once nothing waits for stdout any more, if `want_idle` asked.
        self.on_idle: Callable[[], None] = _nothing_idle
        self._idle_wanted = False
        # A write error not reported yet: `on_broken` runs from `flush` only,
        # never from inside `splice` (its caller may be in the middle of a drain).
        self._error: OSError | None = None
        self.broken = False  # a write failed: everything from then on is dropped

    def push(self, *parts: Buffer) -> None:
        """Queue bytes (whole packets); written by the next `flush`."""
        if self.broken:
            return
        queue = self._queue
        for part in parts:
            if part:
                queue.append(part)
                self.size += len(part)
        self._check_high()

    def _check_high(self) -> None:
        if self.size > self.high_water and not self.paused:
            self.paused = True
            self.on_pause_change(True)

    def splice(self, src: int, header: bytes, n: int) -> Spliced:
        """Write one frame: `header`, then `n` bytes moved from pipe `src`,
        which holds at least that many and which only resin reads. Only when
        nothing is queued (`size` is 0), and only if `splicing`. The frame is
        taken whatever stdout's room: the caller counts its bytes as read."""
        assert not self.size and self.splicing, "a spliced frame would overtake queued bytes"
        self._src, self._head, self._left = src, header, n
        self.size = len(header) + n
        if self._continue():
            return Spliced.READ if self._queue or not self.splicing else Spliced.ALL
        self._check_high()
        return Spliced.PART

    def release(self, src: int) -> None:
        """Free pipe `src` for reading or closing: if a frame is pending from
        it, its bytes are read now and queued first (shutting down)."""
        if self._src == src:
            self._read_rest()

    def want_idle(self) -> None:
        """Call `on_idle` once nothing waits for stdout (a pipe waits to splice)."""
        self._idle_wanted = True

    def flush(self) -> None:
        """Write what stdout takes now; resume the producers if the backlog is
        low (or call `on_idle` once it is empty, if wanted); then watch stdout
        exactly when bytes are left."""
        while True:
            self._write()
            if self._error is not None:
                exc, self._error = self._error, None
                self.on_broken(exc)
            elif self.paused and self.size < self.low_water:
                self.paused = False
                self.on_pause_change(False)  # may push, even past the high watermark again
            elif self._idle_wanted and not self.size:
                self._idle_wanted = False
                self.on_idle()  # may splice or push
            else:
                break
        self._poller.set_interest(self.fd, WRITE if self.size and not self.blocking else 0,
                                  self.flush)

    def _continue(self) -> bool:
        """Move what stdout takes of the pending frame; True once none is pending
        (finished, turned into queued bytes, or dropped with a broken stdout)."""
        fds = self._fds
        if self._head:
            try:
                k = fds.write(self.fd, self._head)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._broken(exc)
                return True
            self.size -= k
            self._head = memoryview(self._head)[k:] if k < len(self._head) else b""
            if self._head:
                return False
        while self._left:
            try:
                k = fds.splice(self._src, self.fd, self._left)
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # the reader of resin's stdout is gone
                    self._broken(exc)
                else:  # the source refuses splice (EINVAL): read its bytes instead
                    self._read_rest()
                return True
            if not k:  # the source at its end: cannot be, resin counted the bytes
                self._read_rest()
                return True
            self.size -= k
            self._left -= k
        self._src = -1
        return True

    def _read_rest(self) -> None:
        """The pending frame's rest, read instead of spliced: queued first."""
        left = self._left
        data = bytearray()
        while len(data) < left:
            try:
                chunk = self._fds.read(self._src, left - len(data))
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        # Not there (cannot be: resin counted them and alone reads the pipe):
        # zeros keep the frame whole, and with it every frame after it.
        data += bytes(left - len(data))
        if data:
            self._queue.appendleft(bytes(data))
        if self._head:
            self._queue.appendleft(self._head)
        self._src, self._head, self._left = -1, b"", 0

    def _broken(self, exc: OSError) -> None:
        """The reader is gone (or stdout failed): drop everything, now and
        later, and report it once (from `flush`)."""
        self._queue.clear()
        self.size = 0
        self._src, self._head, self._left = -1, b"", 0
        self.splicing = False
        if not self.broken:
            self.broken = True
            self._error = exc

    def _write(self) -> None:
        if self._src >= 0 and not self._continue():
            return
        if self.broken:
            return
        queue = self._queue
        writev = self._fds.writev
        while queue:
            try:
                n = writev(self.fd, list(islice(queue, IOV_MAX)))
            except BlockingIOError:
                return
            except OSError as exc:
                self._broken(exc)
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


def _nothing_idle() -> None:
    pass
