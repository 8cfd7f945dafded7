"""Children: each one's output pipes (credit, parking), its stdin queue, and
the drain that reports its exit only once its pipes are empty.

Rules kept here (and checked by tests/test_runtime*.py):

- a pipe is watched exactly when it is open, not parked and has credit;
- a pipe that fires while resin's stdout is backed up is parked (unwatched)
  and unparked when the backlog clears;
- output goes by splice(2) where the pipe, resin's stdout and the session
  allow (`Session.splice_limit`): a frame's header is written, then its
  bytes move from the child's pipe to resin's stdout in the kernel. A spliced
  frame must not overtake queued bytes, so a pipe that fires while anything
  waits for stdout is parked until nothing does (`Outbox.want_idle`); the
  credit is charged when a frame is begun, as for a read;
- a splicing pipe whose output is small (under `Children.splice_min`) is
  read instead, until a read brings that much again or fills what it asked
  for; it is only ever read with no spliced frame of its own pending;
- an exited child's exit is reported after every byte its pipes held was
  handed to the session, or when the pipe holding data has no credit and
  resin is shutting down; a held child is drained again when credit comes or
  the backlog clears;
- every stdin write is answered exactly once, in order; at the exit, what is
  still queued is answered `BROKEN` before the exit is reported. A write
  with nothing queued before it is tried at once and, if the pipe takes it
  all, answered without being queued; a child's stdin is watched exactly
  when its queue is not empty.
"""

from __future__ import annotations

import os
import time

from resin_py.lite import TYPE_CHECKING, deque, suppress
from resin_py.protocol.common import StreamKind
from resin_py.protocol.session import StdinResult
from resin_py.runtime.loop import READ, WRITE
from resin_py.runtime.outbox import Spliced

if TYPE_CHECKING:
    from collections.abc import Callable
    from enum import Enum

    from resin_py.protocol.session import Session
    from resin_py.protocol.terms import Term
    from resin_py.runtime.fdio import Fds
    from resin_py.runtime.loop import Poller
    from resin_py.runtime.outbox import Outbox
else:
    from resin_py.protocol.common import LiteEnum as Enum

# Capacity asked for a child's output pipe (F_SETPIPE_SZ), and so the size
# of one read of it (split into frames by the v1 session): fewer syscalls
# for chatty children (measured, 1 GiB through v1: 64 KiB reads 1.6 GB/s,
# 128 KiB 1.95, 256 KiB 2.25, 1 MiB 2.5). Only for pipes that prove chatty
# (a read emptied a full default-size pipe), and only for a few at a time:
# bigger pipes use up the per-user pipe budget (fs.pipe-user-pages-soft,
# 64 MiB by default), after which the kernel gives every new pipe 2 pages;
# 1 MiB is also the default fs.pipe-max-size. 0 disables. Failures are ignored.
CHILD_PIPE_SIZE = 1024 * 1024
CHILD_PIPE_BOOST_LIMIT = 16  # open pipes enlarged at any time
# A new pipe's capacity (Linux default): a read this big empties it.
PIPE_DEFAULT_SIZE = 64 * 1024
# Reads of one pipe per wakeup while each one fills its whole buffer: fewer
# trips through epoll for a chatty child, without starving the others.
READS_PER_WAKEUP = 4
# Output smaller than this is read, not spliced: for a small output a splice
# costs three syscalls (FIONREAD, the header's write, the splice) against a
# read (its frame goes out in the loop turn's one writev with whatever else is
# queued), and the copy of a few KiB is cheap (measured, 100 B echo round
# trips: docs/performance.md, "resin's share").
SPLICE_MIN = 4096
# A direct pipe (read by the client itself) is never watched: nothing tells
# resin when the client has emptied it. An exit held for one is looked at
# again after this long, doubling up to DIRECT_RECHECK_MAX while nothing
# changes: the first checks come soon after an exit (the client is usually
# reading), and a client that pauses for long costs resin few wakeups.
DIRECT_RECHECK_MIN = 0.001
DIRECT_RECHECK_MAX = 0.064


