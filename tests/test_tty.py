"""End to end through a real resin: the `pty`, `user`/`group` and `rlimits`
spawn options and the `resize` request (docs/protocol.md §4.3), with both
spawners."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
from conftest import RESIN_COMMAND, both_spawners, proc_state, wait_gone, wait_until

from resin_py.protocol import v1
from resin_py.protocol.terms import OK, Atom
from resin_py.testing import ResinClient

PTY = (24, 80)
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="switching user needs a root resin")


def read_until(client: ResinClient, id: int, needle: bytes) -> bytes:
    """Output of `id` up to and including the first `needle`."""
    out = b""
    while needle not in out:
        frame = client.expect(lambda f: isinstance(f, v1.Stdout | v1.Exit) and f.id == id)
        assert isinstance(frame, v1.Stdout), f"exited before {needle!r}; output: {out!r}"
        out += frame.data
    return out


def spawn_ok(client: ResinClient, id: int, *cmd: str, **opts: object) -> int:
    spawned = client.spawn(id, cmd[0], cmd[1:], **opts)  # type: ignore[misc]
    assert isinstance(spawned, v1.Spawned), spawned
    return spawned.os_pid


# --- pty -------------------------------------------------------------------------


@both_spawners
def test_tty_prints_a_device_path(client: ResinClient) -> None:
    r = client.run(1, "tty", pty=PTY)
    assert r.exit == v1.Exit(1, "exit", 0)
    assert re.fullmatch(rb"/dev/pts/\d+\r\n", r.stdout), r.stdout  # ONLCR: \r\n


@both_spawners
def test_stty_size_reports_the_size_set(client: ResinClient) -> None:
    assert client.run(1, "stty", ["size"], pty=(33, 101)).stdout == b"33 101\r\n"


@both_spawners
def test_stdin_stdout_stderr_are_the_controlling_terminal(client: ResinClient) -> None:
    script = ("import os, sys; print(sys.stdin.isatty(), sys.stdout.isatty(), "
              "sys.stderr.isatty(), os.getsid(0) == os.getpid(), "
              "os.tcgetpgrp(0) == os.getpgrp(), file=sys.stderr)")
    r = client.run(1, sys.executable, ["-c", script], pty=PTY)
    assert r.stdout == b"True True True True True\r\n"  # stderr comes as stdout
    assert r.stderr == b""


@both_spawners
def test_resize_sends_sigwinch_with_the_new_size(client: ResinClient) -> None:
    script = ("import os, signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH}); "
              "print('ready', flush=True); signal.sigwait({signal.SIGWINCH}); "
              "s = os.get_terminal_size(0); print('size', s.lines, s.columns, flush=True)")
    spawn_ok(client, 1, sys.executable, "-c", script, pty=PTY)
    read_until(client, 1, b"ready\r\n")  # the whole line: the next read is the answer
    assert client.resize(1, 50, 132) == OK
    assert read_until(client, 1, b"\n").strip() == b"size 50 132"
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)


@both_spawners
def test_resize_errors(client: ResinClient) -> None:
    assert client.resize(5, 10, 10) == (Atom("error"), Atom("no_process"))
    spawn_ok(client, 1, "cat")
    assert client.resize(1, 10, 10) == (Atom("error"), Atom("enotty"))


@both_spawners
def test_an_interactive_shell_driven_by_write_and_read(client: ResinClient) -> None:
    spawn_ok(client, 1, "sh", "-i", pty=PTY, env={"PS1": "$ ", "ENV": ""})
    read_until(client, 1, b"$ ")
    assert client.write(1, b"echo $((6 * 7))\n") == v1.AckStatus.WRITTEN
    out = read_until(client, 1, b"42\r\n$ ")
    assert out == b"echo $((6 * 7))\r\n42\r\n$ "  # the terminal echoes the input
    client.write(1, b"exit 3\n")
    assert client.collect(1).exit == v1.Exit(1, "exit", 3)


@both_spawners
def test_close_stdin_sends_the_eof_character(client: ResinClient) -> None:
    spawn_ok(client, 1, "sh", "-c", "stty -echo; echo ready; cat; echo done; exec sleep 1000",
             pty=PTY)
    read_until(client, 1, b"ready\r\n")
    client.write(1, b"one line\n")
    assert client.close_child_stdin(1) == OK
    assert read_until(client, 1, b"done\r\n") == b"one line\r\ndone\r\n"
    assert client.write(1, b"more") == v1.AckStatus.CLOSED
    assert client.signal(1, signal.SIGKILL, group=True) == OK
    assert client.collect(1).exit == v1.Exit(1, "signal", signal.SIGKILL)


@both_spawners
def test_pty_output_obeys_credit(client: ResinClient) -> None:
    spawn_ok(client, 1, "sh", "-c", "stty raw -echo; head -c 100000 /dev/zero", pty=PTY,
             credit=1000)
    got = 0
    while got < 1000:
        frame = client.expect(lambda f: isinstance(f, v1.Stdout) and f.id == 1)
        assert isinstance(frame, v1.Stdout)
        got += len(frame.data)
    assert got == 1000  # no more than granted
    client.send(v1.Credit(1, v1.StreamKind.STDOUT, 2**32 - 1))
    r = client.collect(1)
    assert got + len(r.stdout) == 100000 and r.exit == v1.Exit(1, "exit", 0)


@both_spawners
def test_pty_refuses_stdin_null_and_discarded_stderr(client: ResinClient) -> None:
    for id, opts in [(1, {"stdin": "null"}), (2, {"stderr": "discard"})]:
        failed = client.spawn(id, "true", pty=PTY, **opts)  # type: ignore[arg-type]
        assert failed == v1.SpawnError(id, (Atom("badarg"), Atom("pty")))


@both_spawners
def test_pty_child_and_its_background_job_die_when_resin_is_killed(
        client: ResinClient) -> None:
    spawn_ok(client, 1, "sh", "-c", "sleep 1000 & echo bg $!; sleep 1000", pty=PTY)
    out = read_until(client, 1, b"\n")
    background = int(out.split()[1])
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    wait_until(lambda: proc_state(background) in (None, "Z"), what="the background job to die")


@both_spawners
def test_pty_leader_exit_kills_what_is_left(client: ResinClient) -> None:
    spawn_ok(client, 1, "sh", "-c", "setsid sleep 1000 & echo bg $!; exit 0", pty=PTY)
    background = int(read_until(client, 1, b"\n").split()[1])
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)
    wait_gone(background)


# --- user / group ----------------------------------------------------------------


def expected_groups(user: str) -> list[int]:
    entry = pwd.getpwnam(user)
    return sorted(os.getgrouplist(user, entry.pw_gid))


@needs_root
@both_spawners
def test_user_nobody(client: ResinClient) -> None:
    r = client.run(1, "sh", ["-c", "id -u; id -g; id -G"], user="nobody", cd="/")
    uid, gid, groups = r.stdout.decode().splitlines()
    nobody = pwd.getpwnam("nobody")
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert sorted(map(int, groups.split())) == expected_groups("nobody")
    # By number too.
    r = client.run(2, "id", ["-u"], user=nobody.pw_uid, cd="/")
    assert r.stdout == f"{nobody.pw_uid}\n".encode()


@needs_root
@both_spawners
def test_supplementary_groups_are_the_users(client: ResinClient) -> None:
    member = next((m for g in grp.getgrall() for m in g.gr_mem if _has_passwd(m)), None)
    if member is None:
        pytest.skip("no user on this machine is listed in /etc/group")
    r = client.run(1, "id", ["-G"], user=member, cd="/")
    assert sorted(map(int, r.stdout.split())) == expected_groups(member)
    assert len(expected_groups(member)) > 1


def _has_passwd(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@needs_root
@both_spawners
def test_group_option(client: ResinClient) -> None:
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid)
    r = client.run(1, "sh", ["-c", "id -u; id -g; id -G"], group=nogroup.gr_name, cd="/")
    assert r.stdout.decode().split() == ["0", str(nogroup.gr_gid), str(nogroup.gr_gid)]
    r = client.run(2, "id", ["-g"], user="nobody", group=0, cd="/")
    assert r.stdout == b"0\n"


@needs_root
@both_spawners
def test_unknown_user_or_group(client: ResinClient) -> None:
    assert client.spawn(1, "true", user="no-such-user-here") == v1.SpawnError(
        1, (Atom("user"), Atom("enoent")))
    assert client.spawn(2, "true", group="no-such-group-here") == v1.SpawnError(
        2, (Atom("group"), Atom("enoent")))


@needs_root
def test_a_resin_that_is_not_root_refuses_to_switch_user(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    nobody = pwd.getpwnam("nobody")
    command = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
               "--clear-groups", "--", *RESIN_COMMAND]
    with ResinClient(command, cwd="/") as client:
        assert client.hello() == 1
        marker = tmp_path / "started"  # written if anything ran as root
        assert client.spawn(1, "sh", ["-c", f"touch {marker}"], user="root", cd="/") == \
            v1.SpawnError(1, (Atom("user"), Atom("eperm")))
        assert client.spawn(2, "true", group=0, cd="/") == v1.SpawnError(
            2, (Atom("group"), Atom("eperm")))
        assert not marker.exists()
        # Raising a hard limit needs privilege too.
        assert client.spawn(3, "true", rlimits=(("nofile", 10, 2**40),), cd="/") == \
            v1.SpawnError(3, (Atom("rlimit"), Atom("eperm")))
        assert client.run(4, "id", ["-u"], cd="/").stdout == f"{nobody.pw_uid}\n".encode()


@needs_root
@both_spawners
def test_user_child_dies_when_resin_is_killed(client: ResinClient) -> None:
    # Switching uid clears the death signal: the spawners set it again.
    child = spawn_ok(client, 1, "sleep", "1000", user="nobody", cd="/")
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    wait_until(lambda: proc_state(child) in (None, "Z"), what="the child to die")


# --- rlimits ---------------------------------------------------------------------


def limits(client: ResinClient, id: int, *rlimits: tuple[str, int | None, int | None]
           ) -> dict[str, tuple[str, str]]:
    r = client.run(id, "cat", ["/proc/self/limits"], rlimits=rlimits)
    assert r.exit == v1.Exit(id, "exit", 0), r
    table = {}
    for line in r.stdout.decode().splitlines()[1:]:
        fields = re.split(r"\s{2,}", line.strip())
        table[fields[0]] = (fields[1], fields[2])
    return table


ROWS = {"nofile": "Max open files", "as": "Max address space", "cpu": "Max cpu time",
        "core": "Max core file size", "nproc": "Max processes", "fsize": "Max file size",
        "stack": "Max stack size", "memlock": "Max locked memory",
        "sigpending": "Max pending signals", "msgqueue": "Max msgqueue size",
        "nice": "Max nice priority", "rtprio": "Max realtime priority",
        "rttime": "Max realtime timeout", "data": "Max data size",
        "rss": "Max resident set", "locks": "Max file locks"}


@both_spawners
@pytest.mark.parametrize(("name", "soft", "hard"), [
    ("nofile", 100, 200), ("as", 2**30, 2**31), ("cpu", 10, 20), ("core", 0, 0),
    ("nproc", 500, 1000), ("fsize", 2**20, None), ("stack", 2**22, 2**23),
    ("memlock", 65536, 65536), ("sigpending", 100, 100), ("msgqueue", 4096, 8192),
    ("nice", 0, 0), ("rtprio", 0, 0), ("rttime", 1000, 2000), ("data", 2**30, None),
    ("rss", 2**30, None), ("locks", 10, 20),
])
def test_each_rlimit_is_applied(client: ResinClient, name: str, soft: int,
                                hard: int | None) -> None:
    row = limits(client, 1, (name, soft, hard))[ROWS[name]]
    assert row == (str(soft), "unlimited" if hard is None else str(hard))


@both_spawners
def test_several_rlimits_and_a_bad_one(client: ResinClient) -> None:
    table = limits(client, 1, ("nofile", 64, 64), ("core", 0, 0), ("cpu", 5, None))
    assert table["Max open files"] == ("64", "64")
    assert table["Max core file size"] == ("0", "0")
    assert table["Max cpu time"] == ("5", "unlimited")
    bad = client.spawn(2, "true", rlimits=(("nofile", 10, 5),))
    assert bad == v1.SpawnError(2, (Atom("badarg"), Atom("rlimits")))


@both_spawners
def test_an_rlimit_the_exec_cannot_live_with(client: ResinClient) -> None:
    # 1 MiB of address space: the kernel refuses to load python (or the
    # program dies at once); either way resin reports it and goes on.
    r = client.spawn(1, sys.executable, ["-c", "pass"], rlimits=(("as", 2**20, 2**20),))
    if isinstance(r, v1.Spawned):
        exit = client.collect(1).exit
        assert exit is not None and exit != v1.Exit(1, "exit", 0)
    else:
        assert r.reason in (Atom("enomem"), Atom("e2big"), Atom("efault"))
    assert client.run(2, "true").exit == v1.Exit(2, "exit", 0)



@both_spawners
def test_the_largest_finite_rlimit(client: ResinClient) -> None:
    r = client.run(1, "sh", ["-c", "ulimit -f"], rlimits=(("fsize", 2**63 - 1, None),))
    assert r.exit == v1.Exit(1, "exit", 0), r


@pytest.mark.serial
@needs_root
@both_spawners
def test_nproc_is_enforced_for_the_user(client: ResinClient) -> None:
    # One process allowed for nobody: the shell itself; its fork fails. RLIMIT_NPROC
    # counts every process of the user: one of an earlier test still on its way
    # out (killed, not yet reaped) would make the spawn itself fail (eagain).
    nobody = pwd.getpwnam("nobody").pw_uid
    wait_until(lambda: not _processes_of(nobody), timeout=30, what="no process of nobody")
    r = client.run(1, "sh", ["-c", "sleep 0 & wait; echo forked"], cd="/", user="nobody",
                   rlimits=(("nproc", 1, 1),))
    assert r.stdout == b"" and b"fork" in r.stderr.lower(), r


@pytest.mark.heavy
def test_cpu_is_enforced(client: ResinClient) -> None:
    # 1 s of CPU time: the kernel sends SIGXCPU at the soft limit.
    r = client.run(1, "sh", ["-c", "while :; do :; done"], rlimits=(("cpu", 1, 2),))
    assert r.exit == v1.Exit(1, "signal", signal.SIGXCPU)


def _processes_of(uid: int) -> list[int]:
    """The pids of the processes that run as `uid` now."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                pass  # gone meanwhile
    return pids
