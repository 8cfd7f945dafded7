"""resin: the parts wired together, and the `Core` the sessions call.

`main()` does the process-wide setup (descriptor limit, signals, subreaper,
non-blocking stdio) and runs the loop until stdin closes. `Resin` itself
takes its parts ready-made, so that tests can build one over fakes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import struct
import sys
import time

from resin_py.lite import TYPE_CHECKING, signal, suppress
from resin_py.protocol.common import StreamKind
from resin_py.protocol.errors import ProtocolError, SpawnFailed, ZeroLengthPacket
from resin_py.protocol.framing import PacketReader
from resin_py.protocol.negotiate import Negotiator
from resin_py.runtime import tree
from resin_py.runtime.cgroups import Cgroups, LimitError
from resin_py.runtime.children import Child, Children, OutPipe, StdinState
from resin_py.runtime.fdio import F_SETPIPE_SZ, OsFds
from resin_py.runtime.loop import READ, WRITE, EpollPoller, Loop, wait_for
from resin_py.runtime.outbox import Outbox, is_disconnect
from resin_py.runtime.reaper import Reaper, become_subreaper, install_wakeup
from resin_py.spawn import ChildSetup, make_spawner, resolve_executable

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from resin_py.protocol.common import SpawnOptions
    from resin_py.protocol.errors import SpawnStage
    from resin_py.protocol.session import ChildRef, Session
    from resin_py.protocol.terms import Term
    from resin_py.runtime.fdio import Buffer, Fds
    from resin_py.runtime.loop import Poller
    from resin_py.spawn import Spawner

    _A = TypeVar("_A")

# One read of resin's stdin: several full packets per system call.
STDIN_READ_SIZE = 256 * 1024
# Capacity asked for resin's own stdout pipe: bigger batches per wakeup of
# the reader (the BEAM) when output is heavy.
RESIN_STDOUT_PIPE_SIZE = 1024 * 1024
# Time from stdin EOF to exit: kill and drain the children, kill the
# remaining descendants, flush. The whole shutdown must fit in 1 second.
SHUTDOWN_CHILDREN = 0.5
SHUTDOWN_DESCENDANTS = 0.8
SHUTDOWN_FLUSH = 0.95
# epoll reports a hangup whatever the events asked for: watching resin's
# stdin for it alone (while not reading, under backpressure) still tells
# that the client is gone.
HANGUP = 0x010  # EPOLLHUP
# A child joins its cgroup by moving itself there, which waits for an RCU
# grace period (8-18 ms measured here) unless cgroup migrations happened
# within about one grace period: cheap (0.5 ms) while children start in a
# row. A child spawned later than this after the previous one is instead
# created in its cgroup (clone3, costing 0.25-0.5 ms of page-table copy).
# Guessing "warm" wrongly costs ~15 ms, guessing "cold" wrongly ~0.3 ms:
# hence a short window. Creating a child in its cgroup does not warm the
# lock (it takes it for reading): in a burst after a pause the second child
# pays one cold join, the next ones 0.5 ms each. See resin_py/_spawn.c.
# Where the clone3 child shares resin's memory (x86-64), it is always
# created in its cgroup and this is not consulted.
CGROUP_BURST = 0.005
# Output pipes made ahead, when resin is about to wait, for the next spawn
# (a child's stdout and stderr): their pipe2 and fcntl (4 syscalls, ~25 us
# here) are then off the path from a spawn request to the child's start.
# Made only once resin has spawned; they hold 2 descriptors each.
PIPE_SPARES = 2
# Frames of stdin data allocate and free buffers of up to 64 KiB. In a heap
# as small as a fresh resin's, glibc hands such memory back to the OS at once
# (free space at the top above M_TRIM_THRESHOLD, 128 KiB) and faults it in
# again for the next frame: ~20 page faults a frame, twice resin's CPU per
# byte written. Freeing one block this big (mmap'ed) once, before the first
# spawn, raises glibc's dynamic thresholds to 1 MiB / 2 MiB for good (~60 us).
HEAP_NUDGE = 1024 * 1024


def log(msg: str) -> None:
    """Diagnostics go to stderr: stdout carries the protocol."""
    with suppress(OSError):
        sys.stderr.write(f"resin[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()


class Resin:
    """The port program: packets in on `stdin_fd`, packets out on `stdout_fd`."""

    def __init__(self, stdin_fd: int, stdout_fd: int, *, fds: Fds, poller: Poller,
                 spawner: Spawner, devnull: int, stdin_pollable: bool = True,
                 stdout_pollable: bool = True) -> None:
        self.stdin_fd = stdin_fd
        self.fds = fds
        self.poller = poller
        self.spawner = spawner
        self.devnull = devnull
        self.stdin_pollable = stdin_pollable
        self.reader = PacketReader()
        self.stdin_watched = 0  # the events settle() last asked for on stdin_fd
        self.in_buf = bytearray(STDIN_READ_SIZE)  # reused: no allocation per read
        self.in_view = memoryview(self.in_buf)
        self.outbox = Outbox(stdout_fd, fds, poller, blocking=not stdout_pollable)
        self.session: Session = Negotiator(self, self._decided)
        self.children = Children(fds, poller, self.outbox, self.session)
        self.children.members_alive = _members_alive
        self.outbox.on_pause_change = self.children.on_pause_change
        self.outbox.on_idle = self.children.on_idle
        self.outbox.on_broken = self._on_broken
        self.loop = Loop(poller, self.settle)
        self.reaper: Reaper | None = None
        self.closing = False
        self.shutdown_at = 0.0
        # RESIN_TREE=<pid>.<start time>.<serial>: unique across resins and reboots
        # of a pid, so a leftover of another resin is never taken for ours.
        self.cookie_prefix = f"{os.getpid()}.{tree.start_time(os.getpid())}.".encode()
        self.spawned = 0
        self.own_envp: list[bytes] | None = None  # see _own_envp
        # Output pipes made ahead (read end non-blocking), see PIPE_SPARES.
        self.spare_pipes: list[tuple[int, int]] = []
        self.last_cgroup_spawn = -1.0  # time.monotonic() of the last child given a cgroup
        self.cgroups: Cgroups | None = None  # serve() sets it where cgroups can be used
        # serve() starts the sentinel (runtime/sentinel.py) and has resin
        # become a subreaper before its first spawn: only a real resin process.
        self.sentinel_pending: int | None = None  # pid of its intermediate process
        self.subreaper_pending = False

    def _decided(self, session: Session) -> None:
        self.session = session
        self.children.session = session

    # --- the loop ------------------------------------------------------------------

    def settle(self) -> None:
        """Before every wait: flush stdout (which watches it while bytes are
        left), then decide whether to read stdin."""
        if self.children.direct_held:  # exits waiting for the client's reads
            self.children.recheck_direct(self.children.clock())
        self.outbox.flush()
        if not self.closing:
            # After the flush: what the exits and spawns just reported leave
            # to do, and what the next spawn can use made ahead.
            if self.cgroups is not None:
                if self.cgroups.released:
                    self.cgroups.settle_released()
                self.cgroups.prepare(self.spawned + 1)  # a spare for the next child, if none
            if self.spawned and len(self.spare_pipes) < PIPE_SPARES:
                self._make_pipes()
        if self.stdin_pollable and not self.closing:
            # Stated only when it changes: unchanged between most turns.
            want = READ if self.reading_stdin() else HANGUP
            if want != self.stdin_watched:
                self.stdin_watched = want
                self.poller.set_interest(self.stdin_fd, want, self._on_stdin if want == READ
                                         else self._on_stdin_hangup)

    def reading_stdin(self) -> bool:
        """Backpressure: resin reads its stdin unless its stdout is backed up,
        or (v0, no acks) too much waits for a child's stdin."""
        if self.outbox.paused:
            return False
        backlog = self.session.stdin_backlog
        return backlog is None or self.children.stdin_bytes <= backlog

    def run(self) -> int:
        while True:
            self.settle()
            if self.closing and (not self.children or time.monotonic() >= self._deadline(
                    SHUTDOWN_CHILDREN)):
                break
            timeout: float | None = None
            if self.closing:
                timeout = max(0.0, self._deadline(SHUTDOWN_CHILDREN) - time.monotonic())
            elif not self.stdin_pollable:
                timeout = 0.0
                if self.reading_stdin():
                    self._on_stdin()
            if self.children.direct_held:
                delay = max(0.0, self.children.direct_due - self.children.clock())
                timeout = delay if timeout is None else min(timeout, delay)
            self.loop.turn(timeout)
        if self.reaper is not None:
            self.reaper.kill_descendants(self._deadline(SHUTDOWN_DESCENDANTS))
        self._final_flush()
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
            self.session.on_internal_error(exc)

    # --- resin's stdin -------------------------------------------------------------

    def _on_stdin(self) -> None:
        try:
            n = self.fds.readinto(self.stdin_fd, self.in_buf)
        except BlockingIOError:
            return
        except OSError as exc:
            log(f"reading stdin: {exc}")
            n = 0
        if not n:
            self.begin_shutdown()
            return
        reader = self.reader
        data = self.in_view[:n]
        payload = reader.whole(data)
        if payload is not None:  # one packet alone (an echo's): handed on at once
            if not self.closing:
                self._dispatch(self.session.on_packet, payload)
            return
        reader.feed(data)
        while not self.closing:
            try:
                payload = self.reader.next_packet()
            except ZeroLengthPacket as exc:
                self._dispatch(self._framing_error, exc)
                continue
            if payload is None:
                break
            self._dispatch(self._on_packet, payload)

    def _on_stdin_hangup(self) -> None:
        """The client closed resin's stdin while resin was not reading it."""
        self.begin_shutdown()

    def _framing_error(self, exc: ProtocolError) -> None:
        self.session.on_framing_error(exc)

    def _on_packet(self, payload: bytes) -> None:
        self.session.on_packet(payload)

    def _on_broken(self, exc: OSError) -> None:
        """resin's stdout failed: nobody to serve, shut down."""
        if not is_disconnect(exc):
            log(f"writing stdout: {exc}")
        self.begin_shutdown()

    def _final_flush(self) -> None:
        deadline = self._deadline(SHUTDOWN_FLUSH)
        outbox = self.outbox
        while outbox.size and time.monotonic() < deadline:
            outbox.flush()
            if outbox.size and not outbox.blocking:
                wait_for(outbox.fd, WRITE, deadline - time.monotonic())

    # --- Core: what the sessions call ------------------------------------------------

    def send(self, *parts: Buffer) -> None:
        self.outbox.push(*parts)

    def spawn(self, id: int, exe: bytes, args: tuple[bytes, ...], opts: SpawnOptions
              ) -> ChildRef:
        """Start a child; raise SpawnFailed with the reason if nothing runs."""
        env: dict[bytes, bytes] | None = None
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
        cwd = opts.cd if opts.cd_of is None else cwd_of(opts.cd_of)
        if self.cgroups is not None and not self.cgroups.usable():
            log("cgroups unavailable: containment by the process tree")
            self.cgroups = None
        if self.subreaper_pending:
            self._before_first_spawn()
        self.spawned += 1
        cookie = self.cookie_prefix + str(self.spawned).encode()
        envp: list[bytes] | None = None
        if env is not None:
            env[tree.COOKIE_VAR] = cookie  # last: a client cannot remove or forge it
        else:  # resin's own environment, as execve takes it, and the cookie
            envp = [*(self.own_envp or self._own_envp()), tree.COOKIE_VAR + b"=" + cookie]
        cgroup: str | None = None
        cgroup_dir = -1
        if opts.cgroup and self.cgroups is None:
            raise SpawnFailed("cgroup", errno.ENOTSUP, "cgroup limits need cgroups")
        if self.cgroups is not None:
            try:
                cgroup, cgroup_dir = self.cgroups.create(self.spawned, opts.cgroup)
            except LimitError as exc:
                raise SpawnFailed("cgroup", exc.errno or errno.EINVAL, str(exc)) from exc
            except OSError as exc:
                if opts.cgroup:
                    raise SpawnFailed("cgroup", exc.errno or errno.EIO, str(exc)) from exc
                log(f"no cgroup for a child: {exc}")  # the process tree still finds it
        argv = [opts.arg0 if opts.arg0 is not None else exe, *args]
        parent_fds: list[int] = []
        child_fds: list[int] = []
        tty = -1
        try:
            setup_extra = (  # before any fd is opened; no call for the usual spawn
                _identity_and_limits(opts)
                if opts.user is not None or opts.group is not None or opts.rlimits else None)
            if opts.pty is not None:
                tty, in_w, slave = _open_pty(opts.pty, parent_fds, child_fds)
                in_r = out_w = err_w = slave
                pipes = [OutPipe(tty, StreamKind.STDOUT, opts.credit)]
            elif opts.stdin == "pipe":
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                parent_fds.append(in_w)
                child_fds.append(in_r)
                os.set_blocking(in_w, False)
            else:
                in_r, in_w = self.devnull, -1
            if opts.pty is None:
                out_r, out_w = self._out_pipe(parent_fds, child_fds)
                pipes = [OutPipe(out_r, StreamKind.STDOUT, opts.credit, is_pipe=True)]
                if opts.stderr == "capture":
                    err_r, err_w = self._out_pipe(parent_fds, child_fds)
                    pipes.append(OutPipe(err_r, StreamKind.STDERR, opts.credit, is_pipe=True))
                elif opts.stderr == "stdout":
                    err_w = out_w
                else:
                    err_w = self.devnull
                for pipe in pipes if opts.direct else ():
                    if pipe.kind in opts.direct:
                        if opts.direct_after:
                            pipe.direct_after = opts.direct_after
                        else:
                            pipe.direct = True
            setup = ChildSetup(path, argv, env, cwd, in_r, out_w, err_w,
                               cgroup_dir, self._cgroup_clone(cgroup_dir))
            setup.envp = envp
            if setup_extra is not None:
                setup.uid, setup.gid, setup.groups, setup.rlimits = setup_extra
            setup.ctty = tty >= 0
            pid = self.spawner.spawn(setup)
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            if cgroup is not None and self.cgroups is not None:
                self.cgroups.release(cgroup)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
            if cgroup_dir >= 0:
                os.close(cgroup_dir)
        # Its exit comes as SIGCHLD (to the reaper), also if that happened already.
        child = Child(id, pid, in_w, pipes, cookie)
        child.cgroup = cgroup
        child.tty = tty >= 0
        self.children.add(child)
        return child

    def _out_pipe(self, parent_fds: list[int], child_fds: list[int]) -> tuple[int, int]:
        """A child's output pipe (read end non-blocking): one made ahead if any."""
        r, w = self.spare_pipes.pop() if self.spare_pipes else _new_out_pipe()
        parent_fds.append(r)
        child_fds.append(w)
        return r, w

    def _make_pipes(self) -> None:
        """Make output pipes ahead, up to PIPE_SPARES (resin is about to wait).
        Out of descriptors, tried again at the next wait: one failed pipe2."""
        try:
            while len(self.spare_pipes) < PIPE_SPARES:
                self.spare_pipes.append(_new_out_pipe())
        except OSError:  # out of descriptors: the spawns make theirs (and fail)
            pass

    def _own_envp(self) -> list[bytes]:
        """resin's environment as KEY=VALUE strings, without a cookie of its
        own (a resin started by another resin's child): made once, since
        resin never changes its environment. A spawn without `env` or
        `clear_env` then copies no dict (35 variables here: ~40 us a spawn)."""
        if self.own_envp is None:
            self.own_envp = [k + b"=" + v for k, v in os.environb.items()
                             if k != tree.COOKIE_VAR]
        return self.own_envp

    def _cgroup_clone(self, cgroup_dir: int) -> bool:
        if cgroup_dir < 0:
            return False
        now = time.monotonic()
        last, self.last_cgroup_spawn = self.last_cgroup_spawn, now
        return cgroup_clone(now, last)

    def start_sentinel(self) -> None:
        """Start the sentinel (while resin has no child and is no subreaper);
        it is settled before the first spawn."""
        from resin_py.runtime import sentinel

        try:
            self.sentinel_pending = sentinel.start(
                self.cookie_prefix, None if self.cgroups is None else self.cgroups.base)
        except OSError as exc:
            log(f"no sentinel (descendants outlive a SIGKILLed resin): {exc}")

    def _before_first_spawn(self) -> None:
        if self.sentinel_pending is not None:
            from resin_py.runtime import sentinel

            sentinel.settle(self.sentinel_pending)
            self.sentinel_pending = None
        become_subreaper()
        self.subreaper_pending = False
        bytes(HEAP_NUDGE)  # allocated and freed at once: see HEAP_NUDGE

    def write_stdin(self, child: ChildRef, data: bytes) -> None:
        assert isinstance(child, Child)  # as _own(), inline: on every write's path
        self.children.write_stdin(child, data)

    def stdin_queued(self, child: ChildRef) -> int:
        assert isinstance(child, Child)
        return child.queued_writes

    def close_stdin(self, child: ChildRef, ref: Term) -> None:
        own = _own(child)
        eof = None
        if own.tty and own.stdin_state is StdinState.OPEN:
            # A terminal has no end of input: its EOF character (VEOF, ^D
            # unless the child changed it) ends a read at the start of a line.
            import termios

            with suppress(termios.error):
                eof = termios.tcgetattr(own.stdin_fd)[6][termios.VEOF]
            if not isinstance(eof, bytes):
                eof = b"\x04"
        self.children.close_stdin(own, ref, eof)

    def resize(self, child: ChildRef, rows: int, cols: int) -> None:
        """TIOCSWINSZ on a pty child's terminal; the kernel sends SIGWINCH to
        its foreground process group when the size changed."""
        own = _own(child)
        if not own.tty:
            raise OSError(errno.ENOTTY, "not on a terminal")
        fd = self.children.tty_fd(own)
        if fd < 0:
            raise OSError(errno.ESRCH, "the terminal is gone")
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))

    def grant_credit(self, child: ChildRef, kind: StreamKind, amount: int) -> None:
        self.children.grant_credit(_own(child), kind, amount)

    def direct_pipes(self, child: ChildRef) -> tuple[tuple[StreamKind, int, int], ...]:
        # The inode lets the client check that the descriptor it opened
        # (/proc/<resin>/fd/<fd>) is this pipe.
        return tuple((pipe.kind, pipe.fd, self.fds.inode(pipe.fd))
                     for pipe in _own(child).pipes if pipe.direct)

    def relay(self, child: ChildRef) -> None:
        self.children.relay(_own(child))

    def signal(self, child: ChildRef, signo: int, group: bool) -> None:
        """Send a signal; raise OSError (ESRCH once the child is reaped, EINVAL...)."""
        if _own(child).reaped:  # the pid may already belong to someone else
            raise OSError(errno.ESRCH, "process has exited")
        try:
            if not group:
                os.kill(child.pid, signo)
            elif self.reaper is None:
                os.killpg(child.pid, signo)
            elif not self.reaper.signal_group(_own(child), signo):
                raise ProcessLookupError(errno.ESRCH, "no process in the group or its tree")
        except (OverflowError, ValueError) as exc:
            raise OSError(errno.EINVAL, "invalid signal") from exc

    # --- signals and shutdown ----------------------------------------------------------

    def on_signal(self, signo: int) -> None:
        if signo == signal.SIGTERM:
            self.begin_shutdown()
        elif signo == signal.SIGUSR1:
            log(self.describe())

    def describe(self) -> str:
        """The loop's state (resin prints it on SIGUSR1)."""
        containment = "process tree" if self.cgroups is None else f"cgroup2 {self.cgroups.base}"
        return (f"closing={self.closing} outbox={self.outbox.size}B paused={self.outbox.paused} "
                f"stdout_watched={self.poller.interest(self.outbox.fd)} "
                f"stdin_watched={self.poller.interest(self.stdin_fd)} "
                f"reader_buffered={self.reader.buffered} session={type(self.session).__name__} "
                f"containment={containment}\n"
                + self.children.describe())

    def begin_shutdown(self) -> None:
        """stdin EOF (or SIGTERM, or stdout broken): kill every child's group,
        then drain and exit."""
        if self.closing:
            return
        self.closing = True
        self.shutdown_at = time.monotonic()
        if self.stdin_pollable:
            self.poller.set_interest(self.stdin_fd, 0, self._on_stdin)
            self.stdin_watched = 0
        for child in list(self.children.by_pid.values()):
            if not child.reaped:
                with suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
        if self.cgroups is not None:
            # Every cgroup at once. They are removed by the sentinel once
            # resin has exited: rmdir costs ~0.1 ms each, which 10,000
            # children would add to the 1-second exit.
            self.cgroups.kill_all()
        # What left the groups is killed with everything else resin owns
        # (Reaper.kill_descendants), not tree by tree.
        self.children.shutdown()


