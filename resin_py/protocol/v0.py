"""v0: the legacy msgpack protocol of lacca 0.2.3 / resin 0.3.x (docs/protocol.md §3).

Client to resin: `flags:u8 | msgpack chunk`, chunks joined while flags has 0x80.
Resin to client: one msgpack value per packet, keys in rmp-serde's field order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import msgpack

from resin_py.protocol.errors import MessageTooLarge, V0Error
from resin_py.protocol.framing import MAX_PACKET

# Data bytes per DataOut: an int array may take 2 bytes per data byte, and the
# whole message must fit in one 65,535-byte packet.
V0_MAX_DATA = 32000
# Cap on a reassembled chunked message, so a client cannot make resin buffer
# without bound.
V0_MAX_MESSAGE = 64 * 1024 * 1024
# Chunk payload size lacca 0.2.3 uses (a packet also holds the flags byte).
V0_MAX_CHUNK = 65532
# flags bit 7: more chunks follow. Bits 0-3 are a type lacca sets to 0x02.
FLAG_MORE = 0x80
DEFAULT_FLAGS = 0x02

Stream: TypeAlias = Literal["Stdout", "Stderr"]


@dataclass(frozen=True)
class StartProcess:
    exec: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataIn:
    data: bytes


@dataclass(frozen=True)
class KillProcess:
    pass


@dataclass(frozen=True)
class DataOut:
    stream: Stream
    data: bytes


@dataclass(frozen=True)
class ExitStatus:
    code: int | None


@dataclass(frozen=True)
class ErrorReport:
    msg: str


ClientMessage: TypeAlias = StartProcess | DataIn | KillProcess
ResinMessage: TypeAlias = DataOut | ExitStatus | ErrorReport


# --- resin side: decode what the client sends -------------------------------


class V0Decoder:
    """Turns client packets into messages, joining chunked ones."""

    def __init__(self, max_message: int = V0_MAX_MESSAGE) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_message
        self._oversized = False

    def feed_packet(self, payload: bytes) -> ClientMessage | None:
        """One packet payload in; a message out, or None while chunks are pending."""
        if not payload:
            raise V0Error("empty packet: no flags byte")
        flags = payload[0]
        chunk = payload[1:]
        self._size += len(chunk)
        if self._size > self._max:
            self._oversized = True
            self._parts.clear()
        elif not self._oversized:
            self._parts.append(chunk)
        if flags & FLAG_MORE:
            return None
        parts, oversized, size = self._parts, self._oversized, self._size
        self._parts, self._oversized, self._size = [], False, 0
        if oversized:
            raise MessageTooLarge(f"message of {size} bytes exceeds {self._max} bytes")
        return parse_client_value(unpack(b"".join(parts)))


def unpack(data: bytes) -> Any:
    """Decode exactly one msgpack value."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    # msgpack raises ExtraData, FormatError, StackError, UnicodeDecodeError,
    # ValueError, TypeError (unhashable keys), ...: all mean malformed input.
    except Exception as exc:
        raise V0Error(f"malformed msgpack: {type(exc).__name__}: {exc}"[:300]) from exc


def parse_client_value(value: Any) -> ClientMessage:
    """Map a decoded msgpack value to a client message (key order does not matter)."""
    if value == "KillProcess":
        return KillProcess()
    if not isinstance(value, dict) or len(value) != 1:
        raise V0Error(f"unknown message: {_short(value)}")
    ((tag, body),) = value.items()
    if tag == "KillProcess":
        return KillProcess()
    if tag == "DataIn":
        buf = body.get("buf") if isinstance(body, dict) else None
        if isinstance(buf, bytes):
            return DataIn(buf)
        if isinstance(buf, list):
            try:
                return DataIn(bytes(buf))
            except (TypeError, ValueError):
                pass
        raise V0Error("DataIn: buf must be an array of ints 0..255 or a bin")
    if tag == "StartProcess":
        if not isinstance(body, dict):
            raise V0Error("StartProcess: body must be a map")
        exe, args = body.get("exec"), body.get("args", [])
        if not isinstance(exe, str) or not exe or "\0" in exe:
            raise V0Error("StartProcess: exec must be a non-empty string")
        if not isinstance(args, list) or not all(
            isinstance(a, str) and "\0" not in a for a in args
        ):
            raise V0Error("StartProcess: args must be an array of strings")
        return StartProcess(exe, tuple(args))
    raise V0Error(f"unknown message: {_short(tag)}")


