"""The sans-IO core: framing, v0 and v1 codecs, terms (unit and property tests)."""

from __future__ import annotations

import ast
import contextlib
import copy
import itertools
import pickle
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import erlang
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resin_py.protocol import etf, v0, v1
from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.protocol.errors import (
    BadTerm,
    MessageTooLarge,
    PacketTooLarge,
    ProtocolError,
    V0Error,
    ZeroLengthPacket,
)
from resin_py.protocol.etf import decode_term, encode_term
from resin_py.protocol.framing import MAX_PACKET, PacketReader, encode_packet
from resin_py.protocol.session import StdinResult
from resin_py.protocol.terms import NIL, Atom, Opaque, format_term

# --- framing -------------------------------------------------------------------

payloads = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def read_all(reader: PacketReader) -> list[bytes]:
    out = []
    while (p := reader.next_packet()) is not None:
        out.append(p)
    return out


@given(payloads, st.lists(st.integers(min_value=0), max_size=30))
def test_framing_is_split_invariant(items: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_packet(p) for p in items)
    reader = PacketReader()
    got: list[bytes] = []
    for piece in split_at(stream, cuts):
        reader.feed(piece)
        got += read_all(reader)
    assert got == items and reader.buffered == 0


@given(payloads, st.lists(st.integers(min_value=0), max_size=30))
def test_whole_packets_and_feeding_agree(items: list[bytes], cuts: list[int]) -> None:
    """resin's read path: `whole` takes a read that is exactly one packet with
    nothing buffered, else it is fed: same packets, same order."""
    stream = b"".join(encode_packet(p) for p in items)
    reader = PacketReader()
    got: list[bytes] = []
    for piece in [*split_at(stream, cuts), *(encode_packet(p) for p in items)]:
        payload = reader.whole(memoryview(piece))
        if payload is not None:
            assert isinstance(payload, bytes)
            got.append(payload)
            continue
        reader.feed(piece)
        got += read_all(reader)
    assert got == items * 2 and reader.buffered == 0


def test_whole_refuses_all_but_exactly_one_packet() -> None:
    reader = PacketReader()
    assert reader.whole(encode_packet(b"ab")) == b"ab"
    assert reader.whole(b"\x00\x00") is None  # zero length: fed, and reported
    assert reader.whole(encode_packet(b"ab") + b"\x00") is None  # more than one
    assert reader.whole(encode_packet(b"abc")[:-1]) is None  # not all of it
    reader.feed(b"\x00")  # half a header buffered: nothing is whole now
    assert reader.whole(encode_packet(b"ab")) is None
    assert reader.whole(b"") is None


def test_zero_length_packet_is_consumed() -> None:
    reader = PacketReader()
    reader.feed(b"\x00\x00" + encode_packet(b"next"))
    with pytest.raises(ZeroLengthPacket):
        reader.next_packet()
    assert reader.next_packet() == b"next"


def test_packet_limits() -> None:
    assert encode_packet(b"x" * MAX_PACKET)[:2] == b"\xff\xff"
    for bad in (b"", b"x" * (MAX_PACKET + 1)):
        with pytest.raises(PacketTooLarge):
            encode_packet(bad)


def test_one_byte_at_a_time() -> None:
    reader = PacketReader()
    stream = encode_packet(b"a" * 1000) + encode_packet(b"b")
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        got += read_all(reader)
    assert got == [b"a" * 1000, b"b"]


# --- v0 ------------------------------------------------------------------------


@given(st.binary(max_size=v0.V0_MAX_DATA), st.sampled_from(["Stdout", "Stderr"]))
def test_data_out_matches_a_plain_msgpack_int_array(data: bytes, stream: v0.Stream) -> None:
    head, tail = v0.data_out_parts(stream, data)
    assert head + tail == msgpack.packb({"DataOut": {"ty": stream, "buf": list(data)}})
    assert len(encode_packet(head + tail)) <= MAX_PACKET + 2


def test_data_out_worst_case_fits_a_packet() -> None:
    payload = v0.encode_resin_message(v0.DataOut("Stderr", b"\xff" * v0.V0_MAX_DATA))
    assert len(payload) <= MAX_PACKET


