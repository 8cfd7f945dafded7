"""A cgroup (v2) per child, where the machine allows it.

With cgroups, "every descendant" needs no detective work: a child joins its
own cgroup before exec (the spawner writes to its `cgroup.procs`), every
process it forks is born there, and `cgroup.kill` SIGKILLs them all at
once, including one that cleared its environment and lost its parent.

resin looks at start for a cgroup v2 hierarchy where it may create a child
of its own cgroup that has `cgroup.kill` (Linux 5.14), and creates
`resin-<pid>/` there; each child gets `c<serial>/` under it, removed once
empty after the child's exit. Without that (no cgroup2 mount, no permission,
an older kernel), or with RESIN_CGROUPS=0 in resin's environment, resin
falls back to the process tree (runtime/tree.py) without error.
"""

from __future__ import annotations

import errno
import os

from resin_py.lite import suppress

# RESIN_CGROUPS=0 in resin's environment: never use cgroups.
CGROUPS_ENV = "RESIN_CGROUPS"
# How often to look whether killed cgroups have emptied (they empty without
# a signal to resin) when waiting for that at shutdown.
CGROUP_POLL = 0.005
# Empty cgroups kept for the next children instead of being removed: a
# mkdir and an rmdir cost ~40 us each here (more under load, and the new
# cgroup's first process starts slower), on the path of every spawn and
# exit; checking that one is empty costs one read. A few suffice for
# children started one after another; a burst of exits beyond this many
# removes the rest as before.
CGROUP_SPARES = 16


