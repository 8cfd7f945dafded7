"""Fakes for unit and model tests of resin's runtime: a descriptor layer
whose pipes and stdout a test fills and empties step by step, a poller that
reports readiness from that state, and a session that records what the
runtime hands it.

Each fake pipe has a finite capacity; resin's stdout accepts only as many
bytes as the test has made room for (0: EAGAIN), so partial writes happen,
and so do partial splices (a child's pipe to resin's stdout, moved as the
kernel would: up to the room, never more than the pipe holds).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from resin_py.protocol.common import StreamKind
from resin_py.protocol.errors import ProtocolError
from resin_py.protocol.session import ChildRef, StdinResult
from resin_py.runtime.children import Child, Children, OutPipe
from resin_py.runtime.fdio import Buffer
from resin_py.runtime.loop import READ, WRITE, Loop
from resin_py.runtime.outbox import Outbox

if TYPE_CHECKING:
    from resin_py.runtime.loop import Handler

STDOUT_FD = 1
PIPE_CAPACITY = 64


@dataclass
class FakePipe:
    """A child's output pipe (resin reads) or stdin pipe (resin writes)."""

    data: bytearray = field(default_factory=bytearray)
    writer_closed: bool = False  # output pipe: the child (and its group) closed it
    reader_closed: bool = False  # stdin pipe: the child closed its stdin
    closed: bool = False  # resin closed its end
    room: int = PIPE_CAPACITY  # stdin pipe: bytes it takes now


class FakeFds:
    def __init__(self) -> None:
        self.pipes: dict[int, FakePipe] = {}
        self.next_fd = 100
        self.stdout_room = 0
        self.stdout = bytearray()  # everything resin wrote to its stdout
        self.stdout_pipe = True  # resin's stdout is a pipe (splice can move bytes into it)
        self.stdout_broken = False  # the reader is gone: EPIPE
        self.not_pipes: set[int] = set()  # output fds that are no pipe (a pty master)
        self.refuse_splice: set[int] = set()  # pipes whose splice fails with EINVAL
        self.spliced = 0  # bytes moved by splice
        self.fionreads = 0  # calls of available()

    def new_pipe(self) -> int:
        fd = self.next_fd
        self.next_fd += 1
        self.pipes[fd] = FakePipe()
        return fd

    # --- the Fds interface ---

    def read(self, fd: int, n: int) -> bytes:
        pipe = self._open(fd)
        if not pipe.data:
            if pipe.writer_closed:
                return b""
            raise BlockingIOError
        out = bytes(pipe.data[:n])
        del pipe.data[:n]
        return out

    def readinto(self, fd: int, buf: bytearray) -> int:
        raise BlockingIOError

    def write(self, fd: int, data: Buffer) -> int:
        if fd == STDOUT_FD:
            return self.writev(fd, [data])
        pipe = self._open(fd)
        if pipe.reader_closed:
            raise BrokenPipeError
        if not pipe.room:
            raise BlockingIOError
        n = min(pipe.room, len(data))
        pipe.room -= n
        pipe.data += data[:n]
        return n

    def writev(self, fd: int, bufs: Sequence[Buffer]) -> int:
        assert fd == STDOUT_FD
        if self.stdout_broken:
            raise BrokenPipeError(errno.EPIPE, "the reader is gone")
        if not self.stdout_room:
            raise BlockingIOError
        n = 0
        for buf in bufs:
            take = min(len(buf), self.stdout_room - n)
            self.stdout += buf[:take]
            n += take
            if n == self.stdout_room:
                break
        self.stdout_room -= n
        return n

    def close(self, fd: int) -> None:
        self._open(fd).closed = True

    def set_pipe_size(self, fd: int, size: int) -> int:
        raise OSError("fake pipes keep their size")

    def available(self, fd: int) -> int:
        self.fionreads += 1
        return len(self._open(fd).data)

    def is_pipe(self, fd: int) -> bool:
        if fd == STDOUT_FD:
            return self.stdout_pipe
        return fd not in self.not_pipes

    def inode(self, fd: int) -> int:
        self._open(fd)
        return 7000 + fd

    def hung_up(self, fd: int) -> bool:
        return self._open(fd).writer_closed

    def splice(self, src: int, dst: int, n: int) -> int:
        assert dst == STDOUT_FD and self.stdout_pipe and src not in self.not_pipes
        pipe = self._open(src)
        if self.stdout_broken:
            raise BrokenPipeError(errno.EPIPE, "the reader is gone")
        if src in self.refuse_splice:
            raise OSError(errno.EINVAL, "splice refused")
        if not pipe.data:
            if pipe.writer_closed:
                return 0
            raise BlockingIOError
        if not self.stdout_room:
            raise BlockingIOError
        k = min(n, len(pipe.data), self.stdout_room)
        self.stdout += pipe.data[:k]
        del pipe.data[:k]
        self.stdout_room -= k
        self.spliced += k
        return k

    def _open(self, fd: int) -> FakePipe:
        pipe = self.pipes[fd]
        assert not pipe.closed, f"fd {fd} used after close"
        return pipe

    # --- readiness, for the poller ---

    def readable(self, fd: int) -> bool:
        pipe = self.pipes[fd]
        return bool(pipe.data) or pipe.writer_closed

    def writable(self, fd: int) -> bool:
        if fd == STDOUT_FD:
            return self.stdout_room > 0
        pipe = self.pipes[fd]
        return pipe.room > 0 or pipe.reader_closed


