"""docs/protocol-vectors.txt against the codecs (and the BEAM, when elixir is there)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import pytest
from make_vectors import raw_form

from resin_py.protocol import v0, v1
from resin_py.protocol.errors import V0Error
from resin_py.protocol.etf import decode_term
from resin_py.protocol.terms import format_term
from resin_py.protocol.v0_session import DECODE_ERROR, ERROR_PREFIX
from resin_py.testing import ResinClient

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "protocol-vectors.txt"


class Vector(NamedTuple):
    protocol: str
    direction: str
    name: str
    payloads: list[bytes]
    decoded: str


def load() -> list[Vector]:
    vectors = []
    for line in VECTORS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, hexes, decoded = line.split(" | ", 2)
        protocol, direction, name = head.split(" ")
        vectors.append(Vector(protocol, direction, name,
                              [bytes.fromhex(h) for h in hexes.split(",")], decoded))
    return vectors


ALL = load()
BY_NAME = {(v.protocol, v.direction, v.name): v for v in ALL}


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: from_json(x) for k, x in value.items()}
    if isinstance(value, list):
        return [from_json(x) for x in value]
    return value


def test_names_are_unique_and_coverage_is_complete() -> None:
    assert len(BY_NAME) == len(ALL)
    names = {f"{v.protocol} {v.direction} {v.name}" for v in ALL}
    for required in ("v0 c2r session_echo_start", "v0 r2c session_echo_out",
                     "v0 r2c session_echo_exit", "v0 c2r data_in_chunked",
                     "v0 r2c exit_status_signal", "v0 r2c data_out_high_bytes",
                     "v0 c2r data_in_bin", "v0 c2r kill_process_bare", "v0 c2r session_cat_start",
                     "v0 r2c data_out_cat_echo", "v1 c2r hello",
                     "v1 r2c hello_reply", "v1 c2r close_stdin", "v1 c2r signal_group"):
        assert required in names
    kinds = {type(v1.decode_resin_frame(v.payloads[0])).__name__ for v in ALL
             if v.protocol == "v1" and v.direction == "r2c"}
    assert kinds == {"HelloReply", "Spawned", "SpawnError", "Reply", "Exit", "ErrorEvent",
                     "Direct", "Stdout", "Stderr", "StdinAck"}
    kinds = {type(v1.decode_client_frame(v.payloads[0])).__name__ for v in ALL
             if v.protocol == "v1" and v.direction == "c2r"}
    assert kinds == {"Hello", "Spawn", "SpawnPart", "SpawnCancel", "Signal", "CloseStdin", "Resize",
                     "Relay", "Stdin", "Credit"}


def session_of(vec: Vector) -> str | None:
    """The group of a `session_<group>_...` vector."""
    return vec.name.split("_")[1] if vec.name.startswith("session_") else None


SESSIONS: dict[str, list[Vector]] = {}
for _vec in ALL:
    if _vec.protocol == "v0" and (_group := session_of(_vec)):
        SESSIONS.setdefault(_group, []).append(_vec)


def answer_to(vec: Vector) -> Vector | None:
    """The r2c vector that follows a c2r one in its session."""
    group = SESSIONS.get(session_of(vec) or "", [])
    later = group[group.index(vec) + 1:] if vec in group else []
    return later[0] if later and later[0].direction == "r2c" else None


@pytest.mark.parametrize("vec", [v for v in ALL if v.protocol == "v0"], ids=lambda v: v.name)
def test_v0_vector(vec: Vector) -> None:
    value = from_json(json.loads(vec.decoded))
    if vec.direction == "c2r":
        assert all(p[0] & 0x80 for p in vec.payloads[:-1]) and not vec.payloads[-1][0] & 0x80
        assert msgpack.unpackb(b"".join(p[1:] for p in vec.payloads)) == value
        decoder = v0.V0Decoder()
        try:
            msgs = [decoder.feed_packet(p) for p in vec.payloads]
        except V0Error as exc:
            # A message resin refuses: its session says with which ErrorReport.
            answer = answer_to(vec)
            assert answer is not None, "a refused message outside a session"
            assert v0.decode_resin_message(answer.payloads[0]) == v0.ErrorReport(
                ERROR_PREFIX + DECODE_ERROR + str(exc))
            with pytest.raises(V0Error):
                v0.parse_client_value(value)
            return
        assert msgs[:-1] == [None] * (len(msgs) - 1)
        msg = msgs[-1]
        assert msg == v0.parse_client_value(value)
        if isinstance(value, dict):  # lacca's encoding (the bare string is not)
            chunk = len(vec.payloads[0]) - 1 if len(vec.payloads) > 1 else v0.V0_MAX_CHUNK
            as_bin = isinstance(value.get("DataIn", {}).get("buf"), bytes)
            assert msg is not None
            assert v0.encode_client_message(msg, chunk_size=chunk, data_as_bin=as_bin,
                                            flags=vec.payloads[-1][0]) == vec.payloads
    else:
        [payload] = vec.payloads
        assert msgpack.unpackb(payload) == value
        assert v0.encode_resin_message(v0.decode_resin_message(payload)) == payload


def test_v0_sessions_cover_the_drop_in_rules() -> None:
    assert {"echo", "noargs", "badarg", "bogus", "flagszero", "burst", "enoent"} <= set(SESSIONS)
    assert SESSIONS["flagszero"][0].payloads[0][0] == 0x00
    burst = [v0.decode_resin_message(v.payloads[0]) for v in SESSIONS["burst"]
             if v.direction == "r2c"]
    assert [len(m.data) for m in burst if isinstance(m, v0.DataOut)] == [1024] * 4 + [904]
    assert isinstance(burst[-1], v0.ExitStatus)


@pytest.mark.parametrize("group", [g for g, vs in SESSIONS.items()
                                   if any(v.direction == "r2c" for v in vs)])
def test_v0_session_replays_live(resin: ResinClient, group: str) -> None:
    for vec in SESSIONS[group]:
        if vec.direction == "c2r":
            for payload in vec.payloads:
                resin.send_packet(payload)
        else:
            assert resin.recv_packet() == vec.payloads[0], vec.name


def decoded_form(vec: Vector) -> str:
    [payload] = vec.payloads
    if payload[0] in (v1.CONTROL, v1.EVENT):
        return format_term(decode_term(payload[1:]))
    c2r = vec.direction == "c2r"
    return raw_form(v1.decode_client_frame(payload) if c2r else v1.decode_resin_frame(payload))


@pytest.mark.parametrize("vec", [v for v in ALL if v.protocol == "v1"], ids=lambda v: v.name)
def test_v1_vector(vec: Vector) -> None:
    [payload] = vec.payloads
    assert decoded_form(vec) == vec.decoded
    if vec.direction == "c2r":
        frame = v1.decode_client_frame(payload)  # an acceptable request
        if payload[0] != v1.CONTROL:  # CONTROL bytes come from the BEAM
            assert v1.encode_client_frame(frame) == payload
    else:
        assert v1.encode_resin_frame(v1.decode_resin_frame(payload)) == payload


@pytest.mark.heavy
@pytest.mark.skipif(shutil.which("elixir") is None, reason="elixir is not installed")
def test_v1_terms_agree_with_the_beam() -> None:
    """The BEAM decodes every CONTROL/EVENT hex (binary_to_term, [safe]) to the
    term the decoded form denotes."""
    cases = [v for v in ALL if v.protocol == "v1" and v.payloads[0][0] in (0x10, 0x20)]
    script = r"""
    for line <- IO.stream(:stdio, :line) do
      [hex, text] = String.split(String.trim(line), " ", parts: 2)
      {:ok, toks, _} = :erl_scan.string(String.to_charlist(text <> "."))
      {:ok, term} = :erl_parse.parse_term(toks)
      <<_type, etf::binary>> = Base.decode16!(hex, case: :lower)
      IO.puts(if :erlang.binary_to_term(etf, [:safe]) == term, do: "ok", else: "mismatch")
    end
    """
    stdin = "".join(f"{v.payloads[0].hex()} {v.decoded}\n" for v in cases)
    out = subprocess.run(["elixir", "-e", script], input=stdin, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert dict(zip([v.name for v in cases], out, strict=True)) == {
        v.name: "ok" for v in cases}