def cgroup_clone(now: float, last: float) -> bool:
    """Whether a child spawned at `now` is created in its cgroup rather than
    joining it: when the previous one (at `last`) is older than CGROUP_BURST."""
    return now - last > CGROUP_BURST


def _members_alive(child: Child) -> bool:
    """Whether anything of an exited child may still write to its pipes: its
    cgroup is populated, or (without one) its process group has members. (A
    group whose number was reused by a newer child counts as alive: an exit
    then waits for that child, not forever.)"""
    if child.cgroup is not None:
        try:
            with open(os.path.join(child.cgroup, "cgroup.events"), "rb") as f:
                return not f.read(64).startswith(b"populated 0")
        except OSError:
            return False  # removed: empty
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: a member resin may not signal
    return True


def _own(child: ChildRef) -> Child:
    assert isinstance(child, Child)
    return child


# struct winsize: rows, columns, then pixel sizes (unused).
_WINSIZE = struct.Struct("HHHH")


def _open_pty(size: tuple[int, int], parent_fds: list[int], child_fds: list[int]
              ) -> tuple[int, int, int]:
    """A pseudo-terminal of `size` (rows, cols): (master for output, a
    duplicate of it for input, slave). Two descriptors on the master so that
    closing stdin (the duplicate) leaves the output readable, as with pipes."""
    import termios

    try:
        master, slave = os.openpty()  # both close-on-exec
    except OSError as exc:
        raise SpawnFailed("pty", exc.errno or errno.EIO, f"no pseudo-terminal: {exc}") from exc
    parent_fds.append(master)
    child_fds.append(slave)
    fcntl.ioctl(master, termios.TIOCSWINSZ, _WINSIZE.pack(*size, 0, 0))
    os.set_blocking(master, False)
    writer = fcntl.fcntl(master, fcntl.F_DUPFD_CLOEXEC, 3)
    parent_fds.append(writer)
    return master, writer, slave


