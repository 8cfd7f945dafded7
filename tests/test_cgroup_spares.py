"""Empty cgroups are kept for the next children (runtime/cgroups.py,
CGROUP_SPARES) instead of an rmdir per exit and a mkdir per spawn.

Unit tests over a plain directory standing in for resin's cgroup directory
(a `cgroup.events` file written by the test says whether a cgroup is
populated), then end to end through a real resin where cgroups are usable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resin_py.protocol import v1
from resin_py.protocol.terms import OK
from resin_py.runtime.cgroups import CGROUP_SPARES, Cgroups, v2_mount
from resin_py.testing import ResinClient


def _cgroups_usable() -> bool:
    """Whether a resin here puts its children in cgroups."""
    with ResinClient() as probe:
        probe.hello()
        return b"/resin-" in probe.run(1, "cat", ["/proc/self/cgroup"]).stdout


CGROUPS = _cgroups_usable()


def _finish(cgroups: Cgroups, path: str, populated: bool) -> bool:
    """The child's leader exited; its cgroup holds `populated` processes."""
    Path(path, "cgroup.events").write_text(f"populated {int(populated)}\nfrozen 0\n")
    return cgroups.try_remove(path)


def _open(cgroups: Cgroups, serial: int, limits: tuple[tuple[str, str], ...] = ()) -> str:
    path, fd = cgroups.create(serial, limits)
    os.close(fd)
    return path


def test_an_empty_cgroup_is_reused_by_the_next_child(tmp_path: Path) -> None:
    cgroups = Cgroups(str(tmp_path))
    first = _open(cgroups, 1)
    assert _finish(cgroups, first, populated=False)  # empty: nothing to kill
    assert cgroups.spares == [first] and not cgroups.pending
    assert _open(cgroups, 2) == first  # no mkdir
    assert not cgroups.spares
    assert _open(cgroups, 3) == str(tmp_path / "c3")  # none spare: a new one


def test_a_populated_cgroup_is_not_reused(tmp_path: Path) -> None:
    cgroups = Cgroups(str(tmp_path))
    path = _open(cgroups, 1)
    # Not empty: the caller kills what is left, and it is removed later.
    assert not _finish(cgroups, path, populated=True)
    assert not cgroups.spares and cgroups.pending == {path}
    assert _open(cgroups, 2) == str(tmp_path / "c2")


def test_a_cgroup_with_limits_is_never_reused(tmp_path: Path) -> None:
    cgroups = Cgroups(str(tmp_path))
    plain = _open(cgroups, 1)
    _finish(cgroups, plain, populated=False)
    # A child with limits gets a cgroup of its own, not the spare (the
    # stand-in's interface file is made beforehand, as the kernel would).
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "pids.max").write_text("")
    limited = _open(cgroups, 2, (("pids.max", "7"),))
    assert limited == str(tmp_path / "c2")
    assert (tmp_path / "c2" / "pids.max").read_text() == "7"
    assert cgroups.spares == [plain]
    # Finished, it is removed (here: pending, the stand-in holds files).
    _finish(cgroups, limited, populated=False)
    assert cgroups.spares == [plain] and limited in cgroups.pending


def test_a_killed_cgroup_is_never_reused(tmp_path: Path) -> None:
    """Linux SIGKILLs a child created (clone3) in a cgroup that was once
    killed through cgroup.kill: such a cgroup is removed, not kept."""
    cgroups = Cgroups(str(tmp_path))
    path = _open(cgroups, 1)
    (tmp_path / "c1" / "cgroup.kill").write_text("")
    assert cgroups.kill_child(path)  # a SIGKILL request while the child ran
    assert (tmp_path / "c1" / "cgroup.kill").read_text() == "1"
    _finish(cgroups, path, populated=False)
    assert not cgroups.spares and path in cgroups.pending
    assert _open(cgroups, 2) == str(tmp_path / "c2")


def test_a_spare_is_made_ahead_when_there_is_none(tmp_path: Path) -> None:
    cgroups = Cgroups(str(tmp_path))
    cgroups.prepare(1)
    assert not cgroups.spares  # resin's directory not known usable yet
    cgroups._usable = True  # as usable() finds it before the first child
    cgroups.prepare(1)
    assert cgroups.spares == [str(tmp_path / "c1")] and (tmp_path / "c1").is_dir()
    cgroups.prepare(1)
    assert cgroups.spares == [str(tmp_path / "c1")]  # one is enough
    assert _open(cgroups, 1) == str(tmp_path / "c1")  # the next child's, no mkdir
    cgroups.prepare(2)
    assert cgroups.spares == [str(tmp_path / "c2")]
    # A child with limits gets the one made under its number, no longer a
    # spare (the stand-in's interface file made as the kernel would).
    (tmp_path / "c2" / "pids.max").write_text("")
    assert _open(cgroups, 2, (("pids.max", "7"),)) == str(tmp_path / "c2")
    assert not cgroups.spares


def test_making_a_spare_ahead_stops_after_a_failure(tmp_path: Path) -> None:
    cgroups = Cgroups(str(tmp_path / "gone"))  # mkdir fails: no such parent
    cgroups._usable = True
    cgroups.prepare(1)
    assert not cgroups.spares and not cgroups.preparing
    (tmp_path / "gone").mkdir()
    cgroups.prepare(2)  # not tried again
    assert not cgroups.spares


