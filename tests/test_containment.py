"""No orphans, no zombies, no leaked descriptors."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path

import pytest
from conftest import (
    SPAWNERS,
    both_spawners,
    children_of,
    exists,
    proc_state,
    resin_env,
    wait_gone,
    wait_until,
)

from resin_py.protocol import v1
from resin_py.protocol.terms import OK, Atom
from resin_py.runtime.cgroups import CGROUP_SPARES
from resin_py.testing import ResinClient


def spawn_pid(client: ResinClient, id: int, *cmd: str, **opts: object) -> int:
    spawned = client.spawn(id, cmd[0], cmd[1:], **opts)
    assert isinstance(spawned, v1.Spawned), spawned
    return spawned.os_pid


def first_line_pid(client: ResinClient, id: int) -> int:
    frame = client.expect(lambda f: isinstance(f, v1.Stdout) and f.id == id)
    assert isinstance(frame, v1.Stdout)
    return int(frame.data.split()[0])


@both_spawners
def test_grandchild_dies_with_its_group_on_kill(client: ResinClient) -> None:
    spawn_pid(client, 1, "sh", "-c", "sleep 1000 & echo $!; sleep 1000")
    grandchild = first_line_pid(client, 1)
    assert client.signal(1, signal.SIGKILL, group=True) == OK
    assert client.collect(1).exit == v1.Exit(1, "signal", 9)
    wait_gone(grandchild)


@both_spawners
def test_group_is_killed_when_the_leader_exits(client: ResinClient) -> None:
    spawn_pid(client, 1, "sh", "-c", "sleep 1000 & echo $!; exit 0")
    grandchild = first_line_pid(client, 1)
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)
    wait_gone(grandchild)


@pytest.mark.serial
@both_spawners
def test_stdin_eof_kills_everything_and_exits_fast(client: ResinClient) -> None:
    leaders = [spawn_pid(client, i, "sh", "-c", "sleep 1000 & echo $!; sleep 1000")
               for i in range(5)]
    members = [first_line_pid(client, i) for i in range(5)]
    # One that escaped its group with setsid: only the subreaper sweep finds it.
    spawn_pid(client, 9, "sh", "-c", "setsid sleep 1000 & echo $!; sleep 1000")
    escaped = first_line_pid(client, 9)
    started = time.monotonic()
    client.close_resin_stdin()
    assert client.wait(timeout=1) == 0
    assert time.monotonic() - started < 1
    exits = []
    while True:
        try:
            frame = client.recv(timeout=1)
        except EOFError:
            break
        if isinstance(frame, v1.Exit):
            exits.append(frame)
    assert sorted(e.id for e in exits) == [0, 1, 2, 3, 4, 9]
    for pid in [*leaders, *members, escaped]:
        assert not exists(pid)


@pytest.mark.parametrize("spawner", SPAWNERS)
def test_orphans_are_reaped(spawner: str) -> None:
    # The setsid'd sleep leaves the group and clears its environment (so
    # nothing ties it to child 1 once its parent is gone: see runtime/tree.py;
    # in the process-tree mode: a cgroup would tie it, test_escape.py); when
    # its parent exits it is reparented to resin (the subreaper), which must
    # reap it when it dies.
    client = ResinClient(env={**(resin_env(spawner) or {}), "RESIN_CGROUPS": "0"})
    assert client.hello() == 1
    spawn_pid(client, 1, "sh", "-c",
              'setsid env -i sh -c "echo \\$\\$; exec sleep 1000 >&- 2>&-" & read x; exit 0')
    orphan = first_line_pid(client, 1)  # printed after setsid: it has left the group
    assert client.close_child_stdin(1) == OK  # now let the leader exit
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)
    assert exists(orphan)
    os.kill(orphan, signal.SIGKILL)
    wait_gone(orphan)  # gone from /proc: reaped, not a zombie
    assert client.run(2, "/bin/echo", ["ok"]).stdout == b"ok\n"
    client.kill()


def test_escaped_descendant_dies_with_its_leader(client: ResinClient) -> None:
    # The same, keeping its environment: resin attributes it by its cookie
    # and kills it when the leader exits, then reaps it.
    spawn_pid(client, 1, "sh", "-c",
              'setsid sh -c "echo \\$\\$; exec sleep 1000 >&- 2>&-" & read x; exit 0')
    orphan = first_line_pid(client, 1)
    assert client.close_child_stdin(1) == OK
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)
    wait_gone(orphan)


@both_spawners
def test_children_die_when_resin_is_killed(client: ResinClient) -> None:
    child = spawn_pid(client, 1, "sleep", "1000")
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    # Dead is enough: reaping it is now the job of init, which may be slow.
    wait_until(lambda: proc_state(child) in (None, "Z"), what="the child to die")


@both_spawners
def test_children_get_default_signal_dispositions(client: ResinClient) -> None:
    # resin ignores SIGINT and SIGPIPE; its children must not inherit that.
    r = client.run(1, "sh", ["-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"])
    masks = dict(line.split(b":\t") for line in r.stdout.splitlines())
    # Signals 32 and 33 belong to glibc (NPTL): no process can change their
    # disposition through libc, so an ignore inherited from whoever started
    # resin stays; every signal a program can use must be at its default.
    glibc_reserved = (1 << 31) | (1 << 32)
    assert int(masks[b"SigBlk"], 16) == 0
    assert int(masks[b"SigIgn"], 16) & ~glibc_reserved == 0


@both_spawners
def test_children_get_their_own_session_and_fds(client: ResinClient) -> None:
    r = client.run(1, "sh", ["-c", "echo $$; ps -o pid=,pgid=,sid= -p $$; ls /proc/$$/fd"])
    lines = r.stdout.decode().split("\n")
    pid = lines[0]
    assert lines[1].split() == [pid, pid, pid]
    assert sorted(lines[2:-1]) == ["0", "1", "2", "255"] or sorted(lines[2:-1]) == [
        "0", "1", "2"]


@pytest.mark.heavy
@both_spawners
def test_thousand_spawn_exit_cycles_leak_nothing(client: ResinClient) -> None:
    assert client.run(0, "true").exit == v1.Exit(0, "exit", 0)
    baseline = settled_fd_count(client)
    batch = 50
    for start in range(0, 1000, batch):
        ids = range(start + 1, start + batch + 1)
        for i in ids:
            client.send_spawn(i, "true")
        for i in ids:
            assert client.collect(i).exit == v1.Exit(i, "exit", 0)
    assert children_of(client.pid) == []  # no zombie left unreaped
    assert settled_fd_count(client) == baseline


def settled_fd_count(client: ResinClient) -> int:
    """resin's descriptors once it has done what it does after answering
    (a request answered later comes after that): spare cgroups are kept
    open for the next children (at most CGROUP_SPARES of them, not
    counted here), and output pipes for the next child are made ahead."""
    client.signal(10**6, 0)  # answered no_process, in a later turn of resin's loop
    links = []
    for fd in Path(f"/proc/{client.pid}/fd").iterdir():
        with suppress(OSError):
            links.append(os.readlink(fd))
    cgroups = [x for x in links if x.startswith("/sys/fs/cgroup") and "/resin-" in x]
    assert len(cgroups) <= CGROUP_SPARES
    return len(links) - len(cgroups)


@pytest.mark.serial
@both_spawners
def test_v0_stdin_eof_kills_grandchildren(resin: ResinClient) -> None:
    from resin_py.protocol import v0

    resin.v0_send(v0.StartProcess("sh", ("-c", "sleep 1000 & echo $!; sleep 1000")))
    msg = resin.v0_recv()
    assert isinstance(msg, v0.DataOut)
    grandchild = int(msg.data)
    resin.close_resin_stdin()
    assert resin.v0_recv() == v0.ExitStatus(None)
    assert resin.wait(timeout=1) == 0
    assert not exists(grandchild)


def nofile_limits(pid: int) -> list[str]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    return line.split()[3:5]


def nr_open() -> int:
    return int(Path("/proc/sys/fs/nr_open").read_text())


def can_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE (bit 24) is in this process's effective set (and so in
    resin's: it runs as the same user)."""
    status = Path("/proc/self/status").read_text()
    eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(eff.split()[1], 16) & (1 << 24))


