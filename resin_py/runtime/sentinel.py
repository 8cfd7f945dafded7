"""The sentinel: kills resin's descendants when resin dies without cleaning up.

resin cleans up after itself when its stdin closes or it gets SIGTERM. When
it is killed outright (SIGKILL, the OOM killer), its direct children die
with it (PR_SET_PDEATHSIG), but descendants that left their process group
do not. The sentinel is a process forked from resin before its first child:
it waits on a pipe whose write end only resin holds. EOF means resin is gone
(however it ended); the sentinel then kills every child cgroup (where
resin uses cgroups) and SIGKILLs every process carrying
resin's cookie (runtime/tree.py) and what lives under them, again until no
new one appears, removes resin's cgroups, and exits. After a normal
shutdown the sweep finds nothing to kill, and the sentinel only removes the
cgroups (which resin leaves to it: it killed them, and removing them would
delay its own exit).
"""

from __future__ import annotations

import os
import time

from resin_py.lite import signal, suppress
from resin_py.runtime import tree
from resin_py.runtime.cgroups import CGROUP_POLL, Cgroups
from resin_py.spawn import PR_SET_CHILD_SUBREAPER, prctl

# How long the sentinel keeps looking for processes that fork while killed.
SENTINEL_DEADLINE = 2.0
# How long it waits for killed cgroups to empty so it can remove them (they
# empty as their processes are torn down, which a loaded machine can delay).
SENTINEL_CLEANUP = 30.0


def start(prefix: bytes, cgroups: str | None) -> int:
    """Start the sentinel for the cookie `prefix` (raises OSError); return
    the pid of the intermediate process, which exits at once.

    Call it while resin has no child; resin is no subreaper from here until
    the intermediate has exited (`settle`): the sentinel is
    double-forked, so it is not resin's child (resin's own children are all
    its clients' processes, and its shutdown kills all of them). It outlives
    resin by one last sweep. resin starts it when it starts, and settles it
    before its first spawn: the forks overlap with resin's start-up (a
    Python fork costs milliseconds here).
    """
    # Whoever started resin may have made it a subreaper (the flag survives
    # exec): then the sentinel would come back to resin as its child.
    prctl(PR_SET_CHILD_SUBREAPER, 0)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover (runs in the forks, tested end to end)
            try:
                if os.fork() == 0:
                    _watch(r, w, prefix, cgroups)
            except BaseException:
                import traceback

                with suppress(BaseException):
                    traceback.print_exc()
            finally:
                os._exit(0)
    finally:
        os.close(r)
    _keep.append(w)  # resin's end: open until resin dies
    return pid


def settle(pid: int) -> None:
    """Wait until the intermediate process has exited (the sentinel is then
    init's child, or a subreaper's above resin); resin may become a
    subreaper after this."""
    with suppress(ChildProcessError):  # reaped already by the reaper
        os.waitpid(pid, 0)


_keep: list[int] = []


def _watch(r: int, w: int, prefix: bytes, cgroups: str | None) -> None:  # pragma: no cover
    os.close(w)
    # Nothing of resin's loop may run here: no signal handlers, no wakeup fd,
    # none of its descriptors (holding resin's stdout open would hide resin's
    # death from the BEAM).
    signal.set_wakeup_fd(-1)
    for signo in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signo, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)  # it may outlive resin: hold none of resin's pipes open
    os.chdir("/")
    os.closerange(3, r)
    os.closerange(r + 1, 1 << 16)
    with suppress(OSError):
        os.setsid()  # not in the BEAM's group: a ^C there must not reach it
    while True:
        try:
            if not os.read(r, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    deadline = time.monotonic() + SENTINEL_DEADLINE
    group = None if cgroups is None else Cgroups(cgroups)
    if group is not None:
        group.kill_all()
    tree.kill_holders(prefix, deadline, time.monotonic)
    # Killed processes leave their cgroups as they die: remove them then.
    cleanup = time.monotonic() + SENTINEL_CLEANUP
    while group is not None and not group.remove() and time.monotonic() < cleanup:
        time.sleep(CGROUP_POLL if time.monotonic() < deadline else 10 * CGROUP_POLL)