_proc_ours: list[bool] = []


def _proc_is_ours() -> bool:
    """Whether /proc shows resin's own pid namespace (a process started in a
    new pid namespace without its own /proc sees the host's, where a client's
    pid names some other process). Looked at once."""
    if not _proc_ours:
        try:
            _proc_ours.append(os.readlink("/proc/self") == str(os.getpid()))
        except OSError:
            _proc_ours.append(False)
    return _proc_ours[0]


# What the kernel appends to a /proc/PID/cwd link whose directory was removed.
_DELETED = b" (deleted)"


def cwd_of(pid: int) -> bytes:
    """The working directory of OS process `pid` now (the `cd_of` option):
    a readlink of /proc/PID/cwd, a few microseconds in resin where the
    client's own getcwd may cost it far more (the BEAM's runs on a dirty
    scheduler). Raises SpawnFailed(cwd): no such process (ENOENT), not ours
    to look at (EACCES), or its directory removed (ENOENT, as a chdir to it)."""
    if not _proc_is_ours():
        raise SpawnFailed("cwd", errno.ESRCH, "this /proc is not of resin's pid namespace: "
                                              f"process {pid} cannot be looked up")
    link = b"/proc/%d/cwd" % pid
    try:
        path = os.readlink(link)
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise SpawnFailed("cwd", code, f"no working directory of process {pid}: "
                                       f"{os.strerror(code)}") from exc
    if path.endswith(_DELETED):
        # Removed, or a directory really named so: only then the path leads
        # to the same directory as the link.
        try:
            same = os.path.samestat(os.stat(path), os.stat(link))
        except OSError:
            same = False
        if not same:
            raise SpawnFailed("cwd", errno.ENOENT,
                              f"the working directory of process {pid} was removed")
    return path