def test_exit_status_and_error_report_encoding() -> None:
    assert v0.encode_resin_message(v0.ExitStatus(None)) == bytes.fromhex(
        "81aa4578697453746174757381a4636f6465c0")
    assert v0.encode_resin_message(v0.ExitStatus(200)) == bytes.fromhex(
        "81aa4578697453746174757381a4636f6465ccc8")
    assert msgpack.unpackb(v0.encode_resin_message(v0.ErrorReport("x"))) == {
        "ErrorReport": {"msg": "x"}}


client_messages = st.one_of(
    st.builds(v0.StartProcess, st.text(min_size=1).filter(lambda s: "\0" not in s),
              st.lists(st.text().filter(lambda s: "\0" not in s)).map(tuple)),
    st.builds(v0.DataIn, st.binary(max_size=5000)),
    st.just(v0.KillProcess()),
)


@given(client_messages, st.integers(min_value=1, max_value=70000), st.booleans())
def test_v0_chunking_round_trip(msg: v0.ClientMessage, chunk: int, as_bin: bool) -> None:
    decoder = v0.V0Decoder()
    packets = v0.encode_client_message(msg, chunk_size=chunk, data_as_bin=as_bin)
    results = [decoder.feed_packet(p) for p in packets]
    assert results[:-1] == [None] * (len(packets) - 1)
    assert results[-1] == msg


def test_v0_decodes_by_key_and_accepts_variants() -> None:
    d = v0.V0Decoder()
    assert d.feed_packet(b"\x02" + msgpack.packb(
        {"StartProcess": {"args": ["a"], "exec": "x"}})) == v0.StartProcess("x", ("a",))
    assert d.feed_packet(b"\x02" + msgpack.packb("KillProcess")) == v0.KillProcess()
    assert d.feed_packet(b"\x00" + msgpack.packb({"KillProcess": None})) == v0.KillProcess()
    assert d.feed_packet(b"\x02" + msgpack.packb({"DataIn": {"buf": b"\x00\xff"}})) == (
        v0.DataIn(b"\x00\xff"))


def test_v0_message_cap_and_recovery() -> None:
    d = v0.V0Decoder(max_message=100)
    for p in v0.encode_client_message(v0.DataIn(b"x" * 200), chunk_size=30):
        try:
            assert d.feed_packet(p) is None
        except MessageTooLarge:
            break
    else:
        raise AssertionError("no MessageTooLarge")
    assert d.feed_packet(b"\x02" + msgpack.packb("KillProcess")) == v0.KillProcess()


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_v0_decoder_only_raises_protocol_errors(packets: list[bytes]) -> None:
    d = v0.V0Decoder()
    for p in packets:
        with contextlib.suppress(ProtocolError):
            d.feed_packet(p)


@given(st.binary(max_size=300))
def test_v0_client_side_decoder_only_raises_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(V0Error):
        v0.decode_resin_message(data)


