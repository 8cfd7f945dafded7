"""resin's event loop: one thread, one selector, non-blocking descriptors.

The loop owns every descriptor: resin's stdin/stdout, each child's pipes,
and the SIGCHLD wakeup socket (child exits come from SIGCHLD and waitid: a
pidfd per child would cost a descriptor and bring no information, since
every child sends SIGCHLD anyway). A session (v0 or v1, chosen by the first
packet) turns packets into calls on the loop and the loop's callbacks into
packets. Pipe handling follows asyncio's rules: bounded non-blocking reads,
buffered writes with high/low watermarks, and a child's exit is reported only
once its pipes are drained.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import selectors
import signal
import socket
import sys
import termios
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.protocol.errors import ProtocolError, ZeroLengthPacket
from resin_py.protocol.framing import PacketReader
from resin_py.spawn import (
    PR_SET_CHILD_SUBREAPER,
    ChildSetup,
    make_spawner,
    prctl,
    resolve_executable,
)

# Above this many bytes waiting for resin's stdout, stop reading children's
# pipes: the children block instead of resin's memory growing.
OUT_HIGH_WATER = 1024 * 1024
# ... and resume once the backlog is below this.
OUT_LOW_WATER = 256 * 1024
# One read of resin's stdin: several full packets per system call.
STDIN_READ_SIZE = 256 * 1024
# writev takes at most this many buffers per call.
IOV_MAX = 1024
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
# Capacity asked for resin's own stdout pipe: bigger batches per wakeup of
# the reader (the BEAM) when output is heavy.
RESIN_STDOUT_PIPE_SIZE = 1024 * 1024
# Time from stdin EOF to exit: kill and drain the children, kill the
# remaining descendants, flush. The whole shutdown must fit in 1 second.
SHUTDOWN_CHILDREN = 0.5
SHUTDOWN_DESCENDANTS = 0.8
SHUTDOWN_FLUSH = 0.95

F_SETPIPE_SZ = 1031

if TYPE_CHECKING:
    from resin_py.protocol.terms import Term

# State of a child's stdin.
STDIN_OPEN = 0
STDIN_CLOSED = 1  # closed by request, or /dev/null
STDIN_BROKEN = 2  # the child closed its end (EPIPE)


def log(msg: str) -> None:
    """Diagnostics go to stderr: stdout carries the protocol."""
    with contextlib.suppress(OSError):
        sys.stderr.write(f"resin[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()


class Session(Protocol):
    """What the loop needs from a protocol session."""

    read_limit: int  # largest single read of a child's pipe (on_output splits it into frames)

    def on_packet(self, payload: bytes) -> None: ...
    def on_framing_error(self, exc: ProtocolError) -> None: ...
    def on_internal_error(self, exc: Exception) -> None: ...
    def on_output(self, child: Child, kind: StreamKind, data: bytes) -> None: ...
    def on_stdin_result(self, child: Child, status: int) -> None: ...
    def on_close_stdin_done(self, child: Child, ref: Term) -> None: ...
    def on_exit(self, child: Child) -> None: ...


class OutPipe:
    """The read end of a child's stdout or stderr pipe."""

    __slots__ = ("boosted", "closed", "credit", "fd", "kind", "parked", "read_size", "registered")

    def __init__(self, fd: int, kind: StreamKind, credit: int | None) -> None:
        self.fd = fd
        self.kind = kind
        self.credit = credit  # bytes resin may still read; None: unlimited
        self.registered = False
        self.closed = False
        self.parked = False  # taken out of the poller while resin's output is backed up
        self.boosted = False  # enlarged to CHILD_PIPE_SIZE
        self.read_size = PIPE_DEFAULT_SIZE  # the pipe's capacity, as far as resin knows


class _Write:
    __slots__ = ("data", "notify", "pos")

    def __init__(self, data: bytes, notify: bool) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.notify = notify  # the session wants a result for this write (v1 ack)


class _Close:
    __slots__ = ("ref",)

    def __init__(self, ref: Term) -> None:
        self.ref = ref


