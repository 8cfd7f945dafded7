"""Erlang `{packet, 2}` framing: a 2-byte big-endian length, then the payload."""

from __future__ import annotations

import struct

from resin_py.protocol.errors import PacketTooLarge, ZeroLengthPacket

# The u16 length header cannot describe more.
MAX_PACKET = 65535

_HEADER = struct.Struct(">H")


def encode_packet(payload: bytes) -> bytes:
    """Frame one payload (1..MAX_PACKET bytes)."""
    if not 0 < len(payload) <= MAX_PACKET:
        raise PacketTooLarge(f"payload of {len(payload)} bytes cannot be framed")
    return _HEADER.pack(len(payload)) + payload


def packet_header(length: int) -> bytes:
    """The 2-byte header for a payload of `length` bytes (for scatter writes)."""
    return _HEADER.pack(length)


class PacketReader:
    """Reassembles packets from bytes that arrive in arbitrary pieces.

    `feed` the bytes as they are read, then call `next_packet` until it returns
    None. A zero-length packet raises ZeroLengthPacket *after* being consumed,
    so the caller can report it and go on.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def whole(self, data: bytes | memoryview) -> bytes | None:
        """The payload if nothing is buffered and `data` is exactly one
        non-empty packet (a client that waits for each answer sends one per
        read): no reassembly. None otherwise: `feed` it then."""
        n = len(data)
        if n > 2 and len(self._buf) == self._pos and (data[0] << 8 | data[1]) == n - 2:
            return bytes(data[2:])
        return None

    def feed(self, data: bytes | memoryview) -> None:
        if self._pos:
            # Drop consumed bytes once per feed, not once per packet.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_packet(self) -> bytes | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2:
            return None
        length = (buf[pos] << 8) | buf[pos + 1]
        if length == 0:
            self._pos = pos + 2
            raise ZeroLengthPacket()
        end = pos + 2 + length
        if len(buf) < end:
            return None
        self._pos = end
        return bytes(buf[pos + 2 : end])

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self._buf) - self._pos