@given(st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_exit_status_is_encoded_as_msgpack_does(code: int | None) -> None:
    # rmp-serde and msgpack both take the smallest int form (negatives too).
    assert v0.encode_exit_status(code) == msgpack.packb({"ExitStatus": {"code": code}})


@given(st.text(max_size=300), st.integers(0, 70000))
def test_error_report_is_encoded_as_msgpack_does(msg: str, pad: int) -> None:
    msg += "x" * pad  # every str form: fixstr, str8, str16, str32
    assert v0.encode_error_report(msg) == msgpack.packb({"ErrorReport": {"msg": msg}})


def test_resin_encoders_at_their_size_classes() -> None:
    for n in (0, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000):
        data = bytes(i % 256 for i in range(n))
        assert b"".join(v0.data_out_parts("Stdout", data)) == msgpack.packb(
            {"DataOut": {"ty": "Stdout", "buf": list(data)}})
        assert v0.encode_error_report("é" * n) == msgpack.packb({"ErrorReport": {"msg": "é" * n}})
    for code in (0, 127, 128, 255, 256, 65535, 65536, -1, -32, -33, -128, -129, -32768,
                 -32769, -(2**31), -(2**31) - 1):
        assert v0.encode_exit_status(code) == msgpack.packb({"ExitStatus": {"code": code}})


@given(st.dictionaries(st.sampled_from(["exec", "args", "x"]),
                       st.none() | st.integers(-300, 300) | st.text(max_size=5)
                       | st.lists(st.text(max_size=3) | st.integers(0, 3), max_size=3)),
       st.sampled_from(["StartProcess", "DataIn", "KillProcess", "Bogus"]))
def test_resin_and_client_side_parsers_agree(body: dict[str, object], tag: str) -> None:
    value = {tag: body if tag != "DataIn" else {"buf": body.get("args", [])}}

    def outcome(parse: Callable[[], v0.ClientMessage]) -> object:
        try:
            return parse()
        except V0Error:
            return V0Error

    assert outcome(lambda: v0.decode_client_message(msgpack.packb(value))) == outcome(
        lambda: v0.parse_client_value(value))


def test_rust_float_display() -> None:
    f = v0._rust_float
    assert [f(1.5), f(1.0), f(-2.0), f(1e20), f(1e-7), f(1.25e-5), f(float("nan")),
            f(float("-inf"))] == ["1.5", "1.0", "-2.0", "100000000000000000000.0",
                                  "0.0000001", "0.0000125", "NaN", "-inf"]
    assert v0.rust_debug_str('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\u{1}é"'


# --- the start-up stand-ins (protocol/common.py) -------------------------------


def test_record_behaves_as_a_frozen_dataclass() -> None:
    msg = v0.StartProcess("ls", ("-l",))
    assert msg == v0.StartProcess(exec="ls", args=("-l",)) and msg != v0.StartProcess("ls")
    assert hash(msg) == hash(v0.StartProcess("ls", ("-l",)))
    assert repr(msg) == "StartProcess(exec='ls', args=('-l',))"
    assert v0.StartProcess("ls").args == () and v0.KillProcess() == v0.KillProcess()
    assert v0.DataIn(b"x") != v0.DataOut("Stdout", b"x") and msg != ("ls", ("-l",))
    with pytest.raises(AttributeError):
        msg.exec = "rm"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.other = 1  # type: ignore[attr-defined]
    for bad in (lambda: v0.StartProcess(), lambda: v0.StartProcess("a", (), "b"),  # type: ignore
                lambda: v0.StartProcess("a", exec="b"), lambda: v0.DataIn(buf=b"")):  # type: ignore
        with pytest.raises(TypeError):
            bad()
    options = SpawnOptions(cd=b"/tmp", credit=5)
    assert (options.cd, options.env, options.stdin, options.credit) == (b"/tmp", (), "pipe", 5)
    assert copy.copy(options) == options == pickle.loads(pickle.dumps(options))


def test_lite_enums_behave_as_enums() -> None:
    assert StreamKind(1) is StreamKind.STDOUT and StreamKind(2) is StreamKind.STDERR
    assert list(StreamKind) == [StreamKind.STDOUT, StreamKind.STDERR] == [1, 2]
    assert StreamKind.STDERR.name == "STDERR" and StreamKind.STDERR.value == 2
    assert f"{StreamKind.STDOUT}" == "1" and {StreamKind.STDOUT: "x"}[1] == "x"
    with pytest.raises(ValueError):
        StreamKind(3)
    assert StdinResult("broken") is StdinResult.BROKEN and StdinResult.BROKEN.name == "BROKEN"
    assert StdinResult.BROKEN != StdinResult.CLOSED and StdinResult.BROKEN != "broken"
    assert pickle.loads(pickle.dumps(StreamKind.STDERR)) is StreamKind.STDERR


# Modules a v0 session loads, and what they must not import (start-up time).
V0_MODULES = ["resin_py.protocol", "resin_py.protocol.framing", "resin_py.protocol.errors",
              "resin_py.protocol.common", "resin_py.protocol.session",
              "resin_py.protocol.negotiate", "resin_py.protocol.v0",
              "resin_py.protocol.v0_session"]
FORBIDDEN = {"typing", "dataclasses", "enum", "inspect", "re", "reprlib", "msgpack", "ctypes",
             "erlang", "collections", "resin_py.protocol.etf", "resin_py.protocol.v1",
             "resin_py.protocol.v1_session", "resin_py.protocol.terms"}


def test_v0_session_modules_import_nothing_slow() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    script = (f"import sys; sys.path.insert(0, {root!r}); before = set(sys.modules); "
              f"import {', '.join(V0_MODULES)}; print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-IS", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    loaded = set(ast.literal_eval(out))
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
    assert {m for m in loaded if not m.startswith("resin_py")} <= {
        "__future__", "_struct", "struct", "errno"}, loaded


# What a v1 session adds to those, and what it must not import either.
V1_MODULES = ["resin_py.protocol.terms", "resin_py.protocol.etf", "resin_py.protocol.v1",
              "resin_py.protocol.v1_session"]
V1_FORBIDDEN = {"typing", "dataclasses", "enum", "inspect", "re", "reprlib", "collections",
                "contextlib", "functools", "msgpack", "erlang", "ctypes"}


def test_v1_session_modules_import_nothing_slow() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    script = (f"import sys; sys.path.insert(0, {root!r}); import {', '.join(V0_MODULES)}; "
              f"before = set(sys.modules); import {', '.join(V1_MODULES)}; "
              "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-IS", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    loaded = set(ast.literal_eval(out))
    assert not loaded & V1_FORBIDDEN, loaded & V1_FORBIDDEN
    assert loaded == set(V1_MODULES), loaded  # nothing but themselves


def test_v1_frames_behave_as_frozen_dataclasses() -> None:
    # Records (protocol/common.py) now; the hot ones with their own __init__.
    for frame, again, text in [
        (v1.Stdout(1, b"x"), v1.Stdout(id=1, data=b"x"), "Stdout(id=1, data=b'x')"),
        (v1.StdinAck(2, v1.AckStatus.EPIPE), v1.StdinAck(2, status=v1.AckStatus.EPIPE),
         "StdinAck(id=2, status=<AckStatus.EPIPE: 1>)"),
        (v1.Credit(3, StreamKind.STDERR, 9), v1.Credit(3, StreamKind.STDERR, amount=9),
         "Credit(id=3, stream=<StreamKind.STDERR: 2>, amount=9)"),
        (v1.Spawn(4, b"ls"), v1.Spawn(4, exec=b"ls", args=()),
         "Spawn(id=4, exec=b'ls', args=(), options=SpawnOptions(cd=None, cd_of=None, env=(), "
         "clear_env=False, arg0=None, stdin='pipe', stderr='capture', credit=None, "
         "cgroup=(), pty=None, user=None, group=None, rlimits=(), direct=(), "
         "direct_after=0), parts=0)"),
        (v1.Reply(5, Opaque(b"r"), Atom("ok")), v1.Reply(5, Opaque(b"r"), result=Atom("ok")),
         "Reply(id=5, ref=Opaque(raw=b'r'), result=Atom('ok'))"),
    ]:
        assert frame == again and hash(frame) == hash(again) and repr(frame) == text
        assert copy.copy(frame) == frame == pickle.loads(pickle.dumps(frame))
        with pytest.raises(AttributeError):
            frame.id = 0
    assert v1.Stdout(1, b"x") != v1.Stderr(1, b"x") and v1.Stdout(1, b"x") != (1, b"x")
    assert v1.Stdin(1, b"") != v1.Stdin(2, b"")
    with pytest.raises(TypeError):
        v1.Stdout(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        v1.Reply(1, NIL)  # type: ignore[call-arg]
    match v1.Exit(7, "signal", 9):
        case v1.Exit(id, "signal", signo):
            assert (id, signo) == (7, 9)
        case _:
            raise AssertionError("no match")
    assert v1.Exit(7, "signal", 9).signal == 9 and v1.Exit(7, "exit", 0).code == 0
    assert isinstance(v1.Stdout(1, b""), v1.Stdout | v1.Stderr)
    # AckStatus is an IntEnum at heart: members are ints
    assert v1.AckStatus(1) is v1.AckStatus.EPIPE and v1.AckStatus.CLOSED.name == "CLOSED"
    assert isinstance(v1.AckStatus.EPIPE, int) and f"{v1.AckStatus.EPIPE}" == "1"
    assert [*v1.AckStatus] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        v1.AckStatus(4)


def test_atoms_compare_by_name() -> None:
    a = Atom("ok")
    assert a == Atom("ok") == decode_term(b"\x83w\x02ok") and hash(a) == hash(Atom("ok"))
    assert a != Atom("error") and a != "ok" and Atom("ok") in {a: 1}
    assert repr(a) == "Atom('ok')" and a.name == "ok" and Atom(name="x").name == "x"
    assert pickle.loads(pickle.dumps(a)) == a and copy.deepcopy((a,)) == (a,)
    with pytest.raises(AttributeError):
        a.name = "x"  # type: ignore[misc]
    match (a, Opaque(b"\x6a")):
        case (Atom("ok"), Opaque(raw)):
            assert raw == b"j"
        case _:
            raise AssertionError("no match")


# --- terms ---------------------------------------------------------------------

atoms = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True).map(Atom)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
terms = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=50) | atoms
    | finite_floats,
    lambda children: st.lists(children, max_size=5)
    | st.lists(children, max_size=5).map(tuple),
    max_leaves=20,
)


@given(terms)
def test_terms_round_trip(term: object) -> None:
    assert decode_term(encode_term(term)) == term  # type: ignore[arg-type]


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_term_decoder_only_raises_bad_term(data: bytes) -> None:
    with contextlib.suppress(BadTerm):
        decode_term(b"\x83" + data)


@pytest.mark.heavy
@settings(max_examples=500)
@given(terms, st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
       st.integers(min_value=0))
def test_term_decoder_survives_mutations(term: object, flips: list[tuple[int, int]],
                                         cut: int) -> None:
    data = bytearray(encode_term(term))  # type: ignore[arg-type]
    for pos, value in flips:
        data[pos % len(data)] = value
    with contextlib.suppress(BadTerm):
        decode_term(bytes(data[: max(2, cut % (len(data) + 1))]))


# resin's own ETF codec must agree with erlang-py, the reference, within
# resin's limits (integers up to MAX_BIG_BYTES bytes, finite floats, ...).

big = 2 ** (8 * etf.MAX_BIG_BYTES) - 1
wide_terms = st.recursive(
    st.integers(min_value=-big, max_value=big) | st.binary(max_size=300)
    | st.text(max_size=300).map(Atom) | finite_floats,
    lambda children: st.lists(children, max_size=5)
    | st.lists(children, max_size=300).map(tuple),
    max_leaves=30,
)


def erlang_py_view(value: object) -> object:
    """erlang-py's decoding in the shape of resin's terms; ("opaque", value) for
    what resin keeps as Opaque."""
    if isinstance(value, bool):
        return Atom("true" if value else "false")
    if isinstance(value, int | float):
        return value
    if value is None:
        return Atom("undefined")
    if isinstance(value, erlang.OtpErlangAtom) and not isinstance(value.value, int):
        name = value.value
        return Atom(name.decode("latin-1") if isinstance(name, bytes) else name)
    if isinstance(value, erlang.OtpErlangBinary) and (value.bits == 8 or not value.value):
        return value.value
    if isinstance(value, bytes):  # STRING_EXT
        return list(value)
    if isinstance(value, tuple):
        return tuple(erlang_py_view(v) for v in value)
    if isinstance(value, list):
        return [erlang_py_view(v) for v in value]
    return ("opaque", value)


def resin_view(term: object) -> object:
    """resin's decoding with each Opaque as erlang-py reads its bytes."""
    if isinstance(term, Opaque):
        return ("opaque", erlang.binary_to_term(b"\x83" + term.raw))
    if isinstance(term, tuple):
        return tuple(resin_view(t) for t in term)
    if isinstance(term, list):
        return [resin_view(t) for t in term]
    return term


def erlang_py_decode(data: bytes) -> object:
    """The erlang-py way (the reference): a view, or the exception type."""
    try:
        return erlang_py_view(erlang.binary_to_term(data))
    except Exception as exc:
        return type(exc)


# What resin refuses on purpose where erlang-py decodes (docs/protocol.md §4.9).
RESIN_ONLY_REFUSALS = ("integer of", "sign byte", "not finite", "unsupported tag",
                       "reference of", "bit string", "nested deeper", "too many terms",
                       "fun of size")


@pytest.mark.heavy
@settings(max_examples=300)
@given(wide_terms)
def test_direct_etf_path_matches_erlang_py(term: object) -> None:
    try:
        slow = erlang.term_to_binary(etf.to_erlang(term))  # type: ignore[arg-type]
    except erlang.OutputException:  # e.g. an atom above 65,535 bytes
        return
    assert encode_term(term) == slow  # type: ignore[arg-type]
    assert resin_view(decode_term(slow)) == erlang_py_decode(slow)


@pytest.mark.heavy
@settings(max_examples=500)
@given(terms, st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
       st.integers(min_value=0))
def test_etf_decoder_matches_erlang_py_on_mutations(
        term: object, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(encode_term(term))  # type: ignore[arg-type]
    for pos, value in flips:
        data[pos % len(data)] = value
    data = data[: max(2, cut % (len(data) + 1))]
    expected = erlang_py_decode(bytes(data))
    if data[0] != 131 or data[1] == etf.COMPRESSED_TAG:
        return
    try:
        got: object = decode_term(bytes(data))
    except BadTerm as exc:  # an error both ways, or one of resin's own limits
        assert isinstance(expected, type) or any(
            r in exc.detail for r in RESIN_ONLY_REFUSALS), exc.detail
    else:
        assert resin_view(got) == expected


def test_direct_etf_path_special_forms() -> None:
    # charlists (STRING_EXT), latin-1 atoms, big integers, LARGE_TUPLE, and what
    # only erlang-py handles: improper lists, maps, references.
    for data in [b"\x83k\x00\x03abc", b"\x83d\x00\x02\xe9t", b"\x83s\x01\xff",
                 b"\x83n\x01\x01\x05", b"\x83o\x00\x00\x00\x01\x00\x07",
                 b"\x83i\x00\x00\x00\x01a\x01", b"\x83l\x00\x00\x00\x01a\x01a\x02",
                 b"\x83t\x00\x00\x00\x01a\x01a\x02",
                 b"\x83l\x00\x00\x00\x00j", b"\x83n\x01\x01\x05",
                 b"\x83l\x00\x00\x00\x01a\x01k\x00\x01a"]:
        assert resin_view(decode_term(data)) == erlang_py_decode(data)


def test_compressed_terms_are_refused_even_nested() -> None:
    bomb = zlib.compress(b"\x6b\xff\xff" + b"a" * 65535)
    with pytest.raises(BadTerm):
        decode_term(b"\x83\x50" + struct.pack(">I", 65538) + bomb)
    with pytest.raises(BadTerm):
        decode_term(b"\x83\x68\x01\x50" + struct.pack(">I", 65538) + bomb)


def test_deep_nesting_is_a_bad_term() -> None:
    with pytest.raises(BadTerm):
        decode_term(b"\x83" + b"\x68\x01" * 30000 + b"\x6a")


def test_erlang_py_quirks_are_normalised() -> None:
    # true/false/undefined atoms and charlists (STRING_EXT)
    assert decode_term(b"\x83\x64\x00\x04true") == Atom("true")
    assert decode_term(b"\x83\x77\x09undefined") == Atom("undefined")
    assert decode_term(b"\x83\x6b\x00\x02hi") == [104, 105]
    assert encode_term(NIL) == b"\x83\x77\x03nil"
    assert encode_term(b"hi") == b"\x83\x6d\x00\x00\x00\x02hi"


def test_format_term() -> None:
    assert format_term((Atom("spawn"), 1, b"/bin/echo", [b"hi"], [])) == (
        '{spawn,1,<<"/bin/echo">>,[<<"hi">>],[]}')
    assert format_term([b"a\"\\", b"\x00\xff", b"", Atom("Caps"), Atom("end"), -3]) == (
        r'[<<"a\"\\">>,<<0,255>>,<<>>,' + "'Caps','end',-3]")


# --- v1 ------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=v1.MAX_ID)
bins = st.binary(min_size=1, max_size=20).filter(lambda b: b"\0" not in b)
options = st.builds(
    v1.SpawnOptions,
    cd=st.none() | bins,
    env=st.lists(st.tuples(bins.filter(lambda b: b"=" not in b), st.none() | bins),
                 max_size=3).map(tuple),
    clear_env=st.booleans(),
    arg0=st.none() | bins,
    stdin=st.sampled_from(["pipe", "null"]),
    stderr=st.sampled_from(["capture", "stdout", "discard"]),
    credit=st.none() | st.integers(min_value=0, max_value=2**40),
)
client_frames = st.one_of(
    st.builds(v1.Spawn, ids, bins, st.lists(st.binary(max_size=10).filter(
        lambda b: b"\0" not in b), max_size=3).map(tuple), options),
    st.builds(v1.Signal, ids, terms, st.integers(-5, 70), st.booleans()),
    st.builds(v1.CloseStdin, ids, terms),
    st.builds(v1.Stdin, ids, st.binary(max_size=100)),
    st.builds(v1.Credit, ids, st.sampled_from(list(v1.StreamKind)),
              st.integers(0, 2**32 - 1)),
)


@given(client_frames)
def test_client_frames_round_trip(frame: v1.ClientFrame) -> None:
    assert v1.decode_client_frame(v1.encode_client_frame(frame)) == frame


resin_frames = st.one_of(
    st.builds(v1.Spawned, ids, st.integers(1, 2**22)),
    st.builds(v1.SpawnError, ids, terms),
    st.builds(v1.Reply, ids, terms, terms),
    st.builds(v1.Exit, ids, st.sampled_from(["exit", "signal"]), st.integers(0, 255)),
    st.builds(v1.ErrorEvent, st.none() | ids, terms),
    st.builds(v1.Stdout, ids, st.binary(min_size=1, max_size=100)),
    st.builds(v1.Stderr, ids, st.binary(min_size=1, max_size=100)),
    st.builds(v1.StdinAck, ids, st.sampled_from(list(v1.AckStatus))),
    st.builds(v1.HelloReply, st.integers(0, 255)),
)


@given(resin_frames)
def test_resin_frames_round_trip(frame: v1.ResinFrame) -> None:
    assert v1.decode_resin_frame(v1.encode_resin_frame(frame)) == frame


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_client_frame_decoder_only_raises_protocol_errors(data: bytes) -> None:
    try:
        v1.decode_client_frame(data)
    except ProtocolError as exc:
        v1.encode_resin_frame(v1.error_event(exc))  # and the answer is encodable


@pytest.mark.heavy
@settings(max_examples=500)
@given(client_frames, st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)),
                               min_size=1, max_size=4))
