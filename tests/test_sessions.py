"""The sessions (negotiation, v0, v1) against a fake `Core`: every session rule
without a subprocess. The same rules run end to end in test_v0.py/test_v1.py."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

import msgpack
import pytest

from resin_py.protocol import v0, v0_session, v1
from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.protocol.errors import SpawnFailed, ZeroLengthPacket
from resin_py.protocol.framing import PacketReader, encode_packet
from resin_py.protocol.negotiate import Negotiator
from resin_py.protocol.session import ChildRef, Session, StdinResult
from resin_py.protocol.terms import OK, Atom, Term
from resin_py.protocol.v0_session import V0Session
from resin_py.protocol.v1_session import OUTPUT_FRAME_DATA, V1Session

ERROR = Atom("error")
PREFIX = "resin daemon error: "
DECODE = PREFIX + "fail serializing payload: "
ENOENT_TEXT = (PREFIX + 'internal io error: Os { code: 2, kind: NotFound, '
               'message: "No such file or directory" }')


@dataclass
class FakeChild:
    id: int
    pid: int
    exit_code: int | None = 0
    term_signal: int = 0
    queued: int = 0


@dataclass
class FakeCore:
    """Records every call; `spawn_error`/`signal_error` make the next one fail."""

    calls: list[tuple[object, ...]] = field(default_factory=list)
    sent: bytearray = field(default_factory=bytearray)
    spawn_error: Exception | None = None
    signal_error: OSError | None = None
    next_pid: int = 500

    def spawn(self, id: int, exe: bytes, args: tuple[bytes, ...], opts: SpawnOptions
              ) -> ChildRef:
        self.calls.append(("spawn", id, exe, args))
        if self.spawn_error is not None:
            raise self.spawn_error
        self.next_pid += 1
        return FakeChild(id, self.next_pid)

    def write_stdin(self, child: ChildRef, data: bytes) -> None:
        self.calls.append(("write", child.id, data))
        assert isinstance(child, FakeChild)
        child.queued += 1

    def stdin_queued(self, child: ChildRef) -> int:
        assert isinstance(child, FakeChild)
        return child.queued

    def close_stdin(self, child: ChildRef, ref: Term) -> None:
        self.calls.append(("close", child.id, ref))

    def grant_credit(self, child: ChildRef, kind: StreamKind, amount: int) -> None:
        self.calls.append(("credit", child.id, kind, amount))

    def direct_pipes(self, child: ChildRef) -> tuple[tuple[StreamKind, int, int], ...]:
        return ((StreamKind.STDOUT, 40 + child.id, 9000 + child.id),)

    def relay(self, child: ChildRef) -> None:
        self.calls.append(("relay", child.id))

    def signal(self, child: ChildRef, signo: int, group: bool) -> None:
        self.calls.append(("signal", child.id, signo, group))
        if self.signal_error is not None:
            raise self.signal_error

    def send(self, *parts: bytes | memoryview) -> None:
        for part in parts:
            self.sent += part

    def packets(self) -> list[bytes]:
        reader = PacketReader()
        reader.feed(bytes(self.sent))
        self.sent.clear()
        out = []
        while (p := reader.next_packet()) is not None:
            out.append(p)
        assert reader.buffered == 0, "a partial packet was sent"
        return out

    def frames(self) -> list[v1.ResinFrame]:
        return [v1.decode_resin_frame(p) for p in self.packets()]

    def messages(self) -> list[v0.ResinMessage]:
        return [v0.decode_resin_message(p) for p in self.packets()]


def negotiate(first: bytes) -> tuple[FakeCore, list[Session]]:
    core = FakeCore()
    decided: list[Session] = []
    Negotiator(core, decided.append).on_packet(first)
    return core, decided


def v1_session() -> tuple[FakeCore, V1Session]:
    core = FakeCore()
    session = V1Session(core)
    session.hello(1)
    assert core.frames() == [v1.HelloReply(1)]
    return core, session


def v1_send(session: V1Session, frame: v1.ClientFrame) -> None:
    session.on_packet(v1.encode_client_frame(frame))


def options_after_parts(opts: SpawnOptions) -> list[SpawnOptions]:
    """What the core is asked to spawn with when a spawn with `opts` comes in
    two parts (the session rebuilds the options from both)."""
    core, session = v1_session()
    seen: list[SpawnOptions] = []
    original = core.spawn

    def spawn(id: int, exe: bytes, args: tuple[bytes, ...], opts: SpawnOptions) -> object:
        seen.append(opts)
        return original(id, exe, args, opts)

    core.spawn = spawn  # type: ignore[method-assign, assignment]
    v1_send(session, v1.SpawnPart(1, args=(b"a",)))
    v1_send(session, v1.Spawn(1, b"x", (), opts, 1))
    return seen


def spawned(core: FakeCore, session: V1Session, id: int) -> FakeChild:
    v1_send(session, v1.Spawn(id, b"cat"))
    frames = core.frames()
    assert isinstance(frames[0], v1.Spawned) and frames[0].id == id
    child = session.procs[id]
    assert isinstance(child, FakeChild)
    return child


# --- negotiation ---------------------------------------------------------------

def test_handshake_decides_v1_and_replies() -> None:
    core, decided = negotiate(b"\x00\x01")
    assert [type(s) for s in decided] == [V1Session]
    assert core.frames() == [v1.HelloReply(v1.VERSION)]


def test_other_versions_get_the_version_resin_speaks() -> None:
    core, _ = negotiate(b"\x00\x07")
    assert core.frames() == [v1.HelloReply(v1.VERSION)]


def test_anything_else_decides_v0_and_is_served_as_v0() -> None:
    first = v0.encode_client_message(v0.StartProcess("echo", ("hi",)))[0]
    core, decided = negotiate(first)
    assert [type(s) for s in decided] == [V0Session]
    assert core.calls == [("spawn", 0, b"echo", (b"hi",))]


def test_only_exactly_two_bytes_00_vv_is_a_handshake() -> None:
    # resin 0.3.x ignored the flags' type bits: a longer first packet whose
    # flags byte is 0x00 is a v0 chunk, decoded and served.
    first = v0.encode_client_message(v0.StartProcess("echo", ("hi",)), flags=0)[0]
    assert first[0] == 0
    core, decided = negotiate(first)
    assert [type(s) for s in decided] == [V0Session]
    assert core.calls == [("spawn", 0, b"echo", (b"hi",))]
    core, decided = negotiate(b"\x00" + msgpack.packb("KillProcess"))
    assert [type(s) for s in decided] == [V0Session]
    assert core.messages() == [v0.ErrorReport(f"{PREFIX}KillProcess before StartProcess")]
    core, decided = negotiate(b"\x00\x01\x02")  # v0, and not msgpack
    assert [type(s) for s in decided] == [V0Session]
    [report] = core.messages()
    assert isinstance(report, v0.ErrorReport)
    assert report.msg.startswith(f"{PREFIX}fail serializing payload: ")


def test_framing_error_before_the_mode_is_answered_in_v0() -> None:
    core = FakeCore()
    Negotiator(core, lambda s: None).on_framing_error(ZeroLengthPacket())
    assert core.messages() == [v0.ErrorReport(f"{PREFIX}zero-length packet")]


# --- v1 ----------------------------------------------------------------------------

def test_v1_spawn_registers_the_id_and_refuses_it_twice() -> None:
    core, session = v1_session()
    child = spawned(core, session, 7)
    assert core.calls == [("spawn", 7, b"cat", ())]
    v1_send(session, v1.Spawn(7, b"cat"))
    assert core.frames() == [v1.SpawnError(7, Atom("id_in_use"))]
    assert len(core.calls) == 1  # nothing spawned
    session.on_exit(child)
    assert core.frames() == [v1.Exit(7, "exit", 0)]
    spawned(core, session, 7)  # the id is free again


@pytest.mark.parametrize(("error", "reason"), [
    (SpawnFailed("path", errno.ENOENT, "x"), Atom("enoent")),
    (SpawnFailed("exec", errno.EACCES, "x"), Atom("eacces")),
    (SpawnFailed("cwd", errno.ENOTDIR, "x"), (Atom("cwd"), Atom("enotdir"))),
    (OSError(errno.EMFILE, "too many"), Atom("emfile")),
])
def test_v1_spawn_errors_map_to_reasons(error: Exception, reason: Term) -> None:
    core, session = v1_session()
    core.spawn_error = error
    v1_send(session, v1.Spawn(3, b"x"))
    assert core.frames() == [v1.SpawnError(3, reason)]
    assert 3 not in session.procs


def test_v1_signal_replies_and_maps_errors() -> None:
    core, session = v1_session()
    spawned(core, session, 1)
    v1_send(session, v1.Signal(1, b"r1", 15, True))
    assert core.frames() == [v1.Reply(1, b"r1", OK)]
    assert core.calls[-1] == ("signal", 1, 15, True)
    core.signal_error = OSError(errno.ESRCH, "gone")
    v1_send(session, v1.Signal(1, b"r2", 15, False))
    assert core.frames() == [v1.Reply(1, b"r2", (ERROR, Atom("esrch")))]
    v1_send(session, v1.Signal(9, b"r3", 15, False))
    assert core.frames() == [v1.Reply(9, b"r3", (ERROR, Atom("no_process")))]


def test_v1_stdin_for_unknown_id_is_acked_no_process() -> None:
    core, session = v1_session()
    v1_send(session, v1.Stdin(4, b"abc"))
    assert core.frames() == [v1.StdinAck(4, v1.AckStatus.NO_PROCESS)]
    assert core.calls == []


def test_v1_stdin_past_the_window_is_refused_for_that_id() -> None:
    core, session = v1_session()
    child = spawned(core, session, 1)
    for i in range(v1.STDIN_WINDOW):
        v1_send(session, v1.Stdin(1, bytes([i])))
    assert core.frames() == []
    v1_send(session, v1.Stdin(1, b"over"))
    assert core.frames() == [v1.ErrorEvent(1, (Atom("stdin_window_exceeded"), v1.STDIN_WINDOW))]
    assert [c for c in core.calls if c[0] == "write"] == [
        ("write", 1, bytes([i])) for i in range(v1.STDIN_WINDOW)]
    child.queued -= 1  # one answered: room for one more
    v1_send(session, v1.Stdin(1, b"ok"))
    assert core.calls[-1] == ("write", 1, b"ok")


@pytest.mark.parametrize(("result", "status"), [
    (StdinResult.WRITTEN, v1.AckStatus.WRITTEN),
    (StdinResult.BROKEN, v1.AckStatus.EPIPE),
    (StdinResult.CLOSED, v1.AckStatus.CLOSED),
])
def test_v1_stdin_results_become_acks(result: StdinResult, status: v1.AckStatus) -> None:
    core, session = v1_session()
    child = spawned(core, session, 2)
    session.on_stdin_result(child, result)
    # Packed in one go on the hot path: the same bytes as the encoder's.
    assert core.sent == encode_packet(v1.encode_stdin_ack(2, status))
    assert core.frames() == [v1.StdinAck(2, status)]


def test_v1_credit_for_unknown_id_is_ignored() -> None:
    core, session = v1_session()
    v1_send(session, v1.Credit(5, StreamKind.STDOUT, 100))
    assert core.frames() == [] and core.calls == []
    spawned(core, session, 5)
    v1_send(session, v1.Credit(5, StreamKind.STDERR, 100))
    assert core.calls[-1] == ("credit", 5, StreamKind.STDERR, 100)


def test_v1_close_stdin() -> None:
    core, session = v1_session()
    v1_send(session, v1.CloseStdin(1, b"r"))
    assert core.frames() == [v1.Reply(1, b"r", (ERROR, Atom("no_process")))]
    child = spawned(core, session, 1)
    v1_send(session, v1.CloseStdin(1, b"r"))
    assert core.calls[-1] == ("close", 1, b"r")
    session.on_close_stdin_done(child, b"r")
    assert core.frames() == [v1.Reply(1, b"r", OK)]


def test_v1_second_hello_and_bad_frames_are_error_events() -> None:
    core, session = v1_session()
    session.on_packet(b"\x00\x01")
    assert core.frames() == [v1.ErrorEvent(None, (Atom("bad_frame"), v1.HELLO))]
    session.on_packet(b"\x7f\x00")
    frames = core.frames()
    assert len(frames) == 1 and isinstance(frames[0], v1.ErrorEvent)
    session.on_framing_error(ZeroLengthPacket())
    assert core.frames() == [v1.ErrorEvent(None, Atom("zero_length_packet"))]


def test_v1_output_is_split_into_frames() -> None:
    core, session = v1_session()
    child = spawned(core, session, 1)
    data = bytes(range(256)) * 600  # 153,600 bytes: three frames
    session.on_output(child, StreamKind.STDERR, data)
    frames = core.frames()
    assert [type(f) for f in frames] == [v1.Stderr] * 3
    assert b"".join(f.data for f in frames if isinstance(f, v1.Stderr)) == data


def test_v1_full_output_frames_are_64_kib_on_the_wire() -> None:
    """Read or spliced, a full data frame is exactly the BEAM's 64 KiB port
    read (packet length included), never one byte more."""
    core, session = v1_session()
    child = spawned(core, session, 1)
    data = os.urandom(3 * OUTPUT_FRAME_DATA + 10)
    session.on_output(child, StreamKind.STDOUT, data)
    wire = bytes(core.sent)
    sizes = []
    while wire:
        n = int.from_bytes(wire[:2], "big")
        sizes.append(2 + n)
        wire = wire[2 + n:]
    assert sizes == [65_536] * 3 + [2 + 5 + 10]
    assert b"".join(f.data for f in core.frames() if isinstance(f, v1.Stdout)) == data
    assert session.splice_limit == OUTPUT_FRAME_DATA <= v1.MAX_DATA
    header = session.output_header(child, StreamKind.STDOUT, OUTPUT_FRAME_DATA)
    assert len(header) + OUTPUT_FRAME_DATA == 65_536


def test_v1_exit_by_signal() -> None:
    core, session = v1_session()
    child = spawned(core, session, 1)
    child.exit_code, child.term_signal = None, 9
    session.on_exit(child)
    assert core.frames() == [v1.Exit(1, "signal", 9)]
    assert session.procs == {}


# --- v0 ----------------------------------------------------------------------------

def v0_send(session: V0Session, msg: v0.ClientMessage) -> None:
    for packet in v0.encode_client_message(msg):
        session.on_packet(packet)


def test_v0_state_machine() -> None:
    core = FakeCore()
    session = V0Session(core)
    v0_send(session, v0.DataIn(b"x"))
    v0_send(session, v0.KillProcess())
    assert core.messages() == [v0.ErrorReport(f"{PREFIX}DataIn before StartProcess"),
                               v0.ErrorReport(f"{PREFIX}KillProcess before StartProcess")]
    v0_send(session, v0.StartProcess("cat", ("-u",)))
    assert core.calls == [("spawn", 0, b"cat", (b"-u",))]
    v0_send(session, v0.StartProcess("cat", ()))
    assert core.messages() == [
        v0.ErrorReport(f"{PREFIX}StartProcess: a process was already started")]
    v0_send(session, v0.DataIn(b"hello"))
    assert core.calls[-1] == ("write", 0, b"hello")
    v0_send(session, v0.KillProcess())
    assert core.calls[-1] == ("signal", 0, 9, True)
    assert session.child is not None
    session.on_output(session.child, StreamKind.STDOUT, b"out")
    session.on_exit(session.child)
    assert core.messages() == [v0.DataOut("Stdout", b"out"), v0.ExitStatus(0)]
    v0_send(session, v0.DataIn(b"late"))
    v0_send(session, v0.KillProcess())
    assert core.messages() == [v0.ErrorReport(f"{PREFIX}DataIn: the process has exited"),
                               v0.ErrorReport(f"{PREFIX}KillProcess: the process has exited")]


def test_v0_kill_of_a_reaped_child_says_it_exited() -> None:
    core = FakeCore()
    session = V0Session(core)
    v0_send(session, v0.StartProcess("cat", ()))
    core.signal_error = OSError(errno.ESRCH, "gone")
    v0_send(session, v0.KillProcess())
    assert core.messages() == [v0.ErrorReport(f"{PREFIX}KillProcess: the process has exited")]


@pytest.mark.parametrize(("error", "text"), [
    (SpawnFailed("path", errno.ENOENT, "nope: not found on PATH"), ENOENT_TEXT),
    (SpawnFailed("exec", errno.EACCES, "x"), PREFIX + "internal io error: Os { code: 13, "
     'kind: PermissionDenied, message: "Permission denied" }'),
    (SpawnFailed("exec", errno.ENOEXEC, "x"), PREFIX + "internal io error: Os { code: 8, "
     'kind: Uncategorized, message: "Exec format error" }'),
    (OSError(errno.EMFILE, "too many"), PREFIX + "internal io error: Os { code: 24, "
     'kind: Uncategorized, message: "Too many open files" }'),
    (OSError("no errno"), PREFIX + "StartProcess: no errno"),
])
def test_v0_spawn_failure_is_an_error_report_as_resin_03(error: Exception, text: str) -> None:
    core = FakeCore()
    core.spawn_error = error
    session = V0Session(core)
    v0_send(session, v0.StartProcess("nope", ()))
    assert core.messages() == [v0.ErrorReport(text)]
    assert session.child is None
    core.spawn_error = None  # nothing runs: another StartProcess may follow
    v0_send(session, v0.StartProcess("cat", ()))
    assert session.child is not None and core.messages() == []


def test_v0_empty_exec_fails_like_execvp() -> None:
    core = FakeCore()
    session = V0Session(core)
    v0_send(session, v0.StartProcess("", ("x",)))
    assert core.messages() == [v0.ErrorReport(ENOENT_TEXT)]
    assert core.calls == []


def test_v0_broken_stdin_is_reported_until_the_exit() -> None:
    core = FakeCore()
    session = V0Session(core)
    v0_send(session, v0.StartProcess("true", ()))
    assert session.child is not None
    session.on_stdin_result(session.child, StdinResult.WRITTEN)
    session.on_stdin_result(session.child, StdinResult.BROKEN)
    assert core.messages() == [
        v0.ErrorReport(f"{PREFIX}DataIn: the process closed its stdin (broken pipe)")]
    session.on_exit(session.child)
    session.on_stdin_result(session.child, StdinResult.BROKEN)
    assert core.messages() == [v0.ExitStatus(0)]


def test_v0_malformed_message_is_reported_and_served_on() -> None:
    core = FakeCore()
    session = V0Session(core)
    session.on_packet(b"\x02\xc1")  # 0xc1 is never used in msgpack
    msgs = core.messages()
    assert len(msgs) == 1 and isinstance(msgs[0], v0.ErrorReport)
    v0_send(session, v0.StartProcess("cat", ()))
    assert core.calls == [("spawn", 0, b"cat", ())]


def v0_raw(session: V0Session, value: object) -> None:
    session.on_packet(b"\x02" + msgpack.packb(value))


def syntax(text: str) -> v0.ErrorReport:
    return v0.ErrorReport(DECODE + "Syntax(" + v0.rust_debug_str(text) + ")")


UNKNOWN = ", expected one of `StartProcess`, `KillProcess`, `DataOut`, `DataIn`, " \
    "`ExitStatus`, `ErrorReport`"


@pytest.mark.parametrize(("value", "report"), [
    ({"StartProcess": {"exec": "true"}}, syntax("missing field `args`")),
    ({"StartProcess": {"args": []}}, syntax("missing field `exec`")),
    ({"StartProcess": {}}, syntax("missing field `exec`")),
    ({"StartProcess": {"exec": "x", "args": [1]}},
     syntax("invalid type: integer `1`, expected a string")),
    ({"StartProcess": {"exec": "x", "args": ["a", None]}},
     syntax("invalid type: unit value, expected a string")),
    ({"StartProcess": {"exec": "x", "args": [True]}},
     syntax("invalid type: boolean `true`, expected a string")),
    ({"StartProcess": {"exec": "x", "args": [-200]}},
     syntax("invalid type: integer `-200`, expected a string")),
    ({"StartProcess": {"exec": "x", "args": [1.5]}},
     syntax("invalid type: floating point `1.5`, expected a string")),
    ({"StartProcess": {"exec": "x", "args": [[]]}},
     syntax("invalid type: sequence, expected a string")),
    ({"StartProcess": {"exec": "x", "args": "-l"}},
     syntax('invalid type: string "-l", expected a sequence')),
    ({"StartProcess": {"exec": 5, "args": []}},
     syntax("invalid type: integer `5`, expected a string")),
    ({"StartProcess": {"exec": b"ls", "args": []}},
     syntax("invalid type: byte array, expected a string")),
    ({"DataIn": {}}, syntax("missing field `buf`")),
    ({"Bogus": None}, syntax("unknown variant `Bogus`" + UNKNOWN)),
    ("Bogus", syntax("unknown variant `Bogus`" + UNKNOWN)),
    ({'a"b': None}, syntax('unknown variant `a"b`' + UNKNOWN)),
])
def test_v0_decode_errors_read_as_resin_03(value: object, report: v0.ErrorReport) -> None:
    core = FakeCore()
    session = V0Session(core)
    v0_raw(session, value)
    assert core.messages() == [report]
    assert core.calls == []  # nothing started


@pytest.mark.parametrize("payload", [
    b"\x02\xc1",
    b"\x02\x81\xacStartProcess\xc1",
    b"\x02\x81\xacStartProcess\x82\xa4exec\xc1\xa4args\x90",
    b"\x02\x81\xacStartProcess\x82\xa4exec\xa1x\xa4args\x91\xc1",
    b"\x02\x81\xabKillProcess\xc1",
    b"\x02\x81\xa6DataIn\x81\xa3buf\xc1",
])
def test_v0_reserved_marker_is_a_type_mismatch(payload: bytes) -> None:
    core = FakeCore()
    V0Session(core).on_packet(payload)
    assert core.messages() == [v0.ErrorReport(DECODE + "TypeMismatch(Reserved)")]


def test_v0_flags_type_bits_are_ignored() -> None:
    for flags in (0x00, 0x01, 0x02, 0x0F, 0x7F):
        core = FakeCore()
        session = V0Session(core)
        for packet in v0.encode_client_message(v0.DataIn(bytes(100)), flags=flags, chunk_size=30):
            session.on_packet(packet)
        v0_send(session, v0.StartProcess("cat", ()))
        assert core.messages() == [v0.ErrorReport(f"{PREFIX}DataIn before StartProcess")]
        assert core.calls == [("spawn", 0, b"cat", ())]


def test_v0_output_is_one_data_out_per_kib() -> None:
    assert v0.V0_MAX_DATA == 1024 and V0Session.read_limit % v0.V0_MAX_DATA == 0
    core = FakeCore()
    session = V0Session(core)
    v0_send(session, v0.StartProcess("cat", ()))
    assert session.child is not None
    data = bytes(range(256)) * 19 + b"\xff" * 136  # 5,000 bytes
    session.on_output(session.child, StreamKind.STDOUT, data)
    msgs = core.messages()
    assert [len(m.data) for m in msgs if isinstance(m, v0.DataOut)] == [1024] * 4 + [904]
    assert b"".join(m.data for m in msgs if isinstance(m, v0.DataOut)) == data


def test_v0_os_error_texts_are_the_c_librarys() -> None:
    for code, (_, message) in v0_session._OS_ERRORS.items():
        assert message == os.strerror(code)
    assert v0_session.rust_io_error(errno.EL3HLT, "Level 3 halted") == (
        f'Os {{ code: {errno.EL3HLT}, kind: Uncategorized, message: "Level 3 halted" }}')


def test_v0_reads_are_cut_as_1_kib_reads_would_have_cut_them() -> None:
    core = FakeCore()
    session = V0Session(core)
    v0_send(session, v0.StartProcess("cat", ()))
    assert session.child is not None
    for size in (1, 1023, 1024, 1025, 3000, session.read_limit):
        session.on_output(session.child, StreamKind.STDERR, b"e" * size)
        sizes = [len(m.data) for m in core.messages() if isinstance(m, v0.DataOut)]
        assert sizes == [1024] * (size // 1024) + ([size % 1024] if size % 1024 else [])
