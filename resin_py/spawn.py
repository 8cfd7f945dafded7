"""Starting a child: fork, set up containment in the child, execve.

A small fork/execve spawner instead of subprocess.Popen: it reports precise
errors through a CLOEXEC pipe (executable not found vs. not executable vs.
bad working directory), and nothing in it ever reaps behind resin's back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import struct
from dataclasses import dataclass

from resin_py.protocol.errors import SpawnFailed
from resin_py.protocol.terms import Atom, Term

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

# What the child reports through the error pipe before _exit: stage + errno.
_ERR = struct.Struct(">ci")
_STAGE_CWD = b"c"
_STAGE_EXEC = b"e"
_STAGE_SETUP = b"s"
# Exit status of a child that failed between fork and exec (never reported).
_CHILD_FAILED = 127

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def errno_atom(code: int) -> Atom:
    """An errno as the lowercase atom the protocol uses (ENOENT -> enoent)."""
    return Atom(errno.errorcode.get(code, f"errno{code}").lower())


@dataclass(frozen=True)
class ChildSetup:
    path: bytes  # executable, already resolved on PATH
    argv: list[bytes]
    env: dict[bytes, bytes]
    cwd: bytes | None
    stdin: int  # descriptors that become the child's 0, 1 and 2
    stdout: int
    stderr: int


def resolve_executable(exe: bytes, env: dict[bytes, bytes]) -> bytes:
    """Find `exe` on the child's PATH (else resin's), like execvp would."""
    if b"/" in exe:
        return exe
    import shutil  # only when a lookup is needed: startup time

    path = env.get(b"PATH")
    found = shutil.which(os.fsdecode(exe), path=None if path is None else os.fsdecode(path))
    if found is None:
        raise SpawnFailed(Atom("enoent"), f"{os.fsdecode(exe)}: not found on PATH")
    # Absolute, since the child may chdir before it execs.
    return os.fsencode(os.path.abspath(found))


class Spawner:
    """Forks children for one resin process."""

    def __init__(self, nofile_soft: int) -> None:
        self._parent = os.getpid()
        self._nofile = nofile_soft
        _, self._hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Upper bound for closerange (RLIM_INFINITY does not fit an int).
        self._maxfd = self._hard if 0 < self._hard < 2**31 else 2**31 - 1
        # Every signal whose disposition differs from the default now (ignored
        # by whoever started resin, or changed by resin itself).
        self._reset = [
            s for s in signal.valid_signals()
            if s not in (signal.SIGKILL, signal.SIGSTOP) and _not_default(s)
        ]

    def spawn(self, setup: ChildSetup) -> int:
        """Fork and exec; return the pid, or raise SpawnFailed with the reason."""
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover (runs in the child)
                self._child(setup, err_w)
            os.close(err_w)
            err_w = -1
            report = b""
            while chunk := os.read(err_r, _ERR.size):  # EOF: exec succeeded
                report += chunk
        finally:
            os.close(err_r)
            if err_w >= 0:
                os.close(err_w)
        if not report:
            return pid
        os.waitpid(pid, 0)  # it has already _exit-ed; reap it here, not as an orphan
        stage, code = _ERR.unpack(report.ljust(_ERR.size, b"\0"))
        if stage == _STAGE_CWD:
            reason: Term = (Atom("cwd"), errno_atom(code))
            cwd = os.fsdecode(setup.cwd or b"")
            raise SpawnFailed(reason, f"cannot change to directory {cwd}: {os.strerror(code)}")
        path = os.fsdecode(setup.path)
        raise SpawnFailed(errno_atom(code), f"cannot execute {path}: {os.strerror(code)}")

    def _child(self, setup: ChildSetup, err_w: int) -> None:  # pragma: no cover
        stage = _STAGE_SETUP
        try:
            signal.set_wakeup_fd(-1)
            for sig in self._reset:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.setsid()
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != self._parent:  # resin died before prctl took effect
                os._exit(_CHILD_FAILED)
            resource.setrlimit(resource.RLIMIT_NOFILE, (self._nofile, self._hard))
            os.dup2(setup.stdin, 0)
            os.dup2(setup.stdout, 1)
            os.dup2(setup.stderr, 2)
            # Leak nothing resin inherited without CLOEXEC; keep the error pipe.
            os.closerange(3, err_w)
            os.closerange(err_w + 1, self._maxfd)
            if setup.cwd is not None:
                stage = _STAGE_CWD
                os.chdir(setup.cwd)
            stage = _STAGE_EXEC
            os.execve(setup.path, setup.argv, setup.env)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        except BaseException:
            code = errno.EINVAL
        try:
            os.write(err_w, _ERR.pack(stage, code))
        finally:
            os._exit(_CHILD_FAILED)


def _not_default(sig: int) -> bool:
    try:
        return signal.getsignal(sig) is not signal.SIG_DFL
    except (OSError, ValueError):
        return False
