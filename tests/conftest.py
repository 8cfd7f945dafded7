"""Fixtures: real resin processes driven through resin_py.testing.ResinClient."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from resin_py.testing import ResinClient

RESIN_COMMAND = [sys.executable, "-m", "resin_py"]


def c_spawner_built() -> bool:
    try:
        from resin_py import _spawn  # noqa: F401
    except ImportError:
        return False
    return True


# Both spawners: the C one (skipped where the extension is not built) and the
# pure-Python fallback. `@both_spawners` on a test that uses `resin` or
# `client` runs it against a resin started with each.
SPAWNERS = [
    pytest.param("c", marks=pytest.mark.skipif(not c_spawner_built(),
                                               reason="C extension not built")),
    "python",
]
both_spawners = pytest.mark.parametrize("resin", SPAWNERS, indirect=True)


def resin_env(spawner: str | None) -> dict[str, str] | None:
    """The environment for a resin that must use `spawner` (None: resin's choice)."""
    if spawner is None:
        return None
    return {**os.environ, "RESIN_SPAWNER": spawner}


@pytest.fixture
def resin(request: pytest.FixtureRequest) -> Iterator[ResinClient]:
    """A resin that has not been told its protocol yet (with the spawner given
    by indirect parametrization, else the default one)."""
    client = ResinClient(RESIN_COMMAND, env=resin_env(getattr(request, "param", None)))
    yield client
    client.kill()


@pytest.fixture
def client(resin: ResinClient) -> ResinClient:
    """A resin after the v1 handshake."""
    assert resin.hello() == 1
    return resin


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `cond` until it holds. Only for facts the OS gives no event for (a pid
    vanishing, a process state); everything else waits on protocol events."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def proc_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (R, S, T, Z, ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it went away while we read
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def exists(pid: int) -> bool:
    """The pid is present in /proc (a zombie counts: it was not reaped)."""
    return proc_state(pid) is not None


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    wait_until(lambda: not exists(pid), timeout, f"pid {pid} to vanish")


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def spawned_child(resin_pid: int) -> int:
    """The one child resin spawned (v0 never tells its pid). resin's sentinel
    is forked through a short-lived intermediate child of resin's, gone by
    the first spawn: a child that runs resin's own executable is not it."""
    own = os.readlink(f"/proc/{resin_pid}/exe")

    def spawned() -> list[int]:
        found = []
        for pid in children_of(resin_pid):
            try:
                if os.readlink(f"/proc/{pid}/exe") != own:
                    found.append(pid)
            except OSError:
                continue  # gone, or still between fork and exec
        return found

    wait_until(lambda: len(spawned()) == 1, what="the spawned child to start")
    return spawned()[0]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
