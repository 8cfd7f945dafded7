"""Starting a child: set up containment in the child, then execve.

Two spawners with the same behaviour and the same errors:

- `CloneSpawner` (the default): the optional C extension `resin_py._spawn`,
  which starts the child with clone(CLONE_VM | CLONE_VFORK) and does every
  step in C with async-signal-safe calls. No copy of the interpreter's page
  tables, no Python in the child: ~5x cheaper than a fork.
- `ForkSpawner`: pure Python (os.fork, setup in the child, errors through a
  CLOEXEC pipe). Used when the extension is not built, or when the
  environment variable RESIN_SPAWNER=python asks for it.

Neither ever reaps behind resin's back, and both report precise errors
(executable not found vs. not executable vs. bad working directory).
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import stat
import struct

from resin_py.lite import TYPE_CHECKING, Protocol, signal
from resin_py.protocol.errors import SpawnFailed

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import ModuleType

    from resin_py.protocol.errors import SpawnStage

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# ioctl: make this terminal the caller's controlling terminal (termios.TIOCSCTTY
# on Linux; here so that resin need not import termios to start).
TIOCSCTTY = 0x540E

# What the fork child reports through the error pipe before _exit: stage + errno.
_ERR = struct.Struct(">ci")
_STAGE_CWD = b"c"
_STAGE_EXEC = b"e"
_STAGE_SETUP = b"s"
_STAGE_USER = b"u"
_STAGE_RLIMIT = b"r"
_STAGE_PTY = b"t"
# The SpawnFailed stage of each of the child's reports (others: "exec").
_STAGES: dict[bytes, SpawnStage] = {_STAGE_USER: "user", _STAGE_RLIMIT: "rlimit",
                                    _STAGE_PTY: "pty"}
# Exit status of a child that failed between fork and exec (never reported).
_CHILD_FAILED = 127
# RESIN_SPAWNER=python forces the pure-Python spawner, =c requires the C one.
SPAWNER_ENV = "RESIN_SPAWNER"


def prctl(option: int, value: int) -> None:
    """prctl(2) with one argument; OSError on failure."""
    _prctl()(option, value)


def _prctl() -> Callable[[int, int], None]:
    """The C extension's prctl; ctypes (~3 ms to import) only without it."""
    global _prctl_impl
    if _prctl_impl is None:
        ext = _load_extension()
        _prctl_impl = ext.prctl if ext is not None else _ctypes_prctl()
    return _prctl_impl


_prctl_impl: Callable[[int, int], None] | None = None


def _ctypes_prctl() -> Callable[[int, int], None]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option: int, value: int) -> None:
        if libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return prctl


class ChildSetup:
    """What a spawner needs to start one child (a plain class: no dataclasses
    import on resin's start-up path)."""

    __slots__ = ("argv", "cgroup", "cgroup_clone", "ctty", "cwd", "env", "envp", "gid", "groups",
                 "path", "rlimits", "stderr", "stdin", "stdout", "uid")

    def __init__(self, path: bytes, argv: list[bytes], env: Mapping[bytes, bytes] | None,
                 cwd: bytes | None, stdin: int, stdout: int, stderr: int,
                 cgroup: int = -1, cgroup_clone: bool = False) -> None:
        self.path = path  # executable, already resolved on PATH
        self.argv = argv
        self.env = env  # None: resin's own environment, unchanged
        # The environment as execve takes it (KEY=VALUE), used instead of
        # `env` when set: resin keeps its own ready (no copy per spawn).
        self.envp: list[bytes] | None = None
        self.cwd = cwd
        self.stdin = stdin  # descriptors that become the child's 0, 1 and 2
        self.stdout = stdout
        self.stderr = stderr
        # The directory of the child's cgroup (open), -1: none. The child is
        # created in it (cgroup_clone, where the spawner can), or joins it
        # before anything else.
        self.cgroup = cgroup
        self.cgroup_clone = cgroup_clone
        # stdin is a terminal that becomes the child's controlling terminal.
        self.ctty = False
        # Identity: uid and gid to switch to (-1: keep), supplementary groups
        # (None: keep). Resolved by the caller: the child looks up nothing.
        self.uid = -1
        self.gid = -1
        self.groups: tuple[int, ...] | None = None
        # (RLIMIT_*, soft, hard) set after the default RLIMIT_NOFILE; -1: infinity.
        self.rlimits: tuple[tuple[int, int, int], ...] = ()


# --- PATH lookup ---------------------------------------------------------------

# (exe, PATH) -> (absolute path found, (dir, mtime_ns) of every dir searched up
# to and including the hit). Only hits are cached: a program installed later
# is found at once. A hit stays valid while none of those directories changed
# (an entry added or removed changes the directory's mtime, so an executable
# that appears earlier on PATH is seen) and the file is still executable.
_which_cache: dict[tuple[bytes, bytes], tuple[bytes, tuple[tuple[bytes, int], ...]]] = {}
_WHICH_CACHE_MAX = 256


