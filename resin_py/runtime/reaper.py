"""Exits: SIGCHLD wakes the loop (through the signal wakeup pipe), `waitid`
finds who exited. resin is a subreaper, so orphaned descendants of its
children come to it too: those are reaped, and killed at shutdown.
"""

from __future__ import annotations

import os
import time

from resin_py.lite import TYPE_CHECKING, signal, suppress
from resin_py.runtime import tree
from resin_py.runtime.cgroups import Cgroups
from resin_py.runtime.loop import READ, wait_for
from resin_py.spawn import PR_SET_CHILD_SUBREAPER, prctl

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from resin_py.runtime.children import Child, Children

# Signals whose arrival the loop handles (the wakeup pipe carries them).
WAKE_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1)
# One read of the wakeup pipe: a short read emptied it, so the common wakeup
# (one signal) costs one read, not a second one to see EAGAIN.
WAKE_READ = 4096


def become_subreaper() -> None:
    """Orphaned descendants of resin's children become resin's children (and
    are reaped, and killed at shutdown) instead of init's."""
    with suppress(OSError):
        prctl(PR_SET_CHILD_SUBREAPER, 1)


def install_wakeup() -> int:
    """Route SIGCHLD, SIGTERM and SIGUSR1 to a pipe the loop watches (its read
    end is returned); unblock every signal (a parent may start resin with
    some blocked, which would disable its SIGTERM shutdown and its exits)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    # Python handlers are needed for the wakeup fd to see the signals; the
    # work happens in the loop.
    for signo in WAKE_SIGNALS:
        signal.signal(signo, _ignore_signal)
        signal.siginterrupt(signo, False)
    return wake_r  # wake_w stays open: the C handler writes to it until exit


def _ignore_signal(_signo: int, _frame: FrameType | None) -> None:
    """The wakeup pipe carries the signal to the loop; nothing to do here."""


class Reaper:
    def __init__(self, wake: int, children: Children,
                 on_signal: Callable[[int], None]) -> None:
        self.wake = wake
        self.children = children
        self.on_signal = on_signal  # SIGTERM, SIGUSR1
        # Cookies of children whose whole tree was sent SIGKILL: every later
        # wakeup looks for stragglers (a process forked during the kill).
        self.condemned: set[bytes] = set()
        self._index: dict[bytes, list[int]] | None = None
        self.cgroups: Cgroups | None = None  # a cgroup per child, where available

    def on_wakeup(self) -> None:
        signals = self._drain_wake()
        for signo in (signal.SIGTERM, signal.SIGUSR1):
            if signo in signals:
                self.on_signal(signo)
        self.reap()

    def _drain_wake(self) -> bytes:
        signals = b""
        try:
            while chunk := os.read(self.wake, WAKE_READ):
                signals += chunk
                if len(chunk) < WAKE_READ:
                    break  # emptied (a signal after this read wakes the loop again)
        except BlockingIOError:
            pass
        return signals

    def _adopted(self) -> dict[bytes, list[int]]:
        """resin's own children that it did not spawn (adopted as subreaper),
        by cookie. Read once per wakeup (a leader's exit, a signal), and again
        after a kill: with thousands of children one read is a few hundred
        microseconds, and thousands of exits can share one wakeup."""
        if self._index is None:
            ours = self.children.by_pid
            index: dict[bytes, list[int]] = {}
            for pid in tree.own_children():
                if pid not in ours:
                    index.setdefault(tree.cookie_of(pid) or b"", []).append(pid)
            self._index = index
        return self._index

    def tree_of(self, child: Child, *, leader_alive: bool = True) -> dict[int, int]:
        """The child's descendants, wherever they went: pid -> start time.
        (A leader that has exited has no children left: they were reparented
        to resin when it exited, so only the adopted orphans are roots.)"""
        roots = list(self._adopted().get(child.cookie, ()))
        if leader_alive and not child.reaped:
            roots.append(child.pid)
        found = tree.subtree(roots)
        found.pop(child.pid, None)
        return found

    def signal_group(self, child: Child, signo: int, *, exited: bool = False) -> bool:
        """Send `signo` to the child's process group and to the descendants
        that left it; with SIGKILL, again until no new one appears. The tree
        is walked *before* the group is signalled: a dying parent would leave
        its escaped children unattributed (if they cleared their environment).
        Whether anything got the signal."""
        if child.cgroup is not None:
            return self._signal_cgroup(child, child.cgroup, signo, exited)
        if not exited:
            self._index = None  # between wakeups: look afresh
        snapshot = self.tree_of(child, leader_alive=not exited)
        sent = _signal_pgid(child, signo)
        escaped = False
        for pid, started in snapshot.items():
            if signo == signal.SIGKILL or tree.pgid_of(pid) != child.pid:
                escaped |= tree.send(pid, started, signo)
        if signo == signal.SIGKILL and escaped:
            # Until no new one appears, and again at the next wakeups (for
            # one forked while its parent was being killed). A tree without
            # escapees costs no more /proc reads: an escapee forked by a group
            # member between the walk and the kill is the one narrow gap
            # (docs/protocol.md, "Containment").
            self.condemned.add(child.cookie)
            self._index = None
            self._kill_all(child, set(snapshot.items()))
        return sent or escaped

    def _signal_cgroup(self, child: Child, cgroup: str, signo: int, exited: bool) -> bool:
        """With a cgroup, its member list is the child's tree: SIGKILL goes to
        all of it at once (cgroup.kill), another signal to the group and to
        each member that left the group."""
        sent = _signal_pgid(child, signo)
        if signo == signal.SIGKILL:
            if self.children.closing:
                return sent  # shutdown kills every cgroup at once (Resin.begin_shutdown)
            if exited and not any(p.direct and not p.closed for p in child.pipes):
                return sent  # the cgroup is dealt with after the exit report (reap)
            if exited:
                # Its exit waits until the client has read its direct pipes:
                # nothing left in the cgroup may keep writing to them.
                self._kill_cgroup(cgroup)
                return True
            if sent:
                self._kill_cgroup(cgroup)
                return True
            return bool(Cgroups.pids(cgroup)) and self._kill_cgroup(cgroup)
        for pid in Cgroups.pids(cgroup):
            if tree.pgid_of(pid) != child.pid:
                started = tree.start_time(pid)
                if started is not None:
                    sent |= tree.send(pid, started, signo)
        return sent

    def _kill_cgroup(self, cgroup: str) -> bool:
        if self.cgroups is None:
            return Cgroups.kill(cgroup)
        return self.cgroups.kill_child(cgroup)  # and never reuse it

    def _kill_all(self, child: Child, killed: set[tuple[int, int]]) -> None:
        """SIGKILL the child's tree until a walk finds nothing not yet killed
        (SIGKILLed processes cannot fork: each walk only finds what was forked
        before its parent got the signal)."""
        while True:
            fresh = [(pid, started) for pid, started in self.tree_of(child).items()
                     if (pid, started) not in killed]
            if not fresh:
                return
            for pid, started in fresh:
                tree.send(pid, started, signal.SIGKILL)
                killed.add((pid, started))
            self._index = None

    def _chase_condemned(self) -> None:
        """Kill what is left of condemned trees; forget a tree once it is gone."""
        adopted = self._adopted()
        for cookie in list(self.condemned):
            roots = adopted.get(cookie)
            if not roots:
                self.condemned.discard(cookie)
                continue
            for pid, started in tree.subtree(roots).items():
                tree.send(pid, started, signal.SIGKILL)
            self._index = None

    def reap(self) -> None:
        """Handle every exited child: ours as exits, orphans just reaped.

        Cost: waitid(P_ALL) walks resin's list of children up to the first
        one that has exited, and the last call (nothing left) walks all of
        it: O(children) per SIGCHLD wakeup, ~0.5 ms with 10,000 children
        here. Many exits at once share one wakeup.
        """
        self._index = None
        if self.condemned:
            self._chase_condemned()
        if self.cgroups is not None and self.cgroups.pending:
            self.cgroups.sweep()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            child = self.children.get(info.si_pid)
            if child is None or child.reaped:
                with suppress(ChildProcessError):
                    os.waitpid(info.si_pid, 0)
                # Its pid is free now: no cached root may name it any more.
                self._index = None
                continue
            # Kill the rest of the group and every descendant that left it
            # before reaping: the zombie leader keeps the pgid from being
            # reused, so this cannot hit a stranger.
            self.signal_group(child, signal.SIGKILL, exited=True)
            try:
                _, status = os.waitpid(child.pid, 0)
            except ChildProcessError:
                status = 0
            self.children.exited(child, status)
            # Its cgroup: kept, removed, or what is left in it killed, once
            # the exit is handed on (Cgroups.settle_released). Only the cgroup
            # of a leader that exited on its own is kept for reuse: one whose
            # leader a signal ended may have been killed through cgroup.kill
            # by something other than resin (the child itself: it may be
            # root), and Linux SIGKILLs every child later created in such a
            # cgroup.
            cgroup, cgroups = child.cgroup, self.cgroups
            if cgroup is not None and cgroups is not None and not self.children.closing:
                cgroups.release_later(cgroup, reusable=os.WIFEXITED(status))

    def kill_descendants(self, deadline: float) -> None:
        """SIGKILL every group still alive and whatever else is our child
        (grandchildren that escaped their group come to us as the subreaper),
        reap, repeat until none remain or the deadline passes."""
        for child in self.children.by_pid.values():
            if not child.reaped:
                with suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
        while True:
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            kids = tree.own_children()
            if not kids or time.monotonic() >= deadline:
                return
            for pid in kids:
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            # Woken by SIGCHLD through the wakeup pipe; no lost wakeups since
            # the byte stays in the pipe until read.
            wait_for(self.wake, READ, deadline - time.monotonic())
            self._drain_wake()


def _signal_pgid(child: Child, signo: int) -> bool:
    """killpg the child's group; whether anyone was in it. SIGKILL also goes
    to the group of a leader that has exited but is not reaped yet: a zombie
    leader still holds its pgid, so no stranger can have it."""
    if child.reaped and signo != signal.SIGKILL:
        return False
    try:
        os.killpg(child.pid, signo)
    except ProcessLookupError:
        return False
    return True