@pytest.mark.parametrize("spawner", SPAWNERS)
def test_nofile_limit_raised_for_resin_restored_for_children(spawner: str) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256")
    command = ["sh", "-c", f'ulimit -Sn 256 && exec "{sys.executable}" -m resin_py']
    with ResinClient(command, env=resin_env(spawner)) as client:
        assert client.hello() == 1
        r = client.run(1, "sh", ["-c", "echo $(ulimit -Sn) $(ulimit -Hn)"])
        assert r.stdout == f"256 {hard}\n".encode()  # the original limits
        # With CAP_SYS_RESOURCE resin raises the hard limit too, up to fs.nr_open;
        # without, the soft limit up to the hard one.
        raised = nr_open() if can_raise_hard_limits() else hard
        assert nofile_limits(client.pid) == [str(raised), str(raised)]


def test_nofile_soft_limit_raised_when_the_hard_one_cannot_be() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not can_raise_hard_limits() or shutil.which("setpriv") is None:
        pytest.skip("needs CAP_SYS_RESOURCE, and setpriv to drop it")
    if hard >= nr_open():
        pytest.skip("the hard limit is already at fs.nr_open")
    command = ["setpriv", "--bounding-set", "-sys_resource", "--", "sh", "-c",
               f'ulimit -Sn 256 && exec "{sys.executable}" -m resin_py']
    with ResinClient(command) as client:
        assert client.hello() == 1
        assert nofile_limits(client.pid) == [str(hard), str(hard)]
        r = client.run(1, "sh", ["-c", "echo $(ulimit -Sn) $(ulimit -Hn)"])
        assert r.stdout == f"256 {hard}\n".encode()