class Child:
    """One spawned process (the leader of its own process group)."""

    __slots__ = (
        "id", "pid", "pipes", "queue", "reaped", "stdin_fd", "stdin_registered",
        "stdin_state", "wait_status",
    )

    def __init__(self, id: int, pid: int, stdin_fd: int, pipes: list[OutPipe]) -> None:
        self.id = id
        self.pid = pid
        self.stdin_fd = stdin_fd
        self.stdin_state = STDIN_OPEN if stdin_fd >= 0 else STDIN_CLOSED
        self.stdin_registered = False
        self.queue: deque[_Write | _Close] = deque()
        self.pipes = pipes
        self.reaped = False
        self.wait_status = 0

    @property
    def exit_code(self) -> int | None:
        """Exit code, or None if a signal ended the child."""
        st = self.wait_status
        return None if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)

    @property
    def term_signal(self) -> int:
        return os.WTERMSIG(self.wait_status)


Handler = Callable[[], None]
_A = TypeVar("_A")

READ = select.EPOLLIN
WRITE = select.EPOLLOUT


class Poller:
    """epoll with a handler per descriptor (lighter than `selectors`: no key
    objects, one dict operation per registration)."""

    __slots__ = ("_ep", "handlers")

    def __init__(self) -> None:
        self._ep = select.epoll()
        self.handlers: dict[int, Handler] = {}

    def register(self, fd: int, events: int, handler: Handler) -> None:
        """Raises PermissionError for a descriptor epoll cannot watch (a regular file)."""
        self._ep.register(fd, events)
        self.handlers[fd] = handler

    def unregister(self, fd: int) -> None:
        self._ep.unregister(fd)
        del self.handlers[fd]

    def poll(self, timeout: float | None) -> list[Handler]:
        """The handlers of the ready descriptors, looked up before any of them
        runs (a handler may close and reuse a descriptor number)."""
        handlers = self.handlers
        return [handlers[fd] for fd, _ in self._ep.poll(-1 if timeout is None else timeout)
                if fd in handlers]


