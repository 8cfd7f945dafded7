"""The pty, identity and rlimits additions without a subprocess: option and
request decoding, the v1 session's resize, the runtime's close_stdin on a
terminal (over the fake descriptors), and resolving user and group."""

from __future__ import annotations

import errno
import os
import pwd

import pytest
from runtime_fakes import Rig
from test_sessions import FakeCore, options_after_parts, spawned, v1_send, v1_session

from resin_py.protocol import v1
from resin_py.protocol.errors import BadArgument, SpawnFailed
from resin_py.protocol.etf import encode_term
from resin_py.protocol.session import StdinResult
from resin_py.protocol.terms import INFINITY, OK, Atom, Term
from resin_py.protocol.v1_session import V1Session
from resin_py.runtime import server
from resin_py.runtime.children import Child


def parse_spawn(opts: list[Term]) -> v1.Spawn:
    frame = v1.parse_request((Atom("spawn"), 1, b"sh", [], opts))
    assert isinstance(frame, v1.Spawn)
    return frame


def badarg(opts: list[Term]) -> Term:
    with pytest.raises(BadArgument) as info:
        parse_spawn(opts)
    return info.value.what


# --- decoding ------------------------------------------------------------------------


def test_spawn_options_decode() -> None:
    o = parse_spawn([
        (Atom("pty"), (24, 80)), (Atom("user"), b"nobody"), (Atom("group"), 0),
        (Atom("rlimits"), [(Atom("nofile"), 64), (Atom("cpu"), (5, INFINITY)),
                           (Atom("core"), (0, 0)), (Atom("nofile"), 1)]),
    ]).options
    assert o.pty == (24, 80) and o.user == b"nobody" and o.group == 0
    # A single limit sets both; the first occurrence of a name wins.
    assert o.rlimits == (("nofile", 64, 64), ("cpu", 5, None), ("core", 0, 0))


@pytest.mark.parametrize(("opts", "what"), [
    ([(Atom("pty"), (0, 80))], "pty"),
    ([(Atom("pty"), (24, 65536))], "pty"),
    ([(Atom("pty"), [24, 80])], "pty"),
    ([(Atom("pty"), (24, 80)), (Atom("stdin"), Atom("null"))], "pty"),
    ([(Atom("pty"), (24, 80)), (Atom("stderr"), Atom("discard"))], "pty"),
    ([(Atom("user"), b"")], "user"),
    ([(Atom("user"), -1)], "user"),
    ([(Atom("user"), 2**32 - 1)], "user"),
    ([(Atom("group"), b"a\0b")], "group"),
    ([(Atom("rlimits"), [(Atom("bogus"), 1)])], "rlimits"),
    ([(Atom("rlimits"), [(Atom("nofile"), (10, 5))])], "rlimits"),
    ([(Atom("rlimits"), [(Atom("nofile"), (INFINITY, 5))])], "rlimits"),
    ([(Atom("rlimits"), [(Atom("nofile"), -1)])], "rlimits"),
    ([(Atom("rlimits"), [(Atom("nofile"), 2**63)])], "rlimits"),
    ([(Atom("rlimits"), (Atom("nofile"), 1))], "rlimits"),
])
def test_bad_spawn_options(opts: list[Term], what: str) -> None:
    assert badarg(opts) == Atom(what)


def test_pty_allows_merged_stderr() -> None:
    o = parse_spawn([(Atom("pty"), (1, 1)), (Atom("stderr"), Atom("stdout"))]).options
    assert o.pty == (1, 1)


def test_options_round_trip() -> None:
    o = v1.SpawnOptions(pty=(10, 20), user=b"nobody", group=7,
                        rlimits=(("as", 1 << 30, None), ("core", 0, 0)))
    term = (Atom("spawn"), 1, b"sh", [], v1.options_term(o))
    assert parse_spawn(term[4]).options == o  # type: ignore[arg-type]


def test_resize_request() -> None:
    frame = v1.Resize(3, Atom("r"), 50, 132)
    payload = v1.encode_client_frame(frame)
    assert payload == bytes((v1.CONTROL,)) + encode_term(
        (Atom("resize"), 3, Atom("r"), 50, 132))
    assert v1.decode_client_frame(payload) == frame
    for rows, cols, what in [(0, 1, "rows"), (1, 65536, "cols"), (b"x", 1, "rows")]:
        with pytest.raises(BadArgument) as info:
            v1.parse_request((Atom("resize"), 3, Atom("r"), rows, cols))
        assert info.value.what == Atom(what) and info.value.ref == Atom("r")


