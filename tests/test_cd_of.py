"""The `cd_of` spawn option (docs/protocol.md §4.3): the child starts in the
working directory an OS process has at the spawn. Decoding and the runtime's
lookup without a subprocess, then end to end through a real resin."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import both_spawners
from test_sessions import options_after_parts

from resin_py.protocol import v1
from resin_py.protocol.errors import BadArgument, SpawnFailed
from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import Atom, Term
from resin_py.runtime import server as server_module
from resin_py.runtime.server import Resin, cwd_of
from resin_py.spawn import ChildSetup
from resin_py.testing import ResinClient

CD_OF = Atom("cd_of")
# No process has this pid: Linux's pid_max is at most 2^22.
NO_SUCH_PID = 2**31 - 1


def parse_spawn(opts: list[Term]) -> v1.Spawn:
    frame = v1.parse_request((Atom("spawn"), 1, b"pwd", [], opts))
    assert isinstance(frame, v1.Spawn)
    return frame


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize("pid", [1, 4242, 2**31 - 1])
def test_cd_of_decodes_to_the_pid(pid: int) -> None:
    assert parse_spawn([(CD_OF, pid)]).options == v1.SpawnOptions(cd_of=pid)


@pytest.mark.parametrize("value", [0, -1, 2**31, b"42", Atom("self"), [42], (42,)])
def test_cd_of_of_the_wrong_shape_is_named(value: Term) -> None:
    with pytest.raises(BadArgument) as info:
        parse_spawn([(CD_OF, value)])
    assert info.value.what == CD_OF


def test_cd_and_cd_of_together_are_refused_whatever_their_order() -> None:
    both = [(Atom("cd"), b"/tmp"), (CD_OF, 1)]
    for opts in (both, both[::-1]):
        with pytest.raises(BadArgument) as info:
            parse_spawn(opts)  # type: ignore[arg-type]
        assert v1.error_event(info.value) == v1.SpawnError(1, (Atom("badarg"), CD_OF))
    # A bad cd is reported as cd: it is checked first.
    with pytest.raises(BadArgument) as info:
        parse_spawn([(CD_OF, 1), (Atom("cd"), 5)])
    assert info.value.what == Atom("cd")


def test_cd_of_round_trips_through_the_client_encoder() -> None:
    spawn = v1.Spawn(3, b"pwd", (), v1.SpawnOptions(cd_of=77, stdin="null"))
    assert v1.options_term(spawn.options) == [(CD_OF, 77), (Atom("stdin"), Atom("null"))]
    payload = v1.encode_client_frame(spawn)
    assert v1.decode_client_frame(payload) == spawn
    assert v1.decode_client_frame(b"\x10" + encode_term(
        (Atom("spawn"), 3, b"pwd", [], [(CD_OF, 77), (Atom("stdin"), Atom("null"))]))) == spawn


def test_spawn_in_parts_keeps_cd_of() -> None:
    opts = v1.SpawnOptions(cd_of=99, env=((b"A", b"1"),))
    assert options_after_parts(opts) == [opts]


# --- the runtime: reading the directory ----------------------------------------------


def test_cwd_of_reads_the_current_directory_at_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    assert cwd_of(os.getpid()) == os.fsencode(a)
    monkeypatch.chdir(b)
    assert cwd_of(os.getpid()) == os.fsencode(b)


def failure(pid: int) -> SpawnFailed:
    with pytest.raises(SpawnFailed) as info:
        cwd_of(pid)
    return info.value


def test_cwd_of_no_such_process_is_cwd_enoent() -> None:
    exc = failure(NO_SUCH_PID)
    assert (exc.stage, exc.errno) == ("cwd", errno.ENOENT)


def test_cwd_of_a_process_not_ours_to_look_at_is_cwd_eacces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def readlink(path: bytes) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "readlink", readlink)
    exc = failure(1)
    assert (exc.stage, exc.errno) == ("cwd", errno.EACCES)


def test_cwd_of_a_removed_directory_is_cwd_enoent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert os.readlink(f"/proc/{os.getpid()}/cwd").endswith(" (deleted)")
    exc = failure(os.getpid())
    assert (exc.stage, exc.errno) == ("cwd", errno.ENOENT)


def test_cwd_of_a_directory_really_named_deleted_is_that_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / "odd (deleted)"
    odd.mkdir()
    monkeypatch.chdir(odd)
    assert cwd_of(os.getpid()) == os.fsencode(odd)


class RecordingSpawner:
    """Takes the ChildSetup and starts nothing (a failed exec)."""

    def __init__(self) -> None:
        self.setups: list[ChildSetup] = []

    def spawn(self, setup: ChildSetup) -> int:
        self.setups.append(setup)
        raise SpawnFailed("exec", errno.ENOEXEC, "recorded, not started")


@pytest.fixture
def recording_resin() -> Iterator[tuple[Resin, RecordingSpawner]]:
    """A Resin over fakes whose spawns stop at the spawner (real pipes,
    closed again on the failure)."""
    from runtime_fakes import FakeFds, FakePoller

    fds = FakeFds()
    spawner = RecordingSpawner()
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    resin = Resin(0, 1, fds=fds, poller=FakePoller(fds), spawner=spawner, devnull=devnull)
    yield resin, spawner
    os.close(devnull)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_spawner_gets_the_directory_as_a_plain_path(
        recording_resin: tuple[Resin, RecordingSpawner], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    resin, spawner = recording_resin
    monkeypatch.chdir(tmp_path)
    before = open_fds()
    with pytest.raises(SpawnFailed):
        resin.spawn(1, b"/bin/true", (), v1.SpawnOptions(cd_of=os.getpid()))
    assert [s.cwd for s in spawner.setups] == [os.fsencode(tmp_path)]
    with pytest.raises(SpawnFailed):  # cd as before: untouched
        resin.spawn(2, b"/bin/true", (), v1.SpawnOptions(cd=b"/"))
    assert spawner.setups[-1].cwd == b"/"
    assert open_fds() == before


def test_an_unknown_pid_fails_before_the_spawner_is_called(
        recording_resin: tuple[Resin, RecordingSpawner]) -> None:
    resin, spawner = recording_resin
    before = open_fds()
    with pytest.raises(SpawnFailed) as info:
        resin.spawn(1, b"/bin/true", (), v1.SpawnOptions(cd_of=NO_SUCH_PID))
    assert (info.value.stage, info.value.errno) == ("cwd", errno.ENOENT)
    assert spawner.setups == [] and open_fds() == before
    # An executable that is not found is reported first, as with cd.
    with pytest.raises(SpawnFailed) as info:
        resin.spawn(1, b"no-such-program-xyz", (), v1.SpawnOptions(cd_of=NO_SUCH_PID))
    assert info.value.stage == "path"


# --- end to end ------------------------------------------------------------------------


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process (not resin's) whose working directory is tmp_path/sleeper."""
    where = tmp_path / "sleeper"
    where.mkdir()
    proc = subprocess.Popen(["sleep", "1000"], cwd=where)  # cwd set before exec returns
    yield proc
    proc.kill()
    proc.wait()