class Resin:
    """The port program: read packets on fd 0, write packets on fd 1."""

    def __init__(self, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.sel = Poller()
        self.reader = PacketReader()
        self.session: Session | None = None
        self.children: dict[int, Child] = {}  # by pid, until finished
        self.out: deque[bytes | memoryview] = deque()
        self.out_size = 0
        self.boosted = 0  # open child pipes enlarged to CHILD_PIPE_SIZE
        self.read_full = False  # the last read of a child's pipe filled its buffer
        self.in_buf = bytearray(STDIN_READ_SIZE)  # reused: no allocation per read
        self.in_view = memoryview(self.in_buf)
        self.out_registered = False
        self.out_blocking = False  # stdout cannot be polled (a regular file)
        self.paused = False  # resin's output is above OUT_HIGH_WATER: read no pipe
        # Pipes found readable while paused, unregistered until the backlog is
        # below OUT_LOW_WATER (pausing touches only the pipes that fire).
        self.parked: list[tuple[Child, OutPipe]] = []
        # Exited children whose exit waits for output to be read (credit, pause).
        self.held: dict[int, Child] = {}
        self.closing = False
        self.shutdown_at = 0.0
        self.stdin_pollable = True
        self._saved_flags: list[tuple[int, int]] = []
        self._setup()

    # --- setup -----------------------------------------------------------------

    def _setup(self) -> None:
        nofile = raise_nofile_limit()
        try:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError as exc:
            log(f"PR_SET_CHILD_SUBREAPER failed: {exc}")
        # A ^C in the terminal running the BEAM must not kill resin.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        # Python handlers are needed for the wakeup fd to see the signals;
        # the work happens in the loop.
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.signal(signal.SIGTERM, _ignore_signal)
        signal.siginterrupt(signal.SIGCHLD, False)
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.spawner = make_spawner(nofile)
        self.sel.register(self._wake_r.fileno(), READ, self._on_wakeup)
        if RESIN_STDOUT_PIPE_SIZE:
            with contextlib.suppress(OSError):  # not a pipe, or above pipe-max-size
                fcntl.fcntl(self.stdout_fd, F_SETPIPE_SZ, RESIN_STDOUT_PIPE_SIZE)
        for fd in (self.stdin_fd, self.stdout_fd):
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            self._saved_flags.append((fd, flags))
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            self.sel.register(self.stdin_fd, READ, self._on_stdin)
        except PermissionError:  # a regular file: always readable
            self.stdin_pollable = False
        try:
            self.sel.register(self.stdout_fd, WRITE, self._on_stdout)
            self.sel.unregister(self.stdout_fd)
        except PermissionError:
            self.out_blocking = True
            fcntl.fcntl(self.stdout_fd, fcntl.F_SETFL, self._saved_flags[1][1])

    def _restore(self) -> None:
        for fd, flags in self._saved_flags:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    # --- main loop ---------------------------------------------------------------

    def run(self) -> int:
        try:
            while True:
                self._flush()
                if self.closing and (not self.children or time.monotonic() >= self._deadline(
                        SHUTDOWN_CHILDREN)):
                    break
                timeout: float | None = None
                if self.closing:
                    timeout = max(0.0, self._deadline(SHUTDOWN_CHILDREN) - time.monotonic())
                elif not self.stdin_pollable:
                    timeout = 0.0
                    self._on_stdin()
                for handler in self.sel.poll(timeout):
                    handler()
            self._kill_descendants()
            self._final_flush()
        finally:
            self._restore()
        return 0

    def _deadline(self, budget: float) -> float:
        return self.shutdown_at + budget

    def _dispatch(self, call: Callable[[_A], None], arg: _A) -> None:
        """Run one packet's handling; a bug in it must not take resin down."""
        try:
            call(arg)
        except Exception as exc:
            import traceback

            log("internal error:\n" + traceback.format_exc())
            if self.session is not None:
                self.session.on_internal_error(exc)

    # --- resin's stdin -------------------------------------------------------------

    def _on_stdin(self) -> None:
        try:
            n = os.readv(self.stdin_fd, [self.in_buf])
        except BlockingIOError:
            return
        except OSError as exc:
            log(f"reading stdin: {exc}")
            n = 0
        if not n:
            self.begin_shutdown()
            return
        self.reader.feed(self.in_view[:n])
        while not self.closing:
            try:
                payload = self.reader.next_packet()
            except ZeroLengthPacket as exc:
                self._dispatch(self._framing_error, exc)
                continue
            if payload is None:
                break
            self._dispatch(self._on_packet, payload)

    def _framing_error(self, exc: ProtocolError) -> None:
        if self.session is None:
            from resin_py.v0_session import V0Session

            V0Session.report_undecided(self, exc)
        else:
            self.session.on_framing_error(exc)

    def _on_packet(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.on_packet(payload)
            return
        if len(payload) == 2 and payload[0] == 0:  # the v1 handshake (00 vv)
            from resin_py.v1_session import V1Session

            session = V1Session(self)
            self.session = session
            session.hello(payload[1])
            return
        from resin_py.v0_session import V0Session

        if payload[0] == 0:
            # Starts like a handshake but is not one: the mode stays undecided.
            V0Session.report_undecided(self, ProtocolError("malformed handshake"))
            return
        self.session = V0Session(self)
        self.session.on_packet(payload)

    # --- resin's stdout ----------------------------------------------------------

    def push(self, *parts: bytes | memoryview) -> None:
        """Queue bytes for resin's stdout; flushed once per loop iteration."""
        for p in parts:
            if p:
                self.out.append(p)
                self.out_size += len(p)
        if self.out_size > OUT_HIGH_WATER:
            self.paused = True

    def _flush(self) -> None:
        out = self.out
        while out:
            try:
                n = os.writev(self.stdout_fd, list(islice(out, IOV_MAX)))
            except BlockingIOError:
                break
            except OSError as exc:
                # The client is gone (EPIPE): nobody to serve, shut down.
                if exc.errno != errno.EPIPE:
                    log(f"writing stdout: {exc}")
                out.clear()
                self.out_size = 0
                self.begin_shutdown()
                break
            self.out_size -= n
            while n:
                first = out[0]
                if len(first) <= n:
                    n -= len(first)
                    out.popleft()
                else:
                    out[0] = memoryview(first)[n:]
                    n = 0
        want = bool(out) and not self.out_blocking
        if want != self.out_registered:
            if want:
                self.sel.register(self.stdout_fd, WRITE, self._on_stdout)
            else:
                self.sel.unregister(self.stdout_fd)
            self.out_registered = want
        if self.paused and self.out_size < OUT_LOW_WATER:
            self.paused = False
            parked, self.parked = self.parked, []
            for child, pipe in parked:
                pipe.parked = False
                self._update_pipe(child, pipe)
            for child in list(self.held.values()):
                self._drain(child)

    def _on_stdout(self) -> None:
        self._flush()

    def _final_flush(self) -> None:
        deadline = self._deadline(SHUTDOWN_FLUSH)
        while self.out and time.monotonic() < deadline:
            self._flush()
            if self.out and not self.out_blocking:
                with selectors.DefaultSelector() as sel:
                    sel.register(self.stdout_fd, selectors.EVENT_WRITE)
                    sel.select(max(0.0, deadline - time.monotonic()))

    # --- spawning ----------------------------------------------------------------

    def spawn_child(self, id: int, exe: bytes, args: tuple[bytes, ...], opts: SpawnOptions
                    ) -> Child:
        """Start a child; raise SpawnFailed with the reason if nothing runs."""
        env: dict[bytes, bytes] | None = None  # None: resin's environment, not copied
        search = None
        if opts.clear_env or opts.env:
            env = {} if opts.clear_env else dict(os.environb)
            for name, value in opts.env:
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value
            search = env.get(b"PATH")  # the child's PATH, else resin's
        path = resolve_executable(exe, search)
        argv = [opts.arg0 if opts.arg0 is not None else exe, *args]
        parent_fds: list[int] = []
        child_fds: list[int] = []
        try:
            if opts.stdin == "pipe":
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                parent_fds.append(in_w)
                child_fds.append(in_r)
                os.set_blocking(in_w, False)
            else:
                in_r, in_w = self.devnull, -1
            out_r, out_w = self._out_pipe(parent_fds, child_fds)
            pipes = [OutPipe(out_r, StreamKind.STDOUT, opts.credit)]
            if opts.stderr == "capture":
                err_r, err_w = self._out_pipe(parent_fds, child_fds)
                pipes.append(OutPipe(err_r, StreamKind.STDERR, opts.credit))
            elif opts.stderr == "stdout":
                err_w = out_w
            else:
                err_w = self.devnull
            pid = self.spawner.spawn(ChildSetup(path, argv, env, opts.cd, in_r, out_w, err_w))
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        # Its exit comes as SIGCHLD (to _reap), also if that happened already.
        child = Child(id, pid, in_w, pipes)
        self.children[pid] = child
        for pipe in pipes:
            self._update_pipe(child, pipe)
        return child

    def _out_pipe(self, parent_fds: list[int], child_fds: list[int]) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        parent_fds.append(r)
        child_fds.append(w)
        os.set_blocking(r, False)
        return r, w

    def _boost(self, pipe: OutPipe) -> None:
        """Enlarge a pipe that just filled a whole read (see CHILD_PIPE_SIZE)."""
        pipe.boosted = True  # tried once, whatever the outcome
        self.boosted += 1
        with contextlib.suppress(OSError):
            pipe.read_size = fcntl.fcntl(pipe.fd, F_SETPIPE_SZ, CHILD_PIPE_SIZE)

    # --- child output ----------------------------------------------------------------

    def _update_pipe(self, child: Child, pipe: OutPipe) -> None:
        want = (not pipe.closed and not pipe.parked
                and (pipe.credit is None or pipe.credit > 0))
        if want != pipe.registered:
            if want:
                self.sel.register(pipe.fd, READ,
                                  lambda: self._on_pipe(child, pipe))
            else:
                self.sel.unregister(pipe.fd)
            pipe.registered = want

    def _on_pipe(self, child: Child, pipe: OutPipe) -> None:
        if pipe.closed:
            return
        if self.paused and not self.closing:
            pipe.parked = True
            self._update_pipe(child, pipe)
            self.parked.append((child, pipe))
            return
        if child.reaped:
            self._drain(child)
            return
        for _ in range(READS_PER_WAKEUP):
            if self._read_pipe(child, pipe) is not True or not self.read_full:
                break
            if self.out_size >= OUT_LOW_WATER:
                self._flush()  # hand it on now rather than pile it up
                if self.paused:
                    break

    def _read_pipe(self, child: Child, pipe: OutPipe) -> bool | None:
        """One bounded read. True: got data (and `read_full` says whether it
        filled the buffer: more may be waiting); False: EOF or nothing (EAGAIN)
        left; None: not allowed to read now (no credit, or resin's output is
        backed up)."""
        assert self.session is not None
        size = min(self.session.read_limit, pipe.read_size)
        limit = size if pipe.credit is None else min(size, pipe.credit)
        if limit <= 0 or (self.paused and not self.closing):
            return None
        try:
            data = os.read(pipe.fd, limit)
        except BlockingIOError:
            return False
        except OSError as exc:
            log(f"reading child {child.pid}: {exc}")
            data = b""
        if not data:
            self._close_pipe(pipe)
            return False
        if pipe.credit is not None:
            pipe.credit -= len(data)
        self.read_full = len(data) == limit
        if (len(data) == size and not pipe.boosted and CHILD_PIPE_SIZE
                and self.boosted < CHILD_PIPE_BOOST_LIMIT):
            self._boost(pipe)
        self.session.on_output(child, pipe.kind, data)
        if pipe.credit == 0:
            self._update_pipe(child, pipe)
        return True

    def _close_pipe(self, pipe: OutPipe) -> None:
        if pipe.registered:
            self.sel.unregister(pipe.fd)
            pipe.registered = False
        if not pipe.closed:
            pipe.closed = True
            os.close(pipe.fd)
            if pipe.boosted:
                self.boosted -= 1

    def grant_credit(self, child: Child, kind: StreamKind, amount: int) -> None:
        for pipe in child.pipes:
            if pipe.kind == kind and pipe.credit is not None and not pipe.closed:
                pipe.credit += amount
                self._update_pipe(child, pipe)
                if child.reaped:
                    self._drain(child)

    # --- child stdin -------------------------------------------------------------

    def write_stdin(self, child: Child, data: bytes, notify: bool) -> None:
        child.queue.append(_Write(data, notify))
        self._pump_stdin(child)

    def close_stdin(self, child: Child, ref: Term) -> None:
        child.queue.append(_Close(ref))
        self._pump_stdin(child)

    def _pump_stdin(self, child: Child) -> None:
        assert self.session is not None
        queue = child.queue
        while queue:
            item = queue[0]
            if isinstance(item, _Close):
                queue.popleft()
                self._close_stdin_fd(child, STDIN_CLOSED)
                self.session.on_close_stdin_done(child, item.ref)
                continue
            if child.stdin_state != STDIN_OPEN:
                queue.popleft()
                if item.notify:
                    self.session.on_stdin_result(
                        child, 2 if child.stdin_state == STDIN_CLOSED else 1)
                continue
            remaining = item.data[item.pos:]
            if remaining:
                try:
                    item.pos += os.write(child.stdin_fd, remaining)
                except BlockingIOError:
                    break
                except OSError:  # EPIPE: the child closed its stdin (or exited)
                    self._close_stdin_fd(child, STDIN_BROKEN)
                    continue
                if item.pos < len(item.data):
                    continue
            queue.popleft()
            if item.notify:
                self.session.on_stdin_result(child, 0)
        want = bool(queue) and child.stdin_state == STDIN_OPEN
        if want != child.stdin_registered:
            if want:
                self.sel.register(child.stdin_fd, WRITE,
                                  lambda: self._pump_stdin(child))
            else:
                self.sel.unregister(child.stdin_fd)
            child.stdin_registered = want

    def _close_stdin_fd(self, child: Child, state: int) -> None:
        if child.stdin_registered:
            self.sel.unregister(child.stdin_fd)
            child.stdin_registered = False
        if child.stdin_state == STDIN_OPEN:
            os.close(child.stdin_fd)
            child.stdin_state = state

    # --- signals and exits -----------------------------------------------------------

    def signal_child(self, child: Child, signo: int, group: bool) -> None:
        """Send a signal; raise OSError (ESRCH once the child is reaped, EINVAL...)."""
        if child.reaped:  # the pid may already belong to someone else
            raise OSError(errno.ESRCH, "process has exited")
        try:
            if group:
                os.killpg(child.pid, signo)
            else:
                os.kill(child.pid, signo)
        except (OverflowError, ValueError) as exc:
            raise OSError(errno.EINVAL, "invalid signal") from exc

    def _child_exited(self, child: Child) -> None:
        """The group leader exited: kill its group, reap it, drain its pipes."""
        if child.reaped:
            return
        # Kill the rest of the group before reaping: the zombie leader keeps
        # the pgid from being reused, so this cannot hit a stranger.
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(child.pid, 0)
        except ChildProcessError:
            status = 0
        child.wait_status = status
        child.reaped = True
        self._drain(child)

    def _drain(self, child: Child) -> None:
        """Read what is left in an exited child's pipes; report the exit once empty."""
        if child.pid not in self.children:
            return
        for pipe in child.pipes:
            while not pipe.closed:
                got = self._read_pipe(child, pipe)
                if got is False:
                    self._close_pipe(pipe)  # EAGAIN: the leader's output is all read
                elif got is None:
                    if self.closing or _pipe_empty(pipe.fd):
                        # Shutting down (no credit, no wait), or nothing is left
                        # to read: a stream without credit must not hold the exit.
                        self._close_pipe(pipe)
                    else:
                        break
        if all(p.closed for p in child.pipes):
            self._finish(child)
        else:
            self.held[child.pid] = child  # until credit comes or the backlog clears

    def _finish(self, child: Child) -> None:
        assert self.session is not None
        del self.children[child.pid]
        self.held.pop(child.pid, None)
        self._close_stdin_fd(child, STDIN_BROKEN)
        self._pump_stdin(child)  # answers what is still queued
        self.session.on_exit(child)

    def _on_wakeup(self) -> None:
        signals = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := self._wake_r.recv(4096):
                signals += chunk
        if signal.SIGTERM in signals:
            self.begin_shutdown()
        self._reap()

    def _reap(self) -> None:
        """Handle every exited child: ours as exits, orphans just reaped.

        Cost: waitid(P_ALL) walks resin's list of children up to the first
        one that has exited, and the last call (nothing left) walks all of
        it: O(children) per SIGCHLD wakeup, ~0.5 ms with 10,000 children
        here. Many exits at once share one wakeup. (pidfds would not avoid
        it: SIGCHLD also tells of orphans, which only a scan finds.)
        """
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            child = self.children.get(info.si_pid)
            if child is not None and not child.reaped:
                self._child_exited(child)
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(info.si_pid, 0)

    # --- shutdown ----------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """stdin EOF (or SIGTERM): kill every child's group, then drain and exit."""
        if self.closing:
            return
        self.closing = True
        self.shutdown_at = time.monotonic()
        if self.stdin_pollable:
            self.sel.unregister(self.stdin_fd)
        for child in list(self.children.values()):
            if not child.reaped:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
            else:
                self._drain(child)

    def _kill_descendants(self) -> None:
        """SIGKILL what is left (grandchildren that escaped their group come to us
        as the subreaper), reap, repeat until none remain or time is up."""
        deadline = self._deadline(SHUTDOWN_DESCENDANTS)
        for child in self.children.values():
            if not child.reaped:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
        while True:
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            kids = child_pids()
            if not kids or time.monotonic() >= deadline:
                return
            for pid in kids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            # Woken by SIGCHLD through the wakeup socket; no lost wakeups since
            # the byte stays in the socket until read.
            with selectors.DefaultSelector() as sel:
                sel.register(self._wake_r, selectors.EVENT_READ)
                sel.select(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(BlockingIOError):
                while self._wake_r.recv(4096):
                    pass


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE as far as allowed; return the original (soft, hard),
    which children get back.

    A child costs resin up to 3 descriptors (its pipes; 2 with `stdin:
    null`): 10,000 children need more than common hard limits. With
    CAP_SYS_RESOURCE the hard limit goes up to fs.nr_open; otherwise the soft
    limit goes up to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = int(f.read())
    except (OSError, ValueError):
        ceiling = 1 << 20  # the kernel's default nr_open
    raise_hard = hard != resource.RLIM_INFINITY and ceiling > hard
    for limit in [ceiling, hard] if raise_hard else [hard]:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
        except (ValueError, OSError):
            continue
    return soft, hard


def _pipe_empty(fd: int) -> bool:
    """No bytes wait in the pipe (FIONREAD), without reading any."""
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return True
    return int.from_bytes(buf, sys.byteorder) == 0


def _ignore_signal(_signo: int, _frame: Any) -> None:
    """The wakeup fd carries the signal to the loop; nothing to do here."""


def child_pids() -> list[int]:
    """pids whose parent is this process."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:  # kernel without CONFIG_PROC_CHILDREN
        pass
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == me:
                found.append(int(name))
    return found


def main() -> int:
    """Serve until stdin closes, then leave at once: the interpreter's own
    teardown (freeing every object of thousands of children) would only delay
    the exit that the protocol promises within a second."""
    status = Resin().run()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)