def _short(value: Any) -> str:
    return repr(value)[:100]


# --- resin side: encode what resin sends -------------------------------------

_DATA_OUT_PREFIX: dict[str, bytes] = {
    s: msgpack.packb({"DataOut": {"ty": s, "buf": []}})[:-1]  # without the empty array
    for s in ("Stdout", "Stderr")
}


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def data_out_parts(stream: Stream, data: bytes) -> tuple[bytes, bytes]:
    """A DataOut as (head, tail) to write back to back without joining them.

    buf is an array of ints, each byte a positive fixint or `cc xx`; for ASCII
    data that is the array header followed by the data bytes themselves.
    """
    if data.isascii():
        return _DATA_OUT_PREFIX[stream] + _array_header(len(data)), data
    return _DATA_OUT_PREFIX[stream], msgpack.packb(list(data))


def encode_resin_message(msg: ResinMessage) -> bytes:
    """The packet payload for a resin -> client message."""
    if isinstance(msg, DataOut):
        head, tail = data_out_parts(msg.stream, msg.data)
        payload = head + tail
    elif isinstance(msg, ExitStatus):
        payload = msgpack.packb({"ExitStatus": {"code": msg.code}})
    else:
        payload = msgpack.packb({"ErrorReport": {"msg": msg.msg}})
    if len(payload) > MAX_PACKET:
        raise V0Error(f"message of {len(payload)} bytes does not fit in a packet")
    return bytes(payload)


# --- client side (tests, tools) ----------------------------------------------


def encode_client_message(
    msg: ClientMessage,
    *,
    flags: int = DEFAULT_FLAGS,
    chunk_size: int = V0_MAX_CHUNK,
    data_as_bin: bool = False,
) -> list[bytes]:
    """Packet payloads for a client message, chunked as lacca 0.2.3 does."""
    value: Any
    if isinstance(msg, StartProcess):
        value = {"StartProcess": {"exec": msg.exec, "args": list(msg.args)}}
    elif isinstance(msg, DataIn):
        value = {"DataIn": {"buf": msg.data if data_as_bin else list(msg.data)}}
    else:
        value = {"KillProcess": None}
    return chunk_payload(msgpack.packb(value), flags=flags, chunk_size=chunk_size)


def chunk_payload(data: bytes, *, flags: int = DEFAULT_FLAGS, chunk_size: int = V0_MAX_CHUNK
                  ) -> list[bytes]:
    """Split an encoded value into flagged chunks (0x80 on all but the last)."""
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    last = len(pieces) - 1
    return [
        bytes((flags & ~FLAG_MORE | (FLAG_MORE if i < last else 0),)) + p
        for i, p in enumerate(pieces)
    ]


def decode_resin_message(payload: bytes) -> ResinMessage:
    """Decode a resin -> client packet payload (strict about the shape)."""
    value = unpack(payload)
    if isinstance(value, dict) and len(value) == 1:
        ((tag, body),) = value.items()
        if isinstance(body, dict):
            if tag == "DataOut" and body.get("ty") in ("Stdout", "Stderr"):
                buf = body.get("buf")
                if isinstance(buf, list):
                    return DataOut(body["ty"], bytes(buf))
            if tag == "ExitStatus" and "code" in body:
                code = body["code"]
                if code is None or isinstance(code, int):
                    return ExitStatus(code)
            if tag == "ErrorReport" and isinstance(body.get("msg"), str):
                return ErrorReport(body["msg"])
    raise V0Error(f"unexpected message from resin: {_short(value)}")