class FakePoller:
    def __init__(self, fds: FakeFds) -> None:
        self.fds = fds
        self.watched: dict[int, tuple[int, Handler]] = {}

    def set_interest(self, fd: int, events: int, handler: Handler) -> None:
        if events:
            assert fd == STDOUT_FD or not self.fds.pipes[fd].closed, "watching a closed fd"
            self.watched[fd] = (events, handler)
        else:
            self.watched.pop(fd, None)

    def interest(self, fd: int) -> int:
        return self.watched.get(fd, (0, None))[0]

    def poll(self, timeout: float | None) -> list[Handler]:
        ready = []
        for fd, (events, handler) in list(self.watched.items()):
            if (events & READ and self.fds.readable(fd)) or (
                    events & WRITE and self.fds.writable(fd)):
                ready.append(handler)
        return ready


# Records in the fake session's output: kind byte, id, then a payload.
_REC = struct.Struct(">cII")


class RecordingSession:
    """A session that frames what it is handed into resin's stdout, so that
    a test checks what actually went out, in order."""

    stdin_backlog: int | None = None

    def __init__(self, outbox: Outbox, read_limit: int = 7, splice_limit: int = 5) -> None:
        self.outbox = outbox
        self.read_limit = read_limit
        self.splice_limit = splice_limit  # 0: output only through on_output
        self.stdin_results: dict[int, list[StdinResult]] = {}
        self.closed_refs: list[tuple[int, object]] = []

    def on_packet(self, payload: bytes) -> None:
        raise AssertionError("not used")

    def on_framing_error(self, exc: ProtocolError) -> None:
        raise AssertionError("not used")

    def on_internal_error(self, exc: Exception) -> None:
        raise AssertionError("not used")

    def on_output(self, child: ChildRef, kind: StreamKind, data: bytes) -> None:
        assert 0 < len(data) <= self.read_limit
        self.outbox.push(_REC.pack(b"o" if kind == StreamKind.STDOUT else b"e", child.id,
                                   len(data)), data)

    def output_header(self, child: ChildRef, kind: StreamKind, n: int) -> bytes:
        assert 0 < n <= self.splice_limit
        return _REC.pack(b"o" if kind == StreamKind.STDOUT else b"e", child.id, n)

    def on_stdin_result(self, child: ChildRef, result: StdinResult) -> None:
        self.stdin_results.setdefault(child.id, []).append(result)

    def on_close_stdin_done(self, child: ChildRef, ref: object) -> None:
        self.closed_refs.append((child.id, ref))

    def on_direct(self, child: ChildRef, pipes: tuple[tuple[StreamKind, int, int], ...]
                  ) -> None:
        # A record per pipe handed over: "d"/"D" (stdout/stderr), with its fd.
        for kind, fd, _inode in pipes:
            self.outbox.push(_REC.pack(b"d" if kind == StreamKind.STDOUT else b"D", child.id, 4),
                             fd.to_bytes(4, "big"))

    def on_exit(self, child: ChildRef) -> None:
        self.outbox.push(_REC.pack(b"x", child.id, 0))


