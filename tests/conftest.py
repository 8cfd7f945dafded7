"""Fixtures: real resin processes driven through resin_py.testing.ResinClient."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from resin_py.testing import ResinClient

RESIN_COMMAND = [sys.executable, "-m", "resin_py"]

# Property tests run on a busy machine (three xdist workers, maybe CPU hogs):
# no per-example deadline and no complaint that generating data is slow,
# which would fail them for the machine's speed, not for resin's behaviour.
# The number of examples is each test's own.
settings.register_profile("resin", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resin")


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


# --- running under pytest-xdist ---------------------------------------------------
#
# pyproject.toml runs the suite on three workers (`-n 3 --dist loadgroup`).
# Two markers (registered there) say how a test must be scheduled:
#
# - `serial`: no other test runs anywhere while it runs, because it times
#   something against a wall clock (a shutdown within 1 s) or looks at the
#   whole machine (every process of a user, every process with a cookie),
#   which another worker's processes would disturb. They run at the end,
#   one after another, while the other workers wait (`_Turns`, a lock the
#   workers share). They are also put in one xdist_group, which would keep
#   them on one worker, but pytest-xdist 3.8 does not group under pytest 9.2
#   (pytest-xdist issue #1386: the group goes into a node id pytest no
#   longer reads); the lock does not depend on it. A test that needs to
#   be alone for a part of it only uses the `alone` fixture instead.
# - `heavy`: seconds of work; started first, so that no worker is left with
#   one at the end while the others have nothing to do.
#
# `-n 0` runs everything in this process, in the same order (and `-p no:xdist`
# does not work: the options in pyproject.toml need the plugin).


class _Turns:
    """Who may run a test now, among the workers of one run: two flock(2)ed
    files in the temp directory, named after the run's id. A test takes
    `room` shared, a serial test exclusive; `gate` is taken first, briefly,
    so that a serial test waiting for the room is not overtaken by the other
    workers' next tests (flock prefers no one)."""

    def __init__(self, run_id: str) -> None:
        base = os.path.join(tempfile.gettempdir(), f"resin-tests-{run_id}")
        self.paths = [f"{base}.gate", f"{base}.room"]
        self.gate, self.room = (os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                                for p in self.paths)
        self.held: int | None = None  # fcntl.LOCK_SH or LOCK_EX while a test runs

    def enter(self, alone: bool) -> None:
        mode = fcntl.LOCK_EX if alone else fcntl.LOCK_SH
        if self.held == mode:
            return  # serial tests one after another: still alone
        self.leave()
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, mode)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.held = mode

    def leave(self) -> None:
        if self.held is not None:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            self.held = None

    def close(self) -> None:
        # Every worker opened the files before any test ran (the controller
        # starts tests once all workers have collected): unlinking them now
        # cannot split the workers between two pairs of files.
        for fd in (self.gate, self.room):
            os.close(fd)
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


_TURNS = pytest.StashKey[_Turns]()


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)  # set in xdist workers only
    if workerinput is not None:
        config.stash[_TURNS] = _Turns(workerinput["testrunuid"])


def pytest_unconfigure(config: pytest.Config) -> None:
    turns = config.stash.get(_TURNS, None)
    if turns is not None:
        turns.close()


@pytest.fixture
def alone(request: pytest.FixtureRequest) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """`with alone(): ...` runs that part of a test the way a `serial` test
    runs: once the other workers' current tests have ended, and with no
    other test starting until the block ends. For a test whose long set-up may
    share the machine but whose end is timed."""
    turns = request.config.stash.get(_TURNS, None)

    @contextlib.contextmanager
    def section() -> Iterator[None]:
        if turns is None or turns.held == fcntl.LOCK_EX:  # not under xdist, or already alone
            yield
            return
        turns.enter(alone=True)
        try:
            yield
        finally:
            turns.enter(alone=False)

    return section


def _is_serial(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("serial") is not None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_serial(item):
            item.add_marker(pytest.mark.xdist_group("serial"))
    # Heavy tests first, serial ones last, otherwise as collected (a stable sort).
    items.sort(key=lambda i: 2 if _is_serial(i) else 0 if i.get_closest_marker("heavy") else 1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item,
                            nextitem: pytest.Item | None) -> Generator[None, object, object]:
    turns = item.config.stash.get(_TURNS, None)
    if turns is None:  # not under xdist
        return (yield)
    turns.enter(alone=_is_serial(item))
    try:
        return (yield)
    finally:
        if not (_is_serial(item) and _is_serial(nextitem)):
            turns.leave()