def v2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted (/proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def _own_v2_path() -> str | None:
    """resin's own cgroup in the v2 hierarchy ("0::<path>" in /proc/self/cgroup)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


class Cgroups:
    """resin's cgroup directory and its children's."""

    def __init__(self, base: str) -> None:
        self.base = base  # resin-<pid>/
        self.pending: set[str] = set()  # cgroups of finished children, not yet empty
        self.spares: list[str] = []  # empty, without limits: for the next children
        self.limited: set[str] = set()  # cgroups created with limits (never reused)
        # Cgroups written "1" to cgroup.kill: never reused either. Linux
        # (6.18 here) SIGKILLs every child later created in such a cgroup
        # by clone3(CLONE_INTO_CGROUP) (measured: its kill count no longer
        # matches the one the fork started with).
        self.killed: set[str] = set()
        # The spares' directories, open: the spawner gets the child's cgroup
        # as a descriptor, which a spare then costs no open on the spawn's path.
        self.spare_fds: dict[str, int] = {}
        # Cgroups of children whose exit was just handled, with whether their
        # leader exited on its own (may be kept): kept, removed or killed by
        # settle_released, after the exit is handed on (see there).
        self.released: list[tuple[str, bool]] = []
        self.preparing = True  # False once making a spare ahead failed: not tried again
        self._usable: bool | None = None  # not tried yet

    @classmethod
    def detect(cls) -> Cgroups | None:
        """Where resin's cgroup directory would go; None where there is no
        cgroup2 hierarchy (or RESIN_CGROUPS=0). Nothing is created yet: a
        resin that never spawns (and is then killed) leaves nothing behind."""
        if os.environ.get(CGROUPS_ENV) == "0":
            return None
        mount, own = v2_mount(), _own_v2_path()
        if mount is None or own is None:
            return None
        return cls(os.path.join(mount, own.lstrip("/"), f"resin-{os.getpid()}"))

    def usable(self) -> bool:
        """Create resin's directory (once, before the first child) and tell
        whether it can hold children's cgroups that can be killed."""
        if self._usable is None:
            try:
                with suppress(FileExistsError):  # a killed resin had this pid
                    os.mkdir(self.base)
                self._usable = os.path.exists(os.path.join(self.base, "cgroup.kill"))
                # Offer the children what controllers resin's cgroup has (for
                # limits); none is needed for containment.
                for controller in (b"+memory", b"+pids", b"+cpu"):
                    with suppress(OSError):
                        _write(os.path.join(self.base, "cgroup.subtree_control"), controller)
            except OSError:  # no permission, read-only mount
                self._usable = False
            if not self._usable:
                with suppress(OSError):
                    os.rmdir(self.base)
        return self._usable

    def prepare(self, serial: int) -> None:
        """Make a spare cgroup ahead of the next child (`serial`, whose name
        it gets) when there is none. Called when resin is about to wait: the
        mkdir (40-250 us here) is then off the path of the next spawn in a
        burst of children that stay alive, where no spare comes back. Only
        once resin's directory is known usable; a failure stops it for good."""
        if self.spares or self._usable is not True or not self.preparing:
            return
        path = os.path.join(self.base, f"c{serial}")
        try:
            os.mkdir(path)
        except OSError:
            self.preparing = False
            return
        self._keep_spare(path)

    def _keep_spare(self, path: str) -> None:
        """Keep an empty cgroup for a later child, its directory open."""
        self.spares.append(path)
        with suppress(OSError):  # opened when used, then
            self.spare_fds[path] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _drop_spare_fd(self, path: str) -> int:
        """The spare's open directory, now the caller's (-1: none)."""
        return self.spare_fds.pop(path, -1)

    def create(self, serial: int, limits: tuple[tuple[str, str], ...] = ()) -> tuple[str, int]:
        """A cgroup for a new child, with `limits` written to its interface
        files: its path, and the directory open (for the spawner, which
        creates the child in it; the caller closes it). Raises OSError
        (LimitError for a limit)."""
        if not limits and self.spares:
            path = self.spares.pop()
            fd = self._drop_spare_fd(path)
            if fd >= 0:
                return path, fd
            try:
                return path, os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                pass  # gone meanwhile: make a new one
        path = os.path.join(self.base, f"c{serial}")
        if path in self.spares:  # made ahead for this child (prepare): limits go in it
            self.spares.remove(path)
            fd = self._drop_spare_fd(path)
            if fd >= 0:
                os.close(fd)
        with suppress(FileExistsError):
            os.mkdir(path)
        try:
            for name, text in limits:
                try:
                    _write(os.path.join(path, name), text.encode())
                except OSError as exc:  # ENOENT: the controller is not enabled here
                    raise LimitError(exc.errno or errno.EINVAL, f"{name}: {exc}") from exc
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            with suppress(OSError):
                os.rmdir(path)
            raise
        if limits:
            self.limited.add(path)
        return path, fd

    def kill_child(self, path: str) -> bool:
        """Cgroups.kill for a child's cgroup, which is then never reused."""
        self.killed.add(path)
        return self.kill(path)

    @staticmethod
    def kill(path: str) -> bool:
        """SIGKILL every process in the cgroup (at once, by the kernel)."""
        try:
            _write(os.path.join(path, "cgroup.kill"), b"1")
        except OSError:
            return False
        return True

    @staticmethod
    def pids(path: str) -> list[int]:
        """The processes in the cgroup now."""
        try:
            with open(os.path.join(path, "cgroup.procs"), "rb") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def release(self, path: str) -> None:
        """The child's leader exited: remove its cgroup once it is empty
        (killed processes take a moment to leave it)."""
        self.try_remove(path)

    def try_remove(self, path: str, reusable: bool = True) -> bool:
        """Remove the cgroup if it is empty (or keep it as a spare, see
        CGROUP_SPARES, when `reusable`); else keep it to be removed once it
        is (see sweep). Whether it is empty."""
        if path in self.limited or path in self.killed or not reusable:
            self.limited.discard(path)
            self.killed.discard(path)
        elif len(self.spares) < CGROUP_SPARES and not populated(path):
            self._keep_spare(path)
            return True
        if _rmdir(path):
            return True
        self.pending.add(path)
        return False

    def release_later(self, path: str, reusable: bool) -> None:
        """The child's exit was handled: its cgroup is dealt with by
        settle_released (see there)."""
        self.released.append((path, reusable))

    def settle_released(self) -> None:
        """The cgroups of the exits handled since the last call, called once
        those exits are handed on (resin calls it after flushing its stdout):
        each is kept as a spare if empty and `reusable` (see try_remove), else
        removed if empty, else what is left in it is killed (cgroup.kill) and
        it is removed once empty. Deciding costs a read of cgroup.events (an
        open, a read, a close) or an rmdir per exit, which would otherwise
        delay each exit's report; the leader's group was SIGKILLed before
        its exit was reported (Reaper.reap), the rest of its cgroup follows
        within the same turn of resin's loop."""
        released, self.released = self.released, []
        for path, reusable in released:
            if not self.try_remove(path, reusable):
                self.kill_child(path)

    def sweep(self) -> None:
        """Remove the released cgroups that have emptied since."""
        for path in list(self.pending):
            if _rmdir(path):
                self.pending.discard(path)
                self.killed.discard(path)

    def kill_all(self) -> None:
        """SIGKILL everything in every child cgroup (shutdown)."""
        for path in self.children():
            self.kill(path)

    def children(self) -> list[str]:
        try:
            return [e.path for e in os.scandir(self.base) if e.is_dir()]
        except OSError:
            return []

    def remove(self) -> bool:
        """Remove every (empty) child cgroup and resin's own; whether all went."""
        done = all([_rmdir(path) for path in self.children()])
        return _rmdir(self.base) and done


def populated(path: str) -> bool:
    """Whether a process is in the cgroup or below it ("populated 1" in
    cgroup.events); True when that cannot be read."""
    try:
        fd = os.open(os.path.join(path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        return not os.read(fd, 64).startswith(b"populated 0")
    except OSError:
        return True
    finally:
        os.close(fd)


class LimitError(OSError):
    """A cgroup limit could not be applied (its controller is not available)."""


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _rmdir(path: str) -> bool:
    """Remove a cgroup and the cgroups under it (a child may have run a resin
    of its own, whose cgroups nest in the child's: killed with it, they are
    left for us); False while processes are still in any of them."""
    try:
        os.rmdir(path)  # the common case: no cgroups under it
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        subdirs = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    except OSError:
        subdirs = []
    if not all([_rmdir(sub) for sub in subdirs]):
        return False
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # EBUSY: processes still in it
    return True