def parse_output(out: bytes) -> tuple[dict[tuple[int, str], bytes], list[int], int]:
    """What resin's stdout carried: per (id, stream) the bytes, the exits in
    order, and how many bytes of a trailing partial record are left over."""
    streams: dict[tuple[int, str], bytearray] = {}
    exits: list[int] = []
    pos = 0
    while len(out) - pos >= _REC.size:
        tag, id, n = _REC.unpack_from(out, pos)
        if len(out) - pos - _REC.size < n:
            break
        start = pos + _REC.size
        if tag == b"x":
            exits.append(id)
        else:
            # An exit is the last record of its child.
            assert id not in exits, f"output of {id} after its exit"
            streams.setdefault((id, tag.decode()), bytearray()).extend(out[start:start + n])
        pos = start + n
    return {k: bytes(v) for k, v in streams.items()}, exits, len(out) - pos


class Rig:
    """Outbox + Children + Loop over the fakes, wired as resin wires them."""

    def __init__(self, *, high_water: int = 64, low_water: int = 16,
                 outbox_class: type[Outbox] = Outbox, stdout_pipe: bool = True,
                 splice_min: int = 1) -> None:
        self.fds = FakeFds()
        self.fds.stdout_pipe = stdout_pipe
        self.poller = FakePoller(self.fds)
        self.outbox = outbox_class(STDOUT_FD, self.fds, self.poller, high_water=high_water,
                                   low_water=low_water)
        self.session = RecordingSession(self.outbox)
        self.children = Children(self.fds, self.poller, self.outbox, self.session)
        # 1: every output is spliced (tests of the splice path use small outputs).
        self.children.splice_min = splice_min
        self.outbox.on_pause_change = self.children.on_pause_change
        self.outbox.on_idle = self.children.on_idle
        self.loop = Loop(self.poller, self.outbox.flush)
        self.next_pid = 1000

    def spawn(self, id: int, credit: int | None = None, stderr: bool = True,
              source: str = "pipe", direct: tuple[StreamKind, ...] = (),
              direct_after: int = 0) -> Child:
        """A child; `source`: its output fds are pipes, or pipes that refuse
        splice ("refuses"), or no pipes ("pty"); `direct`: streams the client
        reads itself."""
        pipes = [OutPipe(self.fds.new_pipe(), StreamKind.STDOUT, credit,
                         direct=StreamKind.STDOUT in direct)]
        if stderr:
            pipes.append(OutPipe(self.fds.new_pipe(), StreamKind.STDERR, credit,
                                 direct=StreamKind.STDERR in direct))
        for p in pipes:
            if p.direct and direct_after:
                p.direct, p.direct_after = False, direct_after
            if source == "refuses":
                self.fds.refuse_splice.add(p.fd)
            elif source == "pty":
                self.fds.not_pipes.add(p.fd)
        child = Child(id, self.next_pid, self.fds.new_pipe(), pipes)
        self.next_pid += 1
        self.children.add(child)
        return child

    def turn(self) -> None:
        """One loop turn that does not wait: what is ready, then settle (so the
        state after it is what the next wait sees)."""
        self.loop.turn(0)
        self.outbox.flush()

    def settle(self) -> None:
        self.outbox.flush()

    def stalled(self) -> str | None:
        """Why the loop would sleep with work it could do, or None."""
        if self.outbox.size and not self.poller.interest(STDOUT_FD) & WRITE:
            return f"{self.outbox.size} bytes queued for stdout, stdout not watched"
        # Pipes wait while stdout is backed up, or while anything waits for
        # stdout (to splice after it): then the outbox must call them back.
        waiting = self.outbox.paused or (self.outbox.size and self.outbox._idle_wanted)
        if self.children.parked and not waiting:
            return "pipes parked while resin's stdout is not backed up"
        for child in self.children.all():
            for pipe in child.pipes:
                can = (not pipe.closed and not pipe.parked and not pipe.direct
                       and (pipe.credit is None or pipe.credit > 0))
                if can and not self.poller.interest(pipe.fd) & READ:
                    return f"pipe {pipe.fd} of {child.id} could be read but is not watched"
            if id(child) in self.children.held and not waiting and not any(
                    self.fds.pipes[p.fd].data and (p.credit == 0 or p.direct)
                    for p in child.pipes if not p.closed):
                return f"exit of {child.id} held with nothing holding it"
        return None
