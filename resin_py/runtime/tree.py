"""Every descendant of a child, also those that left its process group.

A child's process group holds its descendants until one calls `setsid` or
`setpgid`, or daemonizes with a double fork. resin finds those too:

- **the cookie**: every child gets `RESIN_TREE=<resin pid>.<resin start
  time>.<serial>` in its environment, which its descendants inherit unless
  they clear their environment;
- **the live tree**: `/proc/<pid>/task/<tid>/children` links every process
  to the children it forked, whatever their group or session, as long as
  the parent lives;
- **adopted orphans**: resin is a subreaper, so a descendant whose parent
  died becomes resin's own child; among those, the cookie tells whose it is.

What cannot be attributed without cgroups: a process that cleared its
environment *and* whose parent had exited before resin looked.

Signals go through pidfds after checking the process's start time, so a
recycled pid never receives a signal meant for the process that had it.
"""

from __future__ import annotations

import os

from resin_py.lite import TYPE_CHECKING, signal, suppress

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

COOKIE_VAR = b"RESIN_TREE"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of
    /proc/<pid>/stat), or None once it is gone."""
    stat = _stat(pid)
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19])


def _stat(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read()
    except OSError:  # gone (ENOENT, ESRCH)
        return None


def pgid_of(pid: int) -> int | None:
    stat = _stat(pid)
    if stat is None:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[2])


def children_of(pid: int) -> list[int]:
    """The live children of every thread of `pid`."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def own_children() -> list[int]:
    """The children of this (single-threaded) process: one read, or a scan
    of /proc for a kernel without CONFIG_PROC_CHILDREN."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        pass
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and int(stat[stat.rfind(b")") + 2:].split()[1]) == me:
                found.append(int(name))
    return found


def cookie_of(pid: int) -> bytes | None:
    """The RESIN_TREE value of `pid`'s environment, if any."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    prefix = COOKIE_VAR + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):]
    return None


def subtree(roots: Iterable[int]) -> dict[int, int]:
    """Every live process under `roots` (the roots included): pid -> start time."""
    found: dict[int, int] = {}
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        started = start_time(pid)
        if started is None:
            continue
        found[pid] = started
        stack.extend(children_of(pid))
    return found


def send(pid: int, started: int, signo: int) -> bool:
    """Signal the process `pid` if it is still the one that started at
    `started`; whether a signal was sent."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone
        return False
    try:
        if start_time(pid) != started:  # the pid now names another process
            return False
        with suppress(OSError):
            signal.pidfd_send_signal(fd, signo)
            return True
        return False
    finally:
        os.close(fd)


def holders(prefix: bytes) -> dict[int, int]:
    """Every live process whose environment holds a RESIN_TREE value starting
    with `prefix` (a whole /proc scan): pid -> start time."""
    entry = COOKIE_VAR + b"=" + prefix
    found: dict[int, int] = {}
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if environ.startswith(entry) or (b"\0" + entry) in environ:
            started = start_time(int(name))
            if started is not None:
                found[int(name)] = started
    return found


def kill_holders(prefix: bytes, deadline: float, clock: Callable[[], float]) -> int:
    """SIGKILL every holder of the cookie prefix and everything under them in
    the live tree (which links descendants that cleared their environment),
    again until no new one appears or `deadline` (on `clock`) passes; how
    many were killed."""
    killed: set[tuple[int, int]] = set()
    while clock() < deadline:
        found = subtree(holders(prefix))
        fresh = [item for item in found.items() if item not in killed]
        if not fresh:
            break
        for pid, started in fresh:
            send(pid, started, signal.SIGKILL)
            killed.add((pid, started))
    return len(killed)