def search_path() -> bytes:
    """resin's own PATH (or the system default), as execvp would use it."""
    path = os.environb.get(b"PATH")
    if path is None:
        path = os.fsencode(os.confstr("CS_PATH") or os.defpath)
    return path


def resolve_executable(exe: bytes, path: bytes | None = None) -> bytes:
    """Find `exe` on `path` (a PATH value; None: resin's), like execvp would.

    Raises SpawnFailed(enoent) before anything is forked when it is not found.
    """
    if b"/" in exe:
        return exe
    if path is None:
        path = search_path()
    key = (exe, path)
    hit = _which_cache.get(key)
    if hit is not None:
        if _still_valid(*hit):
            return hit[0]
        del _which_cache[key]
    found, searched = _search(exe, path)
    if found is None:
        raise SpawnFailed("path", errno.ENOENT, f"{os.fsdecode(exe)}: not found on PATH")
    if len(_which_cache) >= _WHICH_CACHE_MAX:
        _which_cache.clear()
    _which_cache[key] = (found, searched)
    return found


def _mtime(path: bytes) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _still_valid(found: bytes, searched: tuple[tuple[bytes, int], ...]) -> bool:
    for directory, mtime in searched:
        if _mtime(directory or b".") != mtime:
            return False
    return os.access(found, os.X_OK)


def _search(exe: bytes, path: bytes) -> tuple[bytes | None, tuple[tuple[bytes, int], ...]]:
    """shutil.which's rules: the first entry holding an executable non-directory
    of that name; an empty entry is the current directory."""
    searched: list[tuple[bytes, int]] = []
    if not path:
        return None, ()
    seen: set[bytes] = set()
    for directory in path.split(b":"):
        if directory in seen:
            continue
        seen.add(directory)
        mtime = _mtime(directory or b".")
        searched.append((directory, mtime))
        if mtime < 0:
            continue
        candidate = os.path.join(directory, exe)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and os.access(candidate, os.X_OK):
            # Absolute, since the child may chdir before it execs.
            return os.path.abspath(candidate), tuple(searched)
    return None, tuple(searched)


# --- spawners --------------------------------------------------------------------


class Spawner(Protocol):
    """Starts children for one resin process."""

    def spawn(self, setup: ChildSetup) -> int:
        """Start the child; return its pid, or raise SpawnFailed with the reason
        (OSError when no child could be created at all)."""
        ...


def make_spawner(nofile: tuple[int, int], kind: str | None = None) -> Spawner:
    """The C spawner when it is built, else the fork spawner. Children get
    `nofile` (soft, hard) as their RLIMIT_NOFILE.

    `kind` (default: $RESIN_SPAWNER) is "c", "python" or empty for automatic.
    """
    if kind is None:
        kind = os.environ.get(SPAWNER_ENV, "")
    if kind == "python":
        return ForkSpawner(nofile)
    ext = _load_extension()
    if ext is not None:
        return CloneSpawner(nofile, ext)
    if kind == "c":
        raise ImportError("resin_py._spawn (the C spawner) is not built")
    return ForkSpawner(nofile)


def _load_extension() -> ModuleType | None:
    try:
        from resin_py import _spawn
    except ImportError:
        return None
    return _spawn


def _failed(setup: ChildSetup, cwd_stage: bool, code: int, stage: SpawnStage = "exec"
            ) -> SpawnFailed:
    if cwd_stage:
        cwd = os.fsdecode(setup.cwd or b"")
        return SpawnFailed("cwd", code, f"cannot change to directory {cwd}: {os.strerror(code)}")
    if stage != "exec":
        what = {"user": "switch user or group", "rlimit": "set a resource limit",
                "pty": "make the terminal the controlling terminal"}.get(stage, stage)
        return SpawnFailed(stage, code, f"cannot {what}: {os.strerror(code)}")
    path = os.fsdecode(setup.path)
    return SpawnFailed("exec", code, f"cannot execute {path}: {os.strerror(code)}")


class CloneSpawner:
    """Spawns through the C extension (clone + exec, see resin_py/_spawn.c)."""

    def __init__(self, nofile: tuple[int, int], ext: ModuleType) -> None:
        self._parent = os.getpid()
        self._nofile = nofile
        self._spawn = ext.spawn
        self._stage_cwd = ext.STAGE_CWD
        self._stages: dict[int, SpawnStage] = {
            ext.STAGE_USER: "user", ext.STAGE_RLIMIT: "rlimit", ext.STAGE_PTY: "pty"}

    def spawn(self, setup: ChildSetup) -> int:
        env, envp = setup.env, setup.envp
        if envp is None and env is not None:
            envp = [k + b"=" + v for k, v in env.items()]
        pid, stage, code = self._spawn(
            setup.path, setup.argv, envp, setup.cwd, setup.stdin, setup.stdout, setup.stderr,
            self._parent, *self._nofile, setup.cgroup, setup.cgroup_clone, setup.ctty,
            setup.uid, setup.gid, setup.groups, setup.rlimits,
        )
        if stage:
            raise _failed(setup, stage == self._stage_cwd, code, self._stages.get(stage, "exec"))
        return int(pid)