@pytest.mark.parametrize("spawner", SPAWNERS)
def test_descriptor_scarcity(spawner: str) -> None:
    """When no descriptors are left, spawn says emfile; every child that did
    start still gets its input, its output and its exit, and nothing leaks."""
    command = ["sh", "-c", f'ulimit -n 64 && exec "{sys.executable}" -m resin_py']
    with ResinClient(command, env=resin_env(spawner)) as client:
        assert client.hello() == 1
        assert client.run(0, "true").exit == v1.Exit(0, "exit", 0)
        baseline = settled_fd_count(client)
        ids: list[int] = []
        for i in range(1, 40):
            spawned = client.spawn(
                i, "sh", ["-c", f"read x; cat >/dev/null; echo {i}:$x; exit {i % 5}"])
            if isinstance(spawned, v1.SpawnError):
                assert spawned.reason == Atom("emfile")
                break
            ids.append(i)
        assert len(ids) > 10
        for i in ids:  # stdin frames and close_stdin reach both kinds of children
            assert client.write(i, b"go\n") == v1.AckStatus.WRITTEN
            assert client.close_child_stdin(i) == OK
        for i in ids:
            r = client.collect(i)
            assert (r.stdout, r.exit) == (f"{i}:go\n".encode(), v1.Exit(i, "exit", i % 5))
        assert children_of(client.pid) == []
        assert settled_fd_count(client) == baseline
        assert client.run(99, "echo", ["still fine"]).stdout == b"still fine\n"


def test_thousand_sleeping_children(client: ResinClient,
                                    alone: Callable[[], AbstractContextManager[None]]) -> None:
    """Scale smoke test: 1,000 children at once, 2 descriptors each (stdout
    and stderr: `stdin: null` needs no pipe), all gone on EOF (timed: with
    no other test running)."""
    assert client.run(0, "true").exit == v1.Exit(0, "exit", 0)
    baseline = settled_fd_count(client)
    n = 1000
    pids = []
    for start in range(1, n + 1, 100):
        ids = range(start, start + 100)
        for i in ids:
            client.send_spawn(i, "sleep", ["1000"], stdin="null")
        for i in ids:
            frame = client.expect(lambda f, i=i: isinstance(f, v1.Spawned | v1.SpawnError)
                                  and f.id == i)
            assert isinstance(frame, v1.Spawned), frame
            pids.append(frame.os_pid)
    assert len(children_of(client.pid)) == n
    assert settled_fd_count(client) == baseline + 2 * n
    with alone():
        started = time.monotonic()
        client.close_resin_stdin()
        assert client.wait(timeout=1) == 0
        assert time.monotonic() - started < 1
        wait_until(lambda: not any(exists(pid) for pid in pids), what="every child to vanish")