def test_client_frame_decoder_survives_mutations(frame: v1.ClientFrame,
                                                 flips: list[tuple[int, int]]) -> None:
    data = bytearray(v1.encode_client_frame(frame))
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        v1.decode_client_frame(bytes(data))
    except ProtocolError as exc:
        v1.encode_resin_frame(v1.error_event(exc))


@given(st.binary(max_size=200))
def test_resin_frame_decoder_only_raises_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        v1.decode_resin_frame(data)


def test_hello_detection() -> None:
    assert v1.is_hello(b"\x00\x01") and v1.is_hello(b"\x00\x02")
    assert not v1.is_hello(b"\x00") and not v1.is_hello(b"\x00\x01\x02")
    assert not v1.is_hello(b"\x02\x01")


def test_huge_refs_and_echoes_are_bounded() -> None:
    big = b"x" * 10000
    with pytest.raises(ProtocolError) as info:
        v1.decode_client_frame(v1.encode_client_frame(v1.CloseStdin(3, big)))
    assert v1.error_event(info.value) == v1.ErrorEvent(3, (Atom("badarg"), Atom("ref")))
    huge = (Atom("what"), b"y" * 65000)
    with pytest.raises(ProtocolError) as info:
        v1.decode_client_frame(b"\x10" + encode_term(huge))
    assert v1.error_event(info.value) == v1.ErrorEvent(
        None, (Atom("unknown_request"), Atom("too_large")))


