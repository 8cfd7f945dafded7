"""resin's work per spawn and exit (docs/performance.md, "Spawn: where the
microseconds go"), unit-tested without a child: a `Resin` over the fake fd
layer, a poller that only records, and a spawner that records each
ChildSetup instead of starting anything. End to end, every spawn test in the
suite goes through the same path (tests/test_v1.py, tests/test_containment.py,
tests/test_cgroup_spares.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from runtime_fakes import FakeFds, Rig

from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.runtime import reaper, server, tree
from resin_py.runtime.children import Child, Children, OutPipe
from resin_py.runtime.server import PIPE_SPARES, Resin
from resin_py.spawn import ChildSetup

if TYPE_CHECKING:
    from resin_py.runtime.loop import Handler


class RecordingPoller:
    """Remembers what is watched; never reports anything ready."""

    def __init__(self) -> None:
        self.watched: dict[int, int] = {}

    def set_interest(self, fd: int, events: int, handler: Handler) -> None:
        self.watched[fd] = events

    def interest(self, fd: int) -> int:
        return self.watched.get(fd, 0)

    def poll(self, timeout: float | None) -> list[Handler]:
        return []

    def forget(self, fd: int) -> None:
        self.watched.pop(fd, None)


class RecordingSpawner:
    def __init__(self) -> None:
        self.setups: list[ChildSetup] = []
        self.next_pid = 5000

    def spawn(self, setup: ChildSetup) -> int:
        self.setups.append(setup)
        self.next_pid += 1
        return self.next_pid


@pytest.fixture
def resin() -> Iterator[Resin]:
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r = Resin(0, 1, fds=FakeFds(), poller=RecordingPoller(), spawner=RecordingSpawner(),
              devnull=devnull)
    yield r
    for child in r.children.all():
        for pipe in child.pipes:
            os.close(pipe.fd)
    for pair in r.spare_pipes:
        for fd in pair:
            os.close(fd)
    os.close(devnull)


def _setups(resin: Resin) -> list[ChildSetup]:
    spawner = resin.spawner
    assert isinstance(spawner, RecordingSpawner)
    return spawner.setups


def test_own_environment_goes_ready_made_with_the_cookie_last(
        resin: Resin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESIN_PATH_TEST", "1")
    # A resin started by another resin's child: its own cookie is not passed on.
    monkeypatch.setenv(os.fsdecode(tree.COOKIE_VAR), "other")
    resin.spawn(1, b"/bin/true", (), SpawnOptions(stdin="null"))
    resin.spawn(2, b"/bin/true", (), SpawnOptions(stdin="null"))
    first, second = _setups(resin)
    assert first.env is None and first.envp is not None and second.envp is not None
    assert b"RESIN_PATH_TEST=1" in first.envp
    cookies = [e for e in first.envp if e.startswith(tree.COOKIE_VAR + b"=")]
    assert cookies == [first.envp[-1]] == [tree.COOKIE_VAR + b"=" + resin.cookie_prefix + b"1"]
    assert second.envp[-1].endswith(b".2") and second.envp[:-1] == first.envp[:-1]
    assert resin.own_envp is not None and first.envp[:-1] == resin.own_envp  # made once


def test_env_options_still_build_a_mapping(resin: Resin) -> None:
    resin.spawn(1, b"/bin/true", (), SpawnOptions(stdin="null", env=((b"X", b"y"),)))
    resin.spawn(2, b"/bin/true", (), SpawnOptions(stdin="null", clear_env=True))
    with_env, cleared = _setups(resin)
    assert with_env.envp is None and with_env.env is not None
    assert with_env.env[b"X"] == b"y" and with_env.env[tree.COOKIE_VAR].endswith(b".1")
    assert cleared.env == {tree.COOKIE_VAR: resin.cookie_prefix + b"2"}


def test_output_pipes_are_made_ahead_after_the_first_spawn(resin: Resin) -> None:
    resin.settle()
    assert not resin.spare_pipes  # a resin that never spawns makes none
    resin.spawn(1, b"/bin/true", (), SpawnOptions(stdin="null"))
    resin.settle()
    assert len(resin.spare_pipes) == PIPE_SPARES
    ahead = list(resin.spare_pipes)
    for r, _ in ahead:
        assert not os.get_blocking(r)
    child = resin.spawn(2, b"/bin/true", (), SpawnOptions(stdin="null"))
    assert isinstance(child, Child)
    setup = _setups(resin)[-1]
    # stdout and stderr of the child are the pipes made ahead (the last first).
    assert (child.pipes[0].fd, setup.stdout) == ahead[-1]
    assert (child.pipes[1].fd, setup.stderr) == ahead[-2]
    assert all(p.is_pipe for p in child.pipes)  # no fstat to decide splice
    with pytest.raises(OSError):
        os.fstat(setup.stdout)  # resin's copy of the child's end is closed
    assert not resin.spare_pipes
    resin.settle()
    assert len(resin.spare_pipes) == PIPE_SPARES


def test_pipes_made_ahead_wait_for_descriptors(
        resin: Resin, monkeypatch: pytest.MonkeyPatch) -> None:
    resin.spawn(1, b"/bin/true", (), SpawnOptions(stdin="null"))

    def emfile(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(server.os, "pipe2", emfile)
    resin.settle()
    assert not resin.spare_pipes
    monkeypatch.undo()
    resin.settle()  # descriptors are back: made at the next wait
    assert len(resin.spare_pipes) == PIPE_SPARES


def test_a_pipe_known_to_be_one_is_not_asked() -> None:
    rig = Rig()
    fds = rig.fds
    asked: list[int] = []
    real_is_pipe = fds.is_pipe

    def is_pipe(fd: int) -> bool:
        asked.append(fd)
        return real_is_pipe(fd)

    fds.is_pipe = is_pipe  # type: ignore[method-assign]
    known, unknown = fds.new_pipe(), fds.new_pipe()
    child = Child(1, 1000, -1, [OutPipe(known, StreamKind.STDOUT, None, is_pipe=True),
                                OutPipe(unknown, StreamKind.STDERR, None)])
    rig.children.add(child)
    fds.pipes[known].data += b"out"
    fds.pipes[unknown].data += b"err"
    rig.children._take(child, child.pipes[0])
    assert known not in asked and child.pipes[0].splice
    rig.children._take(child, child.pipes[1])
    assert unknown in asked


def test_one_read_empties_the_wakeup_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        reads.append(fd)
        return real_read(fd, n)

    try:
        rp = reaper.Reaper(r, Children(FakeFds(), RecordingPoller(), None, None),  # type: ignore[arg-type]
                           lambda signo: None)
        monkeypatch.setattr(reaper.os, "read", counting_read)
        os.write(w, b"\x11")
        assert rp._drain_wake() == b"\x11" and len(reads) == 1
        reads.clear()
        os.write(w, b"\x11" * (reaper.WAKE_READ + 3))  # more than one read's worth
        assert rp._drain_wake() == b"\x11" * (reaper.WAKE_READ + 3) and len(reads) == 2
        reads.clear()
        os.write(w, b"\x11" * reaper.WAKE_READ)  # exactly full: one more read sees EAGAIN
        assert len(rp._drain_wake()) == reaper.WAKE_READ and len(reads) == 2
    finally:
        os.close(r)
        os.close(w)

