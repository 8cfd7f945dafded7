"""Nothing escapes: descendants that left the process group die with their
child, however the child ends, against a real resin.

The child starts every kind of escapee and prints their pids:

- a grandchild in the group;
- a `setsid` grandchild;
- a double-fork daemon that ignores TERM and HUP;
- a grandchild that ignores TERM;
- a fork loop in its own session (it forks a new `sleep` whenever one dies);
- a `setsid` grandchild that clears its environment (no cookie), under a
  parent that stays alive (so the live process tree still links it).

Not covered without cgroups, and so not tested here: a process that clears
its environment *and* whose parent exited before resin looked (it is still
killed when resin itself shuts down).

Survivors are counted with a bounded /proc check (2 s), the promise.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import exists, wait_until

from resin_py.protocol import v1
from resin_py.protocol.terms import OK, Atom
from resin_py.runtime.cgroups import v2_mount
from resin_py.runtime.tree import holders
from resin_py.testing import ResinClient

KINDS = 6
# The escapees (one pid printed per kind), shared with the ExUnit test and the bench.
SCRIPT = (Path(__file__).parent / "escapees.sh").read_text()

# Survivors are counted machine-wide (every process's environment, for the
# cookie) against a 2 s bound: no other test runs meanwhile (tests/conftest.py).
pytestmark = pytest.mark.serial


def start_escapees(client: ResinClient) -> tuple[int, list[int]]:
    spawned = client.spawn(1, "sh", ["-c", SCRIPT])
    assert isinstance(spawned, v1.Spawned)
    lines: list[bytes] = []
    buf = b""
    while len(lines) < KINDS:
        frame = client.expect(lambda f: isinstance(f, v1.Stdout) and f.id == 1)
        assert isinstance(frame, v1.Stdout)
        buf += frame.data
        *done, buf = buf.split(b"\n")
        lines.extend(done)
    pids = [int(line) for line in lines]
    assert all(exists(pid) for pid in pids)
    return spawned.os_pid, pids


def cookie_prefix(client: ResinClient) -> bytes:
    with open(f"/proc/{client.pid}/stat", "rb") as f:
        stat = f.read()
    start = stat[stat.rfind(b")") + 2:].split()[19]
    return f"{client.pid}.".encode() + start + b"."


def assert_none_left(pids: list[int], prefix: bytes) -> None:
    wait_until(lambda: not any(exists(p) and _alive(p) for p in pids), 2.0,
               "every escapee to die")
    wait_until(lambda: not holders(prefix), 2.0, "no process with the cookie")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def cgroups_usable() -> bool:
    """Whether a resin here puts its children in cgroups (runtime/cgroups.py)."""
    with ResinClient() as probe:
        probe.hello()
        out = probe.run(1, "cat", ["/proc/self/cgroup"]).stdout
    return b"/resin-" in out


CGROUPS = cgroups_usable()
# Both containment modes where the machine has cgroups; RESIN_CGROUPS=0
# forces the process-tree fallback.
MODES = ["tree", pytest.param("cgroup", marks=pytest.mark.skipif(
    not CGROUPS, reason="no usable cgroup v2 here"))]


@pytest.fixture(params=MODES)
def contained(request: pytest.FixtureRequest) -> Iterator[ResinClient]:
    env = {**os.environ, "RESIN_CGROUPS": "1" if request.param == "cgroup" else "0"}
    client = ResinClient(env=env)
    assert client.hello() == 1
    yield client
    client.kill()


@pytest.mark.parametrize("action", ["stop", "kill", "leader_exits", "resin_eof",
                                    "resin_sigkill"])
def test_nothing_escapes(contained: ResinClient, action: str) -> None:
    client = contained
    prefix = cookie_prefix(client)
    leader, pids = start_escapees(client)
    assert len(holders(prefix)) >= KINDS  # the cookie is there (env -i one excepted)
    if action == "stop":
        assert client.signal(1, signal.SIGTERM, group=True) == OK
    elif action == "kill":
        assert client.signal(1, signal.SIGKILL, group=True) == OK
    elif action == "leader_exits":
        assert client.close_child_stdin(1) == OK  # `read x` ends, so does sh
    elif action == "resin_eof":
        client.close_resin_stdin()
    else:
        os.kill(client.pid, signal.SIGKILL)  # the sentinel cleans up
    if action in ("stop", "kill", "leader_exits"):
        exit = client.expect(lambda f: isinstance(f, v1.Exit))
        assert isinstance(exit, v1.Exit)
    assert_none_left([leader, *pids], prefix)


@pytest.mark.skipif(not CGROUPS, reason="needs cgroups: see the module docstring")
@pytest.mark.parametrize("action", ["kill", "leader_exits", "resin_sigkill"])
def test_cgroup_catches_what_nothing_else_can(action: str) -> None:
    """A double-forked daemon that clears its environment has no cookie and
    no living parent: only its cgroup ties it to the child."""
    client = ResinClient()
    try:
        assert client.hello() == 1
        script = r"""(setsid env -i sh -c 'echo $$; exec sleep 1007' &); read x"""
        spawned = client.spawn(1, "sh", ["-c", script])
        assert isinstance(spawned, v1.Spawned)
        frame = client.expect(lambda f: isinstance(f, v1.Stdout))
        assert isinstance(frame, v1.Stdout)
        daemon = int(frame.data.split()[0])
        cgroup = Path(f"/proc/{daemon}/cgroup").read_text()
        assert f"/resin-{client.pid}/" in cgroup
        if action == "kill":
            assert client.signal(1, signal.SIGKILL, group=True) == OK
        elif action == "leader_exits":
            assert client.close_child_stdin(1) == OK
        else:
            os.kill(client.pid, signal.SIGKILL)
        wait_until(lambda: not _alive(daemon), 2.0, "the daemon to die")
        if action != "resin_sigkill":
            assert isinstance(client.expect(lambda f: isinstance(f, v1.Exit)), v1.Exit)
            client.close_resin_stdin()
            assert client.wait() == 0
        # resin (or its sentinel) removes its cgroups once they are empty.
        base = cgroup.strip().split("::")[1].rsplit("/", 1)[0]
        wait_until(lambda: not Path(f"{v2_mount()}{base}").exists(), 2.0,
                   "resin's cgroup directory to go")
    finally:
        client.kill()


def controller_available(name: str) -> bool:
    mount = v2_mount()
    if mount is None:
        return False
    return name in Path(mount, "cgroup.controllers").read_text().split()


@pytest.mark.parametrize("mode", MODES)
def test_cgroup_limits_or_a_clear_error(mode: str) -> None:
    env = {**os.environ, "RESIN_CGROUPS": "1" if mode == "cgroup" else "0"}
    with ResinClient(env=env) as client:
        assert client.hello() == 1
        got = client.spawn(1, "cat", ["/proc/self/cgroup"], cgroup=(("pids.max", "7"),))
        if mode == "tree":
            assert got == v1.SpawnError(1, (Atom("cgroup"), Atom("enotsup")))
        elif not controller_available("pids"):
            assert got == v1.SpawnError(1, (Atom("cgroup"), Atom("enoent")))
        else:  # pragma: no cover (a machine with the pids controller in v2)
            assert isinstance(got, v1.Spawned)
            path = client.collect(1).stdout.split(b"::")[1].strip().decode()
            assert Path(f"{v2_mount()}{path}/pids.max").read_text().strip() == "7"
        # Nothing was started, and resin serves on.
        assert client.run(2, "echo", ["ok"]).stdout == b"ok\n"


def test_stop_signal_reaches_escapees_first(client: ResinClient) -> None:
    """A TERM to the group also reaches the escapees that honour it, while
    the leader lives on (it traps TERM): stop is graceful for them too."""
    script = "trap 'echo term' TERM; setsid sh -c 'echo $$; exec sleep 1002' & read x; read y"
    spawned = client.spawn(1, "sh", ["-c", script])
    assert isinstance(spawned, v1.Spawned)
    frame = client.expect(lambda f: isinstance(f, v1.Stdout))
    assert isinstance(frame, v1.Stdout)
    escapee = int(frame.data.split()[0])
    assert client.signal(1, signal.SIGTERM, group=True) == OK
    wait_until(lambda: not _alive(escapee), 2.0, "the setsid sleep to get TERM")
    assert _alive(spawned.os_pid)
    assert client.signal(1, signal.SIGKILL, group=True) == OK


# Started by a subreaper (a service manager, a container's init, another
# resin): the flag survives exec, so resin must clear it before it forks its
# sentinel, or the sentinel would come back to resin as its child (and be
# killed by resin's own shutdown).
_AS_SUBREAPER = (
    "import os, sys; from resin_py import _spawn; _spawn.prctl(36, 1); "
    "os.execv(sys.executable, [sys.executable, '-m', 'resin_py'])"
)


@pytest.mark.parametrize("action", ["resin_eof", "resin_sigkill"])
def test_sentinel_is_not_resins_child_when_resin_starts_as_a_subreaper(action: str) -> None:
    from resin_py.runtime.tree import children_of

    with ResinClient([sys.executable, "-c", _AS_SUBREAPER]) as client:
        assert client.hello() == 1
        prefix = cookie_prefix(client)
        leader, pids = start_escapees(client)
        assert set(children_of(client.pid)) <= {leader, *pids}  # no sentinel among them
        if action == "resin_eof":
            client.close_resin_stdin()
        else:
            os.kill(client.pid, signal.SIGKILL)
        assert_none_left([leader, *pids], prefix)