@both_spawners
def test_child_starts_in_the_directory_of_another_process(
        client: ResinClient, sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    r = client.run(1, "pwd", cd_of=sleeper.pid)
    assert (r.stdout, r.exit) == (os.fsencode(tmp_path / "sleeper") + b"\n", v1.Exit(1, "exit", 0))
    # Relative paths (exec and the child's own) are relative to it, as with cd.
    script = tmp_path / "sleeper" / "here.sh"
    script.write_text("#!/bin/sh\ncat note\n")
    script.chmod(0o755)
    (tmp_path / "sleeper" / "note").write_text("found\n")
    assert client.run(2, "./here.sh", cd_of=sleeper.pid).stdout == b"found\n"


@both_spawners
def test_the_directory_is_the_one_at_the_spawn(
        client: ResinClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # lacca's use: the client's own pid, whose directory changes between spawns.
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert client.run(1, "pwd", cd_of=os.getpid()).stdout == os.fsencode(
            tmp_path / name) + b"\n"


@both_spawners
def test_cd_of_errors(client: ResinClient, sleeper: subprocess.Popen[bytes],
                      tmp_path: Path) -> None:
    cwd_enoent = (Atom("cwd"), Atom("enoent"))
    assert client.spawn(1, "pwd", cd_of=NO_SUCH_PID) == v1.SpawnError(1, cwd_enoent)
    (tmp_path / "sleeper").rmdir()  # the sleeper's directory removed under it
    assert client.spawn(1, "pwd", cd_of=sleeper.pid) == v1.SpawnError(1, cwd_enoent)
    term = (Atom("spawn"), 1, b"pwd", [], [(Atom("cd"), b"/"), (CD_OF, sleeper.pid)])
    client.send_packet(b"\x10" + encode_term(term))
    assert client.recv() == v1.SpawnError(1, (Atom("badarg"), CD_OF))
    # The id is free again after each error.
    assert client.run(1, "true").exit == v1.Exit(1, "exit", 0)


def test_cwd_of_refuses_when_proc_is_not_of_resins_pid_namespace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A resin in a new pid namespace that sees the host's /proc: the pid
    # would name some other process.
    monkeypatch.setattr(server_module, "_proc_ours", [False])
    exc = failure(os.getpid())
    assert (exc.stage, exc.errno) == ("cwd", errno.ESRCH)
    monkeypatch.setattr(server_module, "_proc_ours", [])
    assert cwd_of(os.getpid()) == os.fsencode(os.getcwd())  # here it is ours
