"""Sans-IO protocol core: framing, the v0 and v1 codecs, messages and errors.

Nothing in this package touches file descriptors or processes: bytes go in,
messages and events come out (in the manner of h11).
"""

from resin_py.protocol.errors import (
    BadArgument,
    BadFrame,
    BadTerm,
    FramingError,
    MessageTooLarge,
    PacketTooLarge,
    ProtocolError,
    ResinError,
    SpawnFailed,
    UnknownRequest,
    V0Error,
    V1Error,
    ZeroLengthPacket,
)
from resin_py.protocol.framing import MAX_PACKET, PacketReader, encode_packet

__all__ = [
    "MAX_PACKET",
    "BadArgument",
    "BadFrame",
    "BadTerm",
    "FramingError",
    "MessageTooLarge",
    "PacketReader",
    "PacketTooLarge",
    "ProtocolError",
    "ResinError",
    "SpawnFailed",
    "UnknownRequest",
    "V0Error",
    "V1Error",
    "ZeroLengthPacket",
    "encode_packet",
]
