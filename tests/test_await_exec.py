"""`spawned` before the exec (`{await_exec, false}`, docs/protocol.md §4.3.4).

resin's look at a request (`exec_looks_sure`), the C spawner's mode that
returns before the exec (`_spawn.spawn(..., await_exec=False)`, `outcome`,
`pending`), and the protocol end to end through a real resin: an early
`spawned`, then `exit`, or `spawn_error` in place of it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from resin_py import spawn
from resin_py.protocol import v1
from resin_py.protocol.common import StreamKind
from resin_py.protocol.terms import Atom
from resin_py.testing import ResinClient

# A file the kernel takes for an ELF binary by its magic and refuses after it.
CORRUPT_ELF = b"\x7fELF\x02\x01\x01" + b"garbage" * 8


def v1_exit(id: int, code: int) -> v1.Exit:
    return v1.Exit(id, "exit", code)


def _executable(path: Path, content: bytes) -> bytes:
    path.write_bytes(content)
    path.chmod(0o755)
    return os.fsencode(path)


# --- resin's look at the request ------------------------------------------------


def test_exec_looks_sure_for_binaries_and_scripts_it_can_run(tmp_path: Path) -> None:
    assert spawn.exec_looks_sure(b"/bin/true", None, [b"true"], None)
    assert spawn.exec_looks_sure(b"/bin/true", b"/tmp", [b"true"], [b"A=1"])
    script = _executable(tmp_path / "script", b"#!/bin/sh -e\necho hi\n")
    assert spawn.exec_looks_sure(script, None, [b"script"], None)
    # The magic alone: what comes after it is the exec's to find.
    assert spawn.exec_looks_sure(_executable(tmp_path / "elf", CORRUPT_ELF), None, [b"x"], None)


@pytest.mark.parametrize("content", [
    b"no magic at all",  # ENOEXEC, or binfmt_misc: the exec knows
    b"#!/no/such/interpreter\n",  # ENOENT from the exec
    b"#!sh\n",  # a relative interpreter
    b"#!/bin/sh" + b" " * 300,  # no end of line within what the kernel reads
    b"",
])
def test_exec_is_awaited_for_formats_resin_does_not_know(tmp_path: Path, content: bytes) -> None:
    assert not spawn.exec_looks_sure(_executable(tmp_path / "f", content), None, [b"f"], None)


def test_exec_is_awaited_for_what_the_child_or_exec_could_refuse(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(Path("/bin/true").read_bytes())
    plain.chmod(0o644)
    assert not spawn.exec_looks_sure(os.fsencode(plain), None, [b"x"], None)  # EACCES
    assert not spawn.exec_looks_sure(b"/no/such/file", None, [b"x"], None)
    assert not spawn.exec_looks_sure(os.fsencode(tmp_path), None, [b"x"], None)  # a directory
    assert not spawn.exec_looks_sure(b"/bin/true", b"/no/such/dir", [b"x"], None)
    assert not spawn.exec_looks_sure(b"/bin/true", b"/bin/true", [b"x"], None)  # not a dir
    big = [b"x" * 1024] * (spawn.EXEC_ARGS_SURE // 1024)
    assert not spawn.exec_looks_sure(b"/bin/true", None, big, None)  # near E2BIG
    assert not spawn.exec_looks_sure(b"/bin/true", None, [b"x"], big)
    assert not spawn.exec_looks_sure(b"/bin/true", None, [b"x"], None,
                                     {b"K": b"v" * spawn.EXEC_ARGS_SURE})


def test_a_file_rewritten_is_looked_at_again(tmp_path: Path) -> None:
    path = tmp_path / "prog"
    exe = _executable(path, b"#!/bin/sh\n")
    assert spawn.exec_looks_sure(exe, None, [b"p"], None)
    path.write_bytes(b"not a program any more")
    assert not spawn.exec_looks_sure(exe, None, [b"p"], None)
    path.write_bytes(b"#!/bin/sh\n")
    assert spawn.exec_looks_sure(exe, None, [b"p"], None)
    os.chmod(path, stat.S_IRUSR)  # the cache does not outlive the permission
    assert not spawn.exec_looks_sure(exe, None, [b"p"], None)


# --- the C spawner that does not wait --------------------------------------------

ext = pytest.importorskip("resin_py._spawn")
needs_clone3_vm = pytest.mark.skipif(not ext.CLONE3_SHARES_MEMORY,
                                     reason="returns before the exec on x86-64 only")


def _spawn(path: bytes, argv: list[bytes], cwd: bytes | None = None, out: int = -1,
           await_exec: bool = False) -> tuple[int, int, int]:
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        return ext.spawn(path, argv, None, cwd, null, null if out < 0 else out, null,
                         os.getpid(), -1, -1, -1, False, False, -1, -1, None, (), await_exec)
    finally:
        os.close(null)


@needs_clone3_vm
def test_a_child_that_did_not_exec_tells_why_once_reaped(tmp_path: Path) -> None:
    corrupt = _executable(tmp_path / "corrupt", CORRUPT_ELF)
    pid, stage, code = _spawn(corrupt, [b"corrupt"])
    assert (stage, code) == (0, 0)  # returned before the exec
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 127
    assert ext.outcome(pid) == (ext.STAGE_EXEC, errno.ENOEXEC)
    assert ext.outcome(pid) is None  # told once, then forgotten
    pid, stage, _ = _spawn(b"/bin/true", [b"true"], cwd=b"/no/such/dir")
    assert stage == 0
    os.waitpid(pid, 0)
    assert ext.outcome(pid) == (ext.STAGE_CWD, errno.ENOENT)
    # Waiting, the same failures come from spawn() itself, as before.
    assert _spawn(corrupt, [b"corrupt"], await_exec=True)[1:] == (ext.STAGE_EXEC, errno.ENOEXEC)


@needs_clone3_vm
def test_children_that_exec_leave_nothing_held() -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    pids = [_spawn(b"/bin/echo", [b"echo", str(n).encode()], out=w)[0] for n in range(50)]
    os.close(w)
    for pid in pids:
        os.waitpid(pid, 0)
        assert ext.outcome(pid) is None
    with os.fdopen(r, "rb") as out:
        assert sorted(int(line) for line in out.read().split()) == list(range(50))
    assert ext.pending() == 0  # every job block freed once its child exec'd


@needs_clone3_vm
def test_a_child_killed_before_its_exec_is_no_failure() -> None:
    pid, _, _ = _spawn(b"/bin/sleep", [b"sleep", b"100"])
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    assert ext.outcome(pid) is None


# --- end to end through resin ---------------------------------------------------------


def test_an_early_spawned_is_followed_by_the_exit(client: ResinClient) -> None:
    result = client.run(1, "echo", ["early"], await_exec=False)
    assert result.stdout == b"early\n" and result.exit == v1_exit(1, 0)


def test_a_failure_only_the_exec_finds_comes_in_place_of_the_exit(
        client: ResinClient, tmp_path: Path) -> None:
    corrupt = _executable(tmp_path / "corrupt", CORRUPT_ELF)
    answer = client.spawn(1, corrupt, await_exec=False)
    if ext.CLONE3_SHARES_MEMORY:
        assert isinstance(answer, v1.Spawned)
        assert client.recv() == v1.SpawnError(1, Atom("enoexec"))
    else:  # resin waited after all: the same error, as the answer
        assert answer == v1.SpawnError(1, Atom("enoexec"))
    assert client.run(1, "true", await_exec=False).exit == v1_exit(1, 0)  # the id is free


def test_a_program_being_written_fails_late_with_etxtbsy(
        client: ResinClient, tmp_path: Path) -> None:
    path = tmp_path / "busy"
    exe = _executable(path, Path("/bin/true").read_bytes())
    with open(path, "ab"):  # open for writing: execve refuses it
        first = client.spawn(1, exe, await_exec=False)
        final = client.recv() if isinstance(first, v1.Spawned) else first
    assert final == v1.SpawnError(1, Atom("etxtbsy"))


def test_errors_resin_can_see_still_answer_the_spawn(
        client: ResinClient, tmp_path: Path) -> None:
    noexec = _executable(tmp_path / "noexec", b"\x00\x01garbage")
    cases: list[tuple[str | bytes, dict[str, object], v1.SpawnError]] = [
        ("/no/such/file", {}, v1.SpawnError(1, Atom("enoent"))),
        (noexec, {}, v1.SpawnError(1, Atom("enoexec"))),
        ("true", {"cd": "/no/such/dir"}, v1.SpawnError(1, (Atom("cwd"), Atom("enoent")))),
    ]
    for exe, extra, error in cases:
        assert client.spawn(1, exe, await_exec=False, **extra) == error  # type: ignore[arg-type]


def test_a_direct_pipe_of_a_child_that_never_ran_holds_nothing_back(
        client: ResinClient, tmp_path: Path) -> None:
    # Empty and without a writer: the spawn_error comes at once (the client
    # may not even get to open the pipe before it, and then must not).
    corrupt = _executable(tmp_path / "corrupt", CORRUPT_ELF)
    answer = client.spawn(1, corrupt, await_exec=False, direct=(StreamKind.STDOUT,))
    if ext.CLONE3_SHARES_MEMORY:
        assert isinstance(answer, v1.Spawned) and answer.direct
        assert client.recv() == v1.SpawnError(1, Atom("enoexec"))
    else:
        assert answer == v1.SpawnError(1, Atom("enoexec"))