class Read(Enum):
    """The outcome of one attempt to read a child's pipe."""

    FULL = "full"  # got as many bytes as asked: more may be waiting
    SOME = "some"  # got fewer bytes than asked
    EMPTY = "empty"  # nothing there now (EAGAIN)
    EOF = "eof"  # the writers are gone; the pipe is closed
    HELD = "held"  # not allowed to read now: no credit, or resin's stdout is backed up
    BUSY = "busy"  # bytes wait for resin's stdout: a spliced frame must wait for them


class StdinState(Enum):
    OPEN = "open"
    CLOSED = "closed"  # closed by request, or /dev/null
    BROKEN = "broken"  # the child closed its end (EPIPE), or exited


class OutPipe:
    """The read end of a child's stdout or stderr pipe."""

    __slots__ = ("boosted", "closed", "credit", "direct", "direct_after", "fd", "full_header",
                 "handler", "hung", "is_pipe", "kind", "known", "parked", "read_size", "small",
                 "splice", "taken")

    def __init__(self, fd: int, kind: StreamKind, credit: int | None,
                 is_pipe: bool | None = None, direct: bool = False) -> None:
        self.fd = fd
        self.kind = kind
        self.credit = credit  # bytes resin may still read; None: unlimited
        self.closed = False
        # The client reads this pipe itself (through its own descriptor of it,
        # docs/protocol.md §4.3.3): resin keeps fd open, never reads it, and
        # reports the exit once it is empty. Until a `relay` makes it an
        # ordinary pipe again.
        self.direct = direct
        # Becomes direct once resin has taken this many bytes from it (None:
        # never): a short output costs the client nothing more than frames.
        self.direct_after: int | None = None
        self.taken = 0  # bytes resin read or spliced from it
        self.parked = False  # unwatched while resin's output is backed up
        # A terminal whose last slave closed before its child was reaped:
        # unwatched, closed once the child is reaped (see Children._read).
        self.hung = False
        self.boosted = False  # enlarged to CHILD_PIPE_SIZE (tried once)
        self.read_size = PIPE_DEFAULT_SIZE  # the pipe's capacity, as far as resin knows
        self.splice: bool | None = None  # output by splice(2); None: not decided yet
        # Whether fd is a pipe, where its maker knows (None: asked of the fd
        # layer, one fstat, when splice is decided).
        self.is_pipe = is_pipe
        # A splicing pipe whose last output was under splice_min: read, not spliced.
        self.small = False
        # Bytes known to wait in the pipe: what FIONREAD said, less what resin
        # took since (only resin reads it, so they are still there). While a
        # frame's worth is known, the next batch needs no FIONREAD.
        self.known = 0
        # The header of a full spliced frame (always the same for this pipe).
        self.full_header = b""
        self.handler: Callable[[], None] = _nothing


class _Write:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0


class _Close:
    __slots__ = ("eof", "ref")

    def __init__(self, ref: Term, eof: bytes | None) -> None:
        self.ref = ref
        self.eof = eof  # written before closing (a terminal's EOF character)


class Child:
    """One spawned process (the leader of its own process group)."""

    __slots__ = (
        "cgroup", "cookie", "finished", "id", "pid", "pipes", "queue", "queued_bytes",
        "queued_writes", "reaped", "stdin_fd", "stdin_handler", "stdin_state", "tty",
        "wait_status",
    )

    def __init__(self, id: int, pid: int, stdin_fd: int, pipes: list[OutPipe],
                 cookie: bytes = b"") -> None:
        self.id = id
        self.pid = pid
        self.cookie = cookie  # RESIN_TREE value of its descendants (runtime/tree.py)
        self.cgroup: str | None = None  # its cgroup (runtime/cgroups.py), if any
        # On a pseudo-terminal: stdin_fd and the one pipe are two descriptors
        # of its master side.
        self.tty = False
        self.stdin_fd = stdin_fd  # -1: none (stdin is /dev/null)
        self.stdin_state = StdinState.OPEN if stdin_fd >= 0 else StdinState.CLOSED
        self.queue: deque[_Write | _Close] = deque()
        self.queued_writes = 0
        self.queued_bytes = 0
        self.stdin_handler: Callable[[], None] = _nothing
        self.pipes = pipes
        self.reaped = False
        self.finished = False  # its exit was reported
        self.wait_status = 0

    @property
    def exit_code(self) -> int | None:
        """Exit code, or None if a signal ended the child."""
        st = self.wait_status
        return None if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)

    @property
    def term_signal(self) -> int:
        return os.WTERMSIG(self.wait_status)

    def __repr__(self) -> str:
        pipes = ", ".join(
            f"{p.kind.name.lower()}(fd={p.fd}, credit={p.credit}, closed={p.closed}, "
            f"parked={p.parked})" for p in self.pipes)
        return (f"Child(id={self.id}, pid={self.pid}, reaped={self.reaped}, "
                f"stdin={self.stdin_state.value}, queued={self.queued_writes}, {pipes})")