# --- the session -----------------------------------------------------------------------


class ResizingCore(FakeCore):
    resize_error: OSError | None = None

    def resize(self, child: object, rows: int, cols: int) -> None:
        self.calls.append(("resize", getattr(child, "id", None), rows, cols))
        if self.resize_error is not None:
            raise self.resize_error


def resizing_session() -> tuple[ResizingCore, V1Session]:
    core = ResizingCore()
    session = V1Session(core)
    session.hello(1)
    core.frames()
    return core, session


def test_session_resize_replies_and_maps_errors() -> None:
    core, session = resizing_session()
    v1_send(session, v1.Resize(1, 7, 10, 20))
    assert core.frames() == [v1.Reply(1, 7, (Atom("error"), Atom("no_process")))]
    spawned(core, session, 1)  # type: ignore[arg-type]
    v1_send(session, v1.Resize(1, 8, 10, 20))
    assert core.frames() == [v1.Reply(1, 8, OK)]
    assert core.calls[-1] == ("resize", 1, 10, 20)
    core.resize_error = OSError(errno.ENOTTY, "not a tty")
    v1_send(session, v1.Resize(1, 9, 10, 20))
    assert core.frames() == [v1.Reply(1, 9, (Atom("error"), Atom("enotty")))]
    session.on_packet(bytes((v1.CONTROL,)) + encode_term((Atom("resize"), 1, 5, 0, 20)))
    assert core.frames() == [v1.Reply(1, 5, (Atom("error"), (Atom("badarg"), Atom("rows"))))]


@pytest.mark.parametrize(("stage", "reason"), [
    ("user", (Atom("user"), Atom("eperm"))), ("group", (Atom("group"), Atom("enoent"))),
    ("rlimit", (Atom("rlimit"), Atom("eperm"))), ("pty", (Atom("pty"), Atom("enoent"))),
])
def test_staged_spawn_errors(stage: str, reason: Term) -> None:
    core, session = v1_session()
    code = errno.ENOENT if reason[1] == Atom("enoent") else errno.EPERM  # type: ignore[index]
    core.spawn_error = SpawnFailed(stage, code, "x")  # type: ignore[arg-type]
    v1_send(session, v1.Spawn(3, b"x"))
    assert core.frames() == [v1.SpawnError(3, reason)]


def test_spawn_in_parts_keeps_the_new_options() -> None:
    opts = v1.SpawnOptions(pty=(3, 4), user=5, group=6, rlimits=(("core", 0, 0),))
    assert options_after_parts(opts) == [opts]


# --- the runtime: close_stdin on a terminal ---------------------------------------------


def test_close_stdin_writes_the_eof_character_first() -> None:
    rig = Rig()
    child = rig.spawn(1, stderr=False)
    rig.children.write_stdin(child, b"abc")
    rig.children.close_stdin(child, "ref", b"\x04")
    stdin = rig.fds.pipes[child.stdin_fd]
    assert bytes(stdin.data) == b"abc\x04" and stdin.closed
    assert rig.session.stdin_results[1] == [StdinResult.WRITTEN]
    assert rig.session.closed_refs == [(1, "ref")]


def test_close_stdin_waits_for_room_for_the_eof_character() -> None:
    rig = Rig()
    child = rig.spawn(1, stderr=False)
    stdin = rig.fds.pipes[child.stdin_fd]
    stdin.room = 0
    rig.children.close_stdin(child, "ref", b"\x04")
    assert not stdin.closed and child.queue  # held until writable
    stdin.room = 10
    child.stdin_handler()
    assert bytes(stdin.data) == b"\x04" and stdin.closed
    assert rig.session.closed_refs == [(1, "ref")]


def test_close_stdin_of_a_gone_terminal_still_answers() -> None:
    rig = Rig()
    child = rig.spawn(1, stderr=False)
    rig.fds.pipes[child.stdin_fd].reader_closed = True
    rig.children.close_stdin(child, "ref", b"\x04")
    assert rig.session.closed_refs == [(1, "ref")]