class ForkSpawner:
    """Forks children in pure Python: the fallback when the C extension is absent."""

    def __init__(self, nofile: tuple[int, int]) -> None:
        self._parent = os.getpid()
        self._nofile = nofile
        _prctl()  # resolved before any fork: the child only calls it
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Upper bound for closerange (RLIM_INFINITY does not fit an int).
        self._maxfd = hard if 0 < hard < 2**31 else 2**31 - 1
        # Every signal whose disposition differs from the default now (ignored
        # by whoever started resin, or changed by resin itself).
        self._reset = [
            s for s in signal.valid_signals()
            if s not in (signal.SIGKILL, signal.SIGSTOP) and _not_default(s)
        ]

    def spawn(self, setup: ChildSetup) -> int:
        """Fork and exec; return the pid, or raise SpawnFailed with the reason."""
        procs = -1
        if setup.cgroup >= 0:
            procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=setup.cgroup)
        try:
            return self._fork(setup, procs)
        finally:
            if procs >= 0:
                os.close(procs)

    def _fork(self, setup: ChildSetup, procs: int) -> int:
        env: Mapping[bytes, bytes] = os.environb if setup.env is None else setup.env
        if setup.envp is not None:  # made in the parent: the child only execs
            env = dict(_split_env(setup.envp))
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover (runs in the child)
                self._child(setup, err_w, procs, env)
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
        raise _failed(setup, stage == _STAGE_CWD, code, _STAGES.get(stage, "exec"))

    def _child(self, setup: ChildSetup, err_w: int, procs: int,
               env: Mapping[bytes, bytes]) -> None:  # pragma: no cover
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
            if procs >= 0:  # before anything can fork
                os.write(procs, b"0")
            _setup_stdio([setup.stdin, setup.stdout, setup.stderr])
            # Leak nothing resin inherited without CLOEXEC; keep the error pipe.
            os.closerange(3, err_w)
            os.closerange(err_w + 1, self._maxfd)
            if setup.ctty:
                stage = _STAGE_PTY
                fcntl.ioctl(0, TIOCSCTTY, 0)
            stage = _STAGE_SETUP
            resource.setrlimit(resource.RLIMIT_NOFILE, self._nofile)
            stage = _STAGE_RLIMIT
            for which, soft, hard in setup.rlimits:
                resource.setrlimit(which, (soft, hard))
            if setup.uid >= 0 or setup.gid >= 0 or setup.groups is not None:
                stage = _STAGE_USER
                _switch_user(setup)
                # A change of credentials clears the death signal: set it again.
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != self._parent:
                    os._exit(_CHILD_FAILED)
            if setup.cwd is not None:
                stage = _STAGE_CWD
                os.chdir(setup.cwd)
            stage = _STAGE_EXEC
            os.execve(setup.path, setup.argv, env)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        except BaseException:
            code = errno.EINVAL
        try:
            os.write(err_w, _ERR.pack(stage, code))
        finally:
            os._exit(_CHILD_FAILED)


def _split_env(envp: list[bytes]) -> list[tuple[bytes, bytes]]:
    """KEY=VALUE strings as (KEY, VALUE) (a string without "=": an empty value)."""
    pairs = []
    for entry in envp:
        key, _, value = entry.partition(b"=")
        pairs.append((key, value))
    return pairs


def _switch_user(setup: ChildSetup) -> None:  # pragma: no cover (runs in the child)
    """Groups first: once the uid is not root, they can no longer change."""
    if setup.groups is not None:
        os.setgroups(list(setup.groups))
    if setup.gid >= 0:
        os.setresgid(setup.gid, setup.gid, setup.gid)
    if setup.uid >= 0:
        os.setresuid(setup.uid, setup.uid, setup.uid)


def _setup_stdio(src: list[int]) -> None:  # pragma: no cover (runs in the child)
    """Make src[i] the child's fd i, whatever the sources' numbers (as _spawn.c)."""
    for i in range(3):
        if src[i] < 3 and src[i] != i:  # would be clobbered by an earlier dup2
            old, moved = src[i], fcntl.fcntl(src[i], fcntl.F_DUPFD, 3)
            src[:] = [moved if fd == old else fd for fd in src]
    for i, fd in enumerate(src):
        if fd == i:
            os.set_inheritable(i, True)  # dup2(fd, fd) would keep close-on-exec
        else:
            os.dup2(fd, i)


def _not_default(sig: int) -> bool:
    try:
        return signal.getsignal(sig) is not signal.SIG_DFL
    except (OSError, ValueError):
        return False