def test_spawn_option_first_occurrence_wins() -> None:
    term = (Atom("spawn"), 1, b"x", [], [(Atom("cd"), b"/a"), (Atom("cd"), b"/b")])
    frame = v1.decode_client_frame(b"\x10" + encode_term(term))
    assert isinstance(frame, v1.Spawn) and frame.options.cd == b"/a"


def _spawn_with(opts: list[tuple[Atom, object]]) -> v1.ClientFrame:
    return v1.decode_client_frame(b"\x10" + encode_term((Atom("spawn"), 1, b"x", [], opts)))


def test_spawn_options_parsed_from_the_table_match_the_fields() -> None:
    # Every SpawnOptions field has exactly one option parser (at its index),
    # and together with `parts` they are the options the decoder accepts.
    keys = [key for key, _, _ in v1._SPAWN_PARSERS]
    assert keys == list(SpawnOptions._fields)
    assert [index for _, index, _ in v1._SPAWN_PARSERS] == list(range(len(keys)))
    assert {*keys, "parts"} == v1._OPTION_KEYS
    assert SpawnOptions(*v1._SPAWN_DEFAULTS) == SpawnOptions()
    # No option: the defaults; lacca's usual set: just those fields changed.
    assert _spawn_with([]) == v1.Spawn(1, b"x", (), SpawnOptions())
    frame = _spawn_with([(Atom("cd"), b"/d"), (Atom("stdin"), Atom("null")),
                         (Atom("credit"), 7), (Atom("parts"), 2)])
    assert frame == v1.Spawn(1, b"x", (), SpawnOptions(cd=b"/d", stdin="null", credit=7), 2)
    assert _spawn_with([(Atom("credit"), Atom("infinity"))]).options.credit is None  # type: ignore[union-attr]
    assert _spawn_with([(Atom("stderr"), Atom("discard"))]).options.stderr == "discard"  # type: ignore[union-attr]