class Children:
    """Every child from spawn until its exit is reported: by pid until it is
    reaped (its pid may then be reused by the next spawn), then, while its
    exit waits for its output to be read, in `held`."""

    def __init__(self, fds: Fds, poller: Poller, outbox: Outbox, session: Session) -> None:
        self._fds = fds
        self._poller = poller
        self.outbox = outbox
        self.session = session  # replaced when the protocol is decided
        self.by_pid: dict[int, Child] = {}
        # Reaped children whose exit waits for output to be read (credit,
        # backlog), by identity: their pids may belong to new children.
        self.held: dict[int, Child] = {}
        # Pipes found readable while resin's stdout was backed up.
        self.parked: list[tuple[Child, OutPipe]] = []
        self.closing = False  # shutting down: exits no longer wait for credit
        self.boosted = 0  # open pipes enlarged to CHILD_PIPE_SIZE
        self.stdin_bytes = 0  # queued for all children's stdin, not yet written
        self.splice_min = SPLICE_MIN  # tests splice smaller outputs
        # Held exits that wait for the client to empty a direct pipe, when to
        # look at them again (a time.monotonic() value), and how long the
        # next wait is (see DIRECT_RECHECK_MIN).
        self.direct_held: dict[int, Child] = {}
        self.direct_due = 0.0
        self.direct_delay = DIRECT_RECHECK_MIN
        self.clock: Callable[[], float] = time.monotonic  # tests set their own
        # Whether anything of the child's is still alive that may hold its
        # pipes: its cgroup is populated, or its process group has members
        # (resin sets it; the tests' default: nothing).
        self.members_alive: Callable[[Child], bool] = _no_members

    def __len__(self) -> int:
        return len(self.by_pid) + len(self.held)

    def all(self) -> list[Child]:
        """Every child whose exit is not reported yet."""
        return [*self.by_pid.values(), *self.held.values()]

    def add(self, child: Child) -> None:
        self.by_pid[child.pid] = child
        for pipe in child.pipes:
            pipe.handler = _bind(self._on_pipe, child, pipe)
            self._watch_pipe(pipe)
        child.stdin_handler = _bind1(self._pump_stdin, child)

    def get(self, pid: int) -> Child | None:
        return self.by_pid.get(pid)

    # --- output ------------------------------------------------------------------

    def _watch_pipe(self, pipe: OutPipe) -> None:
        want = (not pipe.closed and not pipe.parked and not pipe.hung and not pipe.direct
                and (pipe.credit is None or pipe.credit > 0))
        if not pipe.closed:
            self._poller.set_interest(pipe.fd, READ if want else 0, pipe.handler)

    def _on_pipe(self, child: Child, pipe: OutPipe) -> None:
        if pipe.closed or pipe.direct:  # (a wakeup polled before it went direct)
            return
        if self.outbox.paused and not self.closing:
            self._park(child, pipe)
            return
        if child.reaped:
            self.drain(child)
            return
        for _ in range(READS_PER_WAKEUP):
            got = self._take(child, pipe)
            if got is Read.BUSY:
                self._park(child, pipe)  # until resin's stdout is idle
                break
            if got is not Read.FULL:
                break
            if self.outbox.size >= self.outbox.low_water:
                self.outbox.flush()  # hand it on now rather than pile it up
                if self.outbox.paused:
                    break
        if pipe.direct_after is not None and not pipe.parked:
            self._direct_due(child, pipe)

    def _direct_due(self, child: Child, pipe: OutPipe) -> bool:
        """Hand the pipe over if resin took `direct_after` bytes of it (not
        parked, nothing spliced from it pending); whether it is direct now."""
        after = pipe.direct_after
        if after is not None and pipe.taken >= after and not pipe.closed:
            self._go_direct(child, pipe)
        return pipe.direct

    def _go_direct(self, child: Child, pipe: OutPipe) -> None:
        """Hand the pipe to the client (`direct_after` reached): what resin
        took from it goes out first, in frames, then the `direct` event."""
        self.outbox.release(pipe.fd)  # a frame pending from it: read and queued now
        pipe.direct = True
        pipe.direct_after = None
        pipe.known = 0
        self._watch_pipe(pipe)
        self.session.on_direct(child, ((pipe.kind, pipe.fd, self._fds.inode(pipe.fd)),))

    def _park(self, child: Child, pipe: OutPipe) -> None:
        pipe.parked = True
        self._watch_pipe(pipe)
        self.parked.append((child, pipe))

    def _take(self, child: Child, pipe: OutPipe) -> Read:
        """Hand on what the pipe holds: by splice where possible, else a read."""
        outbox = self.outbox
        if pipe.splice is None:  # decided once, at the pipe's first output
            pipe.splice = (outbox.splicing and self.session.splice_limit > 0
                           and (self._fds.is_pipe(pipe.fd) if pipe.is_pipe is None
                                else pipe.is_pipe))
        if pipe.splice and outbox.splicing:
            if pipe.small:  # never spliced while small: no frame of its own pending
                return self._read(child, pipe)
            if not outbox.size:
                return self._splice(child, pipe)
            if not self.closing and not self._empty(pipe):
                outbox.want_idle()
                return Read.BUSY
            # Shutting down, or nothing to splice: a read (behind what is
            # queued) tells the end of the pipe without waiting for stdout.
            outbox.release(pipe.fd)  # shutting down: no waiting, read it
        return self._read(child, pipe)

    def _empty(self, pipe: OutPipe) -> bool:
        try:
            return not self._fds.available(pipe.fd)
        except OSError:
            return True

    def _splice(self, child: Child, pipe: OutPipe) -> Read:
        """Frames of what the pipe holds (up to the read size and the credit),
        each spliced after its header; the bytes never enter resin."""
        size = min(self.session.read_limit, pipe.read_size)
        limit = size if pipe.credit is None else min(size, pipe.credit)
        if limit <= 0:
            return Read.HELD
        frame_max = self.session.splice_limit
        avail = pipe.known
        if avail < min(limit, frame_max) or avail < self.splice_min:
            try:
                avail = self._fds.available(pipe.fd)
            except OSError:
                avail = 0
        if not avail:  # at its end, or empty (or written to just now): a read tells
            return self._read(child, pipe)
        if avail < self.splice_min:  # little: a read is cheaper
            pipe.small = True
            return self._read(child, pipe)
        if (avail >= size and not pipe.boosted and CHILD_PIPE_SIZE
                and self.boosted < CHILD_PIPE_BOOST_LIMIT):
            self._boost(pipe)
        total = left = min(avail, limit)
        header = self.session.output_header
        full = pipe.full_header
        if not full:
            full = pipe.full_header = header(child, pipe.kind, frame_max)
        outbox = self.outbox
        while left:
            n = frame_max if left >= frame_max else left
            left -= n
            got = outbox.splice(pipe.fd, full if n == frame_max else header(child, pipe.kind, n), n)
            if got is not Spliced.ALL:
                if got is Spliced.READ:
                    pipe.splice = False
                break
        pipe.known = avail - (total - left) if pipe.splice else 0
        pipe.taken += total - left
        if pipe.credit is not None:
            pipe.credit -= total - left
            if pipe.credit == 0:
                self._watch_pipe(pipe)
        if left:  # stdout is full (or the source refused): the rest after it
            outbox.want_idle()
            return Read.BUSY
        return Read.FULL if total == limit else Read.SOME

    def _read(self, child: Child, pipe: OutPipe) -> Read:
        """One bounded read, handed to the session."""
        size = min(self.session.read_limit, pipe.read_size)
        limit = size if pipe.credit is None else min(size, pipe.credit)
        if limit <= 0 or (self.outbox.paused and not self.closing):
            return Read.HELD
        pipe.known = 0  # a read takes an unknown share of them
        try:
            data = self._fds.read(pipe.fd, limit)
        except BlockingIOError:
            return Read.EMPTY
        except OSError:
            data = b""
        if not data:
            if child.tty and not child.reaped:
                # Closing a terminal's master hangs it up: SIGHUP to a child
                # that closed its stdio and is still on its way out. Wait.
                pipe.hung = True
                self._watch_pipe(pipe)
                return Read.EOF
            self._close_pipe(pipe)
            return Read.EOF
        if pipe.credit is not None:
            pipe.credit -= len(data)
        pipe.taken += len(data)
        if pipe.small and (len(data) >= self.splice_min or len(data) == limit):
            pipe.small = False  # much output (or more waiting): spliced from the next wakeup
        if (len(data) == size and not pipe.boosted and CHILD_PIPE_SIZE
                and self.boosted < CHILD_PIPE_BOOST_LIMIT):
            self._boost(pipe)
        self.session.on_output(child, pipe.kind, data)
        if pipe.credit == 0:
            self._watch_pipe(pipe)
        return Read.FULL if len(data) == limit else Read.SOME

    def _boost(self, pipe: OutPipe) -> None:
        """Enlarge a pipe that just filled a whole read (see CHILD_PIPE_SIZE)."""
        pipe.boosted = True
        self.boosted += 1
        with suppress(OSError):
            pipe.read_size = self._fds.set_pipe_size(pipe.fd, CHILD_PIPE_SIZE)

    def _close_pipe(self, pipe: OutPipe) -> None:
        if pipe.closed:
            return
        self.outbox.release(pipe.fd)  # a frame pending from it is read first
        self._poller.set_interest(pipe.fd, 0, pipe.handler)
        pipe.closed = True
        self._fds.close(pipe.fd)
        if pipe.boosted:
            self.boosted -= 1

    def grant_credit(self, child: Child, kind: StreamKind, amount: int) -> None:
        for pipe in child.pipes:
            if pipe.kind == kind and pipe.credit is not None and not pipe.closed:
                # A direct pipe's credit waits, unused, for a `relay`.
                pipe.credit += amount
                self._watch_pipe(pipe)
                if child.reaped:
                    self.drain(child)

    def on_pause_change(self, paused: bool) -> None:
        """resin's stdout backlog crossed a watermark. Pausing is lazy (pipes are
        parked when they fire); resuming unparks them and drains held exits."""
        if not paused:
            self.on_idle()

    def on_idle(self) -> None:
        """Nothing waits for resin's stdout (after `Outbox.want_idle`), or the
        backlog cleared: unpark the pipes and drain the held exits."""
        parked, self.parked = self.parked, []
        for child, pipe in parked:
            pipe.parked = False
            if pipe.direct or (pipe.direct_after is not None and not child.reaped
                               and self._direct_due(child, pipe)):
                continue  # the client's to read
            if pipe.splice and not pipe.closed and not child.reaped and not self.outbox.paused:
                # Splice now rather than watch the pipe and wait for it to fire
                # (it was readable when parked): a full stdout pipe wakes resin
                # each time the reader frees a little room, and this saves two
                # epoll_ctl and an epoll_wait per wakeup. Still waiting: parked again.
                got = self._take(child, pipe)
                if got is Read.BUSY or (self.outbox.size and got is not Read.EOF):
                    self.outbox.want_idle()
                    self._park(child, pipe)
                    continue
            self._watch_pipe(pipe)
        for child in list(self.held.values()):
            self.drain(child)

    # --- stdin -------------------------------------------------------------------

    def write_stdin(self, child: Child, data: bytes) -> None:
        """Write `data` to the child's stdin after what is queued; the
        session hears what became of it once, in order (`on_stdin_result`)."""
        written = 0
        if not child.queue and child.stdin_state is StdinState.OPEN:
            # Nothing queued before it: write at once, and answer without
            # queueing when the pipe took it all (the common case: a child
            # reading what it gets, as in an echo). The pipe's interest stays
            # 0, as it is whenever the queue is empty.
            try:
                written = self._fds.write(child.stdin_fd, data) if data else 0
            except BlockingIOError:
                pass  # the pipe is full: queued, written when it is writable
            except OSError:  # EPIPE: the child closed its stdin (or exited)
                self._close_stdin_fd(child, StdinState.BROKEN)
                self.session.on_stdin_result(child, StdinResult.BROKEN)
                return
            if written == len(data):
                self.session.on_stdin_result(child, StdinResult.WRITTEN)
                return
        item = _Write(data)
        item.pos = written
        left = len(data) - written
        child.queue.append(item)
        child.queued_writes += 1
        child.queued_bytes += left
        self.stdin_bytes += left
        self._pump_stdin(child)

    def close_stdin(self, child: Child, ref: Term, eof: bytes | None = None) -> None:
        """Close the child's stdin after what is queued; `eof` (a terminal's
        EOF character) is written first, if the child can still read it."""
        child.queue.append(_Close(ref, eof))
        self._pump_stdin(child)

    def tty_fd(self, child: Child) -> int:
        """A descriptor of a pty child's terminal (master side), -1 once both
        are closed."""
        for pipe in child.pipes:
            if not pipe.closed:
                return pipe.fd
        return child.stdin_fd if child.stdin_state is StdinState.OPEN else -1

    def _answer(self, child: Child, item: _Write, result: StdinResult) -> None:
        child.queue.popleft()
        child.queued_writes -= 1
        left = len(item.data) - item.pos
        child.queued_bytes -= left
        self.stdin_bytes -= left
        self.session.on_stdin_result(child, result)

    def _pump_stdin(self, child: Child) -> None:
        queue = child.queue
        while queue:
            item = queue[0]
            if isinstance(item, _Close):
                if item.eof and child.stdin_state is StdinState.OPEN:
                    try:
                        self._fds.write(child.stdin_fd, item.eof)
                    except BlockingIOError:
                        break  # the terminal's input is full: again when writable
                    except OSError:
                        pass  # the terminal is gone: nothing to end
                    item.eof = None
                queue.popleft()
                self._close_stdin_fd(child, StdinState.CLOSED)
                self.session.on_close_stdin_done(child, item.ref)
                continue
            if child.stdin_state is not StdinState.OPEN:
                self._answer(child, item, StdinResult.CLOSED
                             if child.stdin_state is StdinState.CLOSED else StdinResult.BROKEN)
                continue
            if item.pos < len(item.data):
                try:
                    n = self._fds.write(child.stdin_fd, item.data[item.pos:])
                except BlockingIOError:
                    break
                except OSError:  # EPIPE: the child closed its stdin (or exited)
                    self._close_stdin_fd(child, StdinState.BROKEN)
                    continue
                item.pos += n
                child.queued_bytes -= n
                self.stdin_bytes -= n
                if item.pos < len(item.data):
                    continue
            self._answer(child, item, StdinResult.WRITTEN)
        if child.stdin_state is StdinState.OPEN:
            self._poller.set_interest(child.stdin_fd, WRITE if queue else 0,
                                      child.stdin_handler)

    def _close_stdin_fd(self, child: Child, state: StdinState) -> None:
        if child.stdin_state is StdinState.OPEN:
            self._poller.set_interest(child.stdin_fd, 0, child.stdin_handler)
            self._fds.close(child.stdin_fd)
            child.stdin_state = state

    # --- exits -------------------------------------------------------------------

    def exited(self, child: Child, wait_status: int) -> None:
        """The child was reaped: drain its pipes, then report its exit."""
        child.wait_status = wait_status
        child.reaped = True
        if self.by_pid.get(child.pid) is child:
            del self.by_pid[child.pid]
        self.drain(child)
        if id(child) in self.direct_held:  # a fresh wait: look again soon
            self.direct_delay = DIRECT_RECHECK_MIN
            self.direct_due = self.clock() + DIRECT_RECHECK_MIN

    def drain(self, child: Child) -> None:
        """Read what is left in an exited child's pipes; report the exit once
        they are empty (or hold it until credit comes or the backlog clears)."""
        if child.finished:
            return
        waiting = False  # for the client to empty a direct pipe
        for pipe in child.pipes:
            if pipe.direct:
                # The client's to read: the exit waits until it has read all
                # (see _direct_done). resin's descriptor stays open until the
                # exit is reported, so the client can still open its own.
                waiting |= not pipe.closed and not self._direct_done(child, pipe)
                continue
            while not pipe.closed:
                got = self._take(child, pipe)
                if got is Read.EMPTY:
                    self._close_pipe(pipe)  # the leader's output is all read
                elif got is Read.HELD or got is Read.BUSY:
                    if self.closing or self._empty(pipe):
                        # Shutting down (no credit, no wait), or nothing is left
                        # to read: a stream without credit must not hold the exit.
                        self._close_pipe(pipe)
                    else:
                        break
        if not waiting and all(p.closed or p.direct for p in child.pipes):
            for pipe in child.pipes:
                self._close_pipe(pipe)  # the direct ones: now, not before
            self._finish(child)
            return
        self.held[id(child)] = child
        if waiting:
            self.direct_held[id(child)] = child

    def _direct_done(self, child: Child, pipe: OutPipe) -> bool:
        """Whether a direct pipe no longer holds its reaped child's exit: it is
        empty and nothing can write to it any more: it is hung up (no writer
        left), or nothing is left of the child that could write (a killed
        writer may still be inside one write(2), between two pages). An
        escapee resin cannot attribute (no cgroup, left the group, cleared its
        environment) does not hold it (docs/protocol.md §5)."""
        if self.closing:
            return True
        if not self._empty(pipe):
            return False
        return self._fds.hung_up(pipe.fd) or not self.members_alive(child)
    def relay(self, child: Child) -> None:
        """The client no longer reads the child's direct pipes (`relay`): they
        are read and framed as any captured stream, under their credit."""
        for pipe in child.pipes:
            pipe.direct_after = None  # a hand-over not made yet is off too
            if pipe.direct:
                pipe.direct = False
                self._watch_pipe(pipe)
        if child.reaped:
            self.direct_held.pop(id(child), None)
            self.drain(child)

    def recheck_direct(self, now: float) -> None:
        """Look again at the exits held for direct pipes, if `direct_due`
        (the loop calls this before every wait while there are any, and
        wakes up by `direct_due`): report those the client has emptied; wait
        longer the next time if none was."""
        if now < self.direct_due:
            return
        before = len(self.direct_held)
        for child in list(self.direct_held.values()):
            self.direct_held.pop(id(child))
            self.drain(child)
        if self.direct_held and len(self.direct_held) == before:
            self.direct_delay = min(self.direct_delay * 2, DIRECT_RECHECK_MAX)
        else:
            self.direct_delay = DIRECT_RECHECK_MIN
        self.direct_due = now + self.direct_delay

    def _finish(self, child: Child) -> None:
        child.finished = True
        self.held.pop(id(child), None)
        self.direct_held.pop(id(child), None)
        if self.by_pid.get(child.pid) is child:
            del self.by_pid[child.pid]
        self._close_stdin_fd(child, StdinState.BROKEN)
        self._pump_stdin(child)  # answers what is still queued
        self.session.on_exit(child)

    def shutdown(self) -> None:
        """Shutting down: exits stop waiting for credit; drain the held ones."""
        self.closing = True
        for child in list(self.held.values()):
            self.drain(child)

    def describe(self) -> str:
        """The state of every child, for diagnostics (SIGUSR1)."""
        lines = [f"children={len(self.by_pid)} held={len(self.held)} parked={len(self.parked)} "
                 f"boosted={self.boosted} stdin_bytes={self.stdin_bytes} closing={self.closing}"]
        lines += [f"  {child!r}" for child in self.all()]
        return "\n".join(lines)


def _nothing() -> None:
    pass


def _no_members(_child: Child) -> bool:
    return False


def _bind(fn: Callable[[Child, OutPipe], None], child: Child, pipe: OutPipe
          ) -> Callable[[], None]:
    return lambda: fn(child, pipe)


def _bind1(fn: Callable[[Child], None], child: Child) -> Callable[[], None]:
    return lambda: fn(child)