def test_a_spare_is_kept_open_for_the_spawner(tmp_path: Path) -> None:
    """A spare's directory is opened when it becomes a spare, not on the way
    from a spawn request to the child (its descriptor goes to the spawner)."""
    cgroups = Cgroups(str(tmp_path))
    cgroups._usable = True
    cgroups.prepare(1)
    spare = str(tmp_path / "c1")
    fd = cgroups.spare_fds[spare]
    assert os.path.samestat(os.fstat(fd), os.stat(spare))
    assert cgroups.create(1) == (spare, fd)  # the same descriptor, now the caller's
    assert not cgroups.spare_fds
    os.close(fd)
    # One back from an exit is opened then; one taken for limits is closed.
    Path(spare, "cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert cgroups.try_remove(spare) and spare in cgroups.spare_fds
    fd = cgroups.spare_fds[spare]
    Path(spare, "pids.max").write_text("")
    path, limited_fd = cgroups.create(1, (("pids.max", "7"),))
    os.close(limited_fd)
    assert path == spare and not cgroups.spares and not cgroups.spare_fds
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the spare


def test_released_cgroups_are_settled_after_the_exit(tmp_path: Path) -> None:
    """Reaper.reap leaves the exited child's cgroup to settle_released (run
    after the exit is flushed): empty and exited on its own, a spare; empty
    after a signal, removed (never reused); populated, killed and removed
    once empty."""
    cgroups = Cgroups(str(tmp_path))
    clean, signalled, busy = (_open(cgroups, i) for i in (1, 2, 3))
    for path, populated in ((clean, False), (signalled, False), (busy, True)):
        Path(path, "cgroup.events").write_text(f"populated {int(populated)}\nfrozen 0\n")
        Path(path, "cgroup.kill").write_text("")
    cgroups.release_later(clean, reusable=True)
    cgroups.release_later(signalled, reusable=False)
    cgroups.release_later(busy, reusable=True)
    assert not cgroups.spares  # nothing decided before settle_released
    cgroups.settle_released()
    assert cgroups.spares == [clean] and not cgroups.released
    assert Path(busy, "cgroup.kill").read_text() == "1"  # what was left is killed
    # The stand-ins hold files, so neither can be removed here (a real empty
    # cgroup would be): both pending, killed as any cgroup that outlives its
    # leader's exit, and never reused.
    assert cgroups.pending == {signalled, busy}
    assert {signalled, busy} <= cgroups.killed


def test_at_most_cgroup_spares_are_kept(tmp_path: Path) -> None:
    cgroups = Cgroups(str(tmp_path))
    paths = [_open(cgroups, i) for i in range(CGROUP_SPARES + 3)]
    for path in paths:
        _finish(cgroups, path, populated=False)
    assert cgroups.spares == paths[:CGROUP_SPARES]
    assert cgroups.pending == set(paths[CGROUP_SPARES:])


@pytest.mark.skipif(not CGROUPS, reason="no usable cgroup v2 here")
def test_children_one_after_another_share_a_cgroup_each_in_it_alone() -> None:
    """End to end: a child started after the previous one exited runs in
    the same (recycled) cgroup, alone; children alive together each have
    their own."""
    with ResinClient() as client:
        assert client.hello() == 1
        seen = [client.run(i, "cat", ["/proc/self/cgroup"]).stdout for i in (1, 2, 3)]
        assert len(set(seen)) == 1 and b"/resin-" in seen[0]
        path = seen[0].split(b"::")[1].strip().decode()
        procs = Path(f"{v2_mount()}{path}/cgroup.procs")
        assert procs.read_text() == ""  # the previous children are gone from it
        # Two alive at once: two cgroups.
        for id in (4, 5):
            client.spawn(id, "sh", ["-c", "cat /proc/self/cgroup; read x"])
        lines = []
        for id in (4, 5):
            client.close_child_stdin(id)
            lines.append(client.collect(id).stdout)
        assert len(set(lines)) == 2


@pytest.mark.skipif(not CGROUPS, reason="no usable cgroup v2 here")
def test_a_child_after_a_killed_one_runs() -> None:
    """End to end: the cgroup of a child killed with SIGKILL (cgroup.kill)
    is not handed to the next child, which the kernel would kill at birth."""
    import signal

    with ResinClient() as client:
        assert client.hello() == 1
        for id in range(1, 6):
            client.spawn(id, "sleep", ["100"])
            assert client.signal(id, signal.SIGKILL, group=True) == OK
            assert client.collect(id).exit == v1.Exit(id, "signal", signal.SIGKILL)
            assert client.run(100 + id, "echo", ["alive"]).stdout == b"alive\n"


def test_a_cgroup_whose_leader_a_signal_ended_is_not_reused(tmp_path: Path) -> None:
    """Something other than resin (the child itself) may have killed it
    through cgroup.kill: removed, not kept."""
    cgroups = Cgroups(str(tmp_path))
    path = _open(cgroups, 1)
    Path(path, "cgroup.events").write_text("populated 0\nfrozen 0\n")
    cgroups.try_remove(path, reusable=False)
    assert not cgroups.spares
    assert _open(cgroups, 2) == str(tmp_path / "c2")


@pytest.mark.skipif(not CGROUPS, reason="no usable cgroup v2 here")
def test_a_child_that_kills_its_own_cgroup_does_not_poison_the_next_ones() -> None:
    """End to end: a (root) child writes its own cgroup.kill; every child
    after it still runs (its cgroup must not come back as a spare)."""
    script = ('cg=$(grep "^0::" /proc/self/cgroup | cut -d: -f3); '
              'echo 1 > "$(grep -m1 " cgroup2 " /proc/self/mounts | cut -d" " -f2)$cg/cgroup.kill"')
    with ResinClient() as client:
        assert client.hello() == 1
        for id in range(1, 4):
            killed = client.run(id, "sh", ["-c", script])
            assert killed.exit == v1.Exit(id, "signal", 9), killed
            for n in range(10):
                ran = client.run(100 * id + n, "echo", ["alive"])
                assert ran.stdout == b"alive\n", (id, n, ran)