@pytest.mark.parametrize(("opt", "value"), [
    ("stdin", b"null"), ("stdin", Atom("capture")), ("stderr", Atom("null")),
    ("stderr", b"stdout"), ("credit", -1), ("credit", Atom("nil")), ("credit", b"1"),
    ("cd", Atom("nil")), ("parts", 0),
])
def test_spawn_option_of_the_wrong_shape_is_named(opt: str, value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        _spawn_with([(Atom(opt), value)])
    assert v1.error_event(info.value) == v1.SpawnError(1, (Atom("badarg"), Atom(opt)))


def test_two_bad_spawn_options_report_the_same_one_whatever_their_order() -> None:
    bad = [(Atom("stdin"), b"no"), (Atom("cd"), 5)]
    for opts in (bad, bad[::-1]):
        with pytest.raises(ProtocolError) as info:
            _spawn_with(opts)  # type: ignore[arg-type]
        assert v1.error_event(info.value) == v1.SpawnError(1, (Atom("badarg"), Atom("cd")))


def test_record_built_by_position_equals_one_built_by_keyword() -> None:
    # Record.__init__'s all-positional fast path sets the same fields.
    values = (b"/d", 4242, ((b"A", b"1"),), True, b"a0", "null", "stdout", 5,
              (("pids.max", "9"),), None, 0, b"g", (("nofile", 1, 2),), (StreamKind.STDOUT,), 9)
    by_position = SpawnOptions(*values)
    assert by_position == SpawnOptions(**dict(zip(SpawnOptions._fields, values, strict=True)))
    assert by_position._values() == values
    with pytest.raises(TypeError):
        SpawnOptions(*values, 1)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        by_position.cd = b"/x"  # type: ignore[misc]