def _identity_and_limits(opts: SpawnOptions) -> tuple[int, int, tuple[int, ...] | None,
                                                      tuple[tuple[int, int, int], ...]] | None:
    """The `user`, `group` and `rlimits` options resolved for the spawner:
    (uid, gid, supplementary groups, rlimits); None when none is given.
    Raises SpawnFailed: a user or group that does not exist, or resin not
    root (then nothing could switch identity)."""
    if opts.user is None and opts.group is None and not opts.rlimits:
        return None
    rlimits = tuple((_RLIMITS[name], -1 if soft is None else soft, -1 if hard is None else hard)
                    for name, soft, hard in opts.rlimits)
    if opts.user is None and opts.group is None:
        return -1, -1, None, rlimits
    import grp
    import pwd

    if os.geteuid() != 0:
        stage: SpawnStage = "user" if opts.user is not None else "group"
        raise SpawnFailed(stage, errno.EPERM, "only a resin running as root can switch user")
    gid = -1
    if opts.group is not None:
        try:
            entry = (grp.getgrgid(opts.group) if isinstance(opts.group, int)
                     else grp.getgrnam(os.fsdecode(opts.group)))
            gid = entry.gr_gid
        except KeyError:
            if not isinstance(opts.group, int):
                raise SpawnFailed("group", errno.ENOENT, "no such group") from None
            gid = opts.group  # a numeric gid need not have a name
    if opts.user is None:
        return -1, gid, (gid,), rlimits
    try:
        user = (pwd.getpwuid(opts.user) if isinstance(opts.user, int)
                else pwd.getpwnam(os.fsdecode(opts.user)))
    except KeyError:
        if not isinstance(opts.user, int) or gid < 0:
            # No name: no primary group or supplementary groups to take.
            raise SpawnFailed("user", errno.ENOENT, "no such user") from None
        return opts.user, gid, (gid,), rlimits
    if gid < 0:
        gid = user.pw_gid
    # initgroups(3): the groups listing the user, and gid.
    groups = tuple(os.getgrouplist(user.pw_name, gid))
    return user.pw_uid, gid, groups, rlimits