def test_tty_fd_is_whichever_master_descriptor_is_open() -> None:
    rig = Rig()
    child = rig.spawn(1, stderr=False)
    out = child.pipes[0].fd
    assert rig.children.tty_fd(child) == out
    rig.fds.pipes[out].writer_closed = True
    child.pipes[0].handler()  # EOF: the pipe closes
    assert rig.children.tty_fd(child) == child.stdin_fd
    rig.children.close_stdin(child, "ref")
    assert rig.children.tty_fd(child) == -1


def test_resize_of_a_child_without_terminal_is_enotty() -> None:
    resin = object.__new__(server.Resin)
    child = Child(1, 99, -1, [])
    with pytest.raises(OSError) as info:
        resin.resize(child, 10, 10)
    assert info.value.errno == errno.ENOTTY


# --- resolving user and group -------------------------------------------------------------


def test_identity_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for opts, stage in [(v1.SpawnOptions(user=b"nobody"), "user"),
                        (v1.SpawnOptions(group=0), "group")]:
        with pytest.raises(SpawnFailed) as info:
            server._identity_and_limits(opts)
        assert (info.value.stage, info.value.errno) == (stage, errno.EPERM)
    # Limits alone need no root (raising a hard one fails in the child).
    assert server._identity_and_limits(v1.SpawnOptions(rlimits=(("core", 0, None),))) == (
        -1, -1, None, ((4, 0, -1),))


def test_identity_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    nobody = pwd.getpwnam("nobody")
    uid, gid, groups, _ = server._identity_and_limits(  # type: ignore[misc]
        v1.SpawnOptions(user=b"nobody"))
    assert (uid, gid) == (nobody.pw_uid, nobody.pw_gid)
    assert groups == tuple(os.getgrouplist("nobody", nobody.pw_gid))
    assert server._identity_and_limits(v1.SpawnOptions(group=12345)) == (
        -1, 12345, (12345,), ())
    # A uid without a passwd entry needs a group; with one, it is the only group.
    free_uid = next(u for u in range(40000, 50000) if not _known(u))
    with pytest.raises(SpawnFailed) as info:
        server._identity_and_limits(v1.SpawnOptions(user=free_uid))
    assert (info.value.stage, info.value.errno) == ("user", errno.ENOENT)
    assert server._identity_and_limits(v1.SpawnOptions(user=free_uid, group=7)) == (
        free_uid, 7, (7,), ())
    with pytest.raises(SpawnFailed) as info:
        server._identity_and_limits(v1.SpawnOptions(group=b"no-such-group-here"))
    assert (info.value.stage, info.value.errno) == ("group", errno.ENOENT)


def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_rlimit_names_match_the_resource_module() -> None:
    import resource

    for name in v1.RLIMIT_NAMES:
        number = getattr(resource, f"RLIMIT_{name.upper()}", None)
        assert number is None or server._RLIMITS[name] == number
    assert sorted(server._RLIMITS) == sorted(v1.RLIMIT_NAMES)


def test_a_terminal_is_not_closed_before_its_child_is_reaped() -> None:
    # The child closed its stdio (the master reads EIO: here, EOF) but has not
    # exited yet: closing the master now would hang the terminal up and kill
    # it with SIGHUP. The master is unwatched and closed once it is reaped.
    rig = Rig()
    child = rig.spawn(1, stderr=False, source="pty")  # a master is no pipe: read, not spliced
    child.tty = True
    pipe = child.pipes[0]
    rig.fds.pipes[pipe.fd].data += b"bye"
    rig.fds.pipes[pipe.fd].writer_closed = True
    pipe.handler()  # "bye"
    pipe.handler()  # EOF
    assert pipe.hung and not pipe.closed and not rig.poller.interest(pipe.fd)
    assert rig.session.outbox.size  # "bye" was handed on
    rig.children.exited(child, 0)
    assert pipe.closed and child.finished
    # Without a terminal the pipe closes at EOF, as always.
    other = rig.spawn(2, stderr=False)
    rig.fds.pipes[other.pipes[0].fd].writer_closed = True
    other.pipes[0].handler()
    assert other.pipes[0].closed and not other.pipes[0].hung