# The rlimits option's names and their RLIMIT_* numbers (Linux).
_RLIMITS = {"as": 9, "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8,
            "msgqueue": 12, "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14,
            "rttime": 15, "sigpending": 11, "stack": 3}


def _new_out_pipe() -> tuple[int, int]:
    """An output pipe whose read end (resin's) does not block."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.set_blocking(r, False)
    except OSError:
        os.close(r)
        os.close(w)
        raise
    return r, w


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


def serve(stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Set the process up as a port program and serve until stdin closes."""
    nofile = raise_nofile_limit()
    # A ^C in the terminal running the BEAM must not kill resin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake = install_wakeup()
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    spawner = make_spawner(nofile)
    poller = EpollPoller()
    with suppress(OSError):  # not a pipe, or above pipe-max-size
        fcntl.fcntl(stdout_fd, F_SETPIPE_SZ, RESIN_STDOUT_PIPE_SIZE)
    saved = [(fd, fcntl.fcntl(fd, fcntl.F_GETFL)) for fd in (stdin_fd, stdout_fd)]
    for fd, flags in saved:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    stdin_pollable = _pollable(stdin_fd)
    stdout_pollable = _pollable(stdout_fd)
    if not stdout_pollable:  # a regular file: plain blocking writes
        fcntl.fcntl(stdout_fd, fcntl.F_SETFL, saved[1][1])
    try:
        resin = Resin(stdin_fd, stdout_fd, fds=OsFds(), poller=poller, spawner=spawner,
                      devnull=devnull, stdin_pollable=stdin_pollable,
                      stdout_pollable=stdout_pollable)
        resin.cgroups = Cgroups.detect()
        resin.start_sentinel()  # its forks overlap with reading the first packet
        resin.subreaper_pending = True
        reaper = Reaper(wake, resin.children, resin.on_signal)
        reaper.cgroups = resin.cgroups
        resin.reaper = reaper
        poller.set_interest(wake, READ, reaper.on_wakeup)
        return resin.run()
    finally:
        for fd, flags in saved:
            with suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _pollable(fd: int) -> bool:
    """epoll can watch `fd` (not a regular file)."""
    probe = EpollPoller()
    try:
        probe.set_interest(fd, READ, _noop)
    except PermissionError:
        return False
    probe.forget(fd)
    return True


def _noop() -> None:
    pass


def main() -> int:
    """Serve until stdin closes, then leave at once: the interpreter's own
    teardown (freeing every object of thousands of children) would only delay
    the exit that the protocol promises within a second."""
    status = serve()
    with suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)
