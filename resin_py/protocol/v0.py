"""v0: the legacy msgpack protocol of lacca 0.2.3 / resin 0.3.x (docs/protocol.md §3).

Client to resin: `flags:u8 | msgpack chunk`, chunks joined while flags has 0x80.
Resin to client: one msgpack value per packet, keys in rmp-serde's field order.
"""

from __future__ import annotations

import struct

from resin_py.protocol.common import Record
from resin_py.protocol.errors import MessageTooLarge, V0Error
from resin_py.protocol.framing import MAX_PACKET

# Start-up diet (see protocol/common.py): no `typing`, `dataclasses`, `reprlib`
# nor `msgpack` at import time. resin reads and writes lacca 0.2.3's forms by
# hand; msgpack is imported only on rare paths (skipping an ignored container,
# an int form lacca never sends) and by the client-side helpers.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Literal, TypeAlias

# Data bytes per DataOut: resin 0.3.x read its child's pipes 1 KiB at a time
# and sent each read as one DataOut, so a burst of 5,000 bytes is five of them
# (1024 * 4 + 904). The v0 session cuts its reads so (v0_session.V0_READ_LIMIT).
V0_MAX_DATA = 1024
# Cap on a reassembled chunked message, so a client cannot make resin buffer
# without bound.
V0_MAX_MESSAGE = 64 * 1024 * 1024
# Chunk payload size lacca 0.2.3 uses (a packet also holds the flags byte).
V0_MAX_CHUNK = 65532
# flags bit 7: more chunks follow. Bits 0-3 are a type lacca sets to 0x02;
# resin ignores every bit but 0x80, as resin 0.3.x did.
FLAG_MORE = 0x80
DEFAULT_FLAGS = 0x02

Stream: TypeAlias = "Literal['Stdout', 'Stderr']"


class StartProcess(Record):
    exec: str
    args: tuple[str, ...] = ()


class DataIn(Record):
    data: bytes


class KillProcess(Record):
    pass


class DataOut(Record):
    stream: Stream
    data: bytes


class ExitStatus(Record):
    code: int | None


class ErrorReport(Record):
    msg: str


ClientMessage: TypeAlias = "StartProcess | DataIn | KillProcess"
ResinMessage: TypeAlias = "DataOut | ExitStatus | ErrorReport"


# --- error texts ------------------------------------------------------------------
#
# resin 0.3.x answered a message it could not decode with
# `resin daemon error: fail serializing payload: <rmp-serde error, Debug>`;
# the v0 session adds that prefix to every V0Error the decoder raises. Where
# the decoder knows the text rmp-serde gave, it uses it; elsewhere its own.

# The variants of resin 0.3.x's message enum, in its order (serde lists them
# when it meets an unknown one).
_VARIANTS = "`StartProcess`, `KillProcess`, `DataOut`, `DataIn`, `ExitStatus`, `ErrorReport`"
# rmp-serde's error for the never-used marker 0xc1.
RESERVED = "TypeMismatch(Reserved)"
# Longest value rendered in an error text (docs/protocol.md §4.9).
_TEXT_CUT = 80


def rust_debug_str(text: str) -> str:
    """`text` as Rust's `{:?}` prints a str (quoted, escaped)."""
    out = []
    for ch in text:
        if ch in _RUST_ESCAPES:
            out.append(_RUST_ESCAPES[ch])
        elif ch < " " or "\x7f" <= ch < "\xa0":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_RUST_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "\0": "\\0"}


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT_CUT else text[:_TEXT_CUT - 3] + "..."


def syntax_error(text: str) -> V0Error:
    """serde's custom error, as rmp-serde wraps it: `Syntax("...")`."""
    return V0Error(f"Syntax({rust_debug_str(text)})")


def _missing_field(name: str) -> V0Error:
    return syntax_error(f"missing field `{name}`")


def _unknown_variant(tag: str) -> V0Error:
    return syntax_error(f"unknown variant `{_cut(tag)}`, expected one of {_VARIANTS}")


# --- resin side: decode what the client sends -------------------------------

# Limits on decoding (docs/protocol.md §4.9). Only DataIn's buf may be long
# (up to the message cap); everything else is read field by field, each
# within its own limit, so that no message costs more memory than about its
# own size nor more CPU than a linear pass.
#
# A msgpack str resin reads (tag, exec, one arg): Linux's MAX_ARG_STRLEN.
V0_MAX_STRING = 128 * 1024
# Strings in StartProcess.args.
V0_MAX_ARGS = 256 * 1024
# Bytes of what resin ignores in one message: other keys (and their values)
# in a body, the body of KillProcess.
V0_MAX_IGNORED = 4096


class V0Decoder:
    """Turns client packets into messages, joining chunked ones."""

    def __init__(self, max_message: int = V0_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._size = 0
        self._max = max_message

    def feed_packet(self, payload: bytes) -> ClientMessage | None:
        """One packet payload in; a message out, or None while chunks are pending."""
        if not payload:
            raise V0Error("empty packet: no flags byte")
        flags = payload[0]
        self._size += len(payload) - 1
        if self._size <= self._max:
            self._buf += memoryview(payload)[1:]
        elif self._buf:
            self._buf = bytearray()  # oversized: drop what was kept, count the rest
        if flags & FLAG_MORE:
            return None
        buf, size = self._buf, self._size
        self._buf, self._size = bytearray(), 0
        if size > self._max:
            raise MessageTooLarge(f"message of {size} bytes exceeds {self._max} bytes")
        return decode_client_message(buf)


def decode_client_message(data: bytearray | bytes) -> ClientMessage:
    """Decode one reassembled client message (key order does not matter).

    A bytearray is used as scratch space: DataIn's int array is decoded in
    place, so that decoding a message costs at most one more copy of it.
    """
    buf = data if isinstance(data, bytearray) else bytearray(data)
    reader = _Reader(buf)
    try:
        msg = _message(reader)
    except V0Error:
        raise
    # IndexError (ran off the end), UnicodeDecodeError, what msgpack raises
    # on a value resin skips (FormatError, StackError, ...): malformed input.
    except Exception as exc:
        raise V0Error(f"malformed msgpack: {type(exc).__name__}: {exc}"[:300]) from None
    if reader.pos != len(buf):
        raise V0Error(f"malformed msgpack: {len(buf) - reader.pos} bytes after the message")
    return msg


_BAD_BUF = "DataIn: buf must be an array of ints 0..255 or a bin"


def _message(r: _Reader) -> ClientMessage:
    n = r.map_header()
    if n is None:
        length = r.str_header()
        if length is None:
            raise r.reserved() or V0Error(f"unknown message: {r.describe()}")
        text = r.text(length, "message")
        if text == "KillProcess":
            return KillProcess()
        if text in _VARIANTS_SET:
            raise V0Error(f"unknown message: {_short_str(text)}")
        raise _unknown_variant(text)
    if n != 1:
        raise V0Error(f"unknown message: a map of {n} entries")
    length = r.str_header()
    if length is None:
        raise r.reserved() or V0Error(f"unknown message: a map keyed by {r.describe()}")
    tag = r.text(length, "message tag")
    if tag == "KillProcess":
        r.skip()
        return KillProcess()
    if tag == "DataIn":
        return _data_in(r)
    if tag == "StartProcess":
        return _start_process(r)
    if tag in _VARIANTS_SET:  # DataOut, ExitStatus, ErrorReport: resin's own
        raise V0Error(f"unknown message: {_short_str(tag)}")
    raise _unknown_variant(tag)


_VARIANTS_SET = frozenset(("StartProcess", "KillProcess", "DataOut", "DataIn", "ExitStatus",
                           "ErrorReport"))


def _data_in(r: _Reader) -> DataIn:
    n = r.map_header()
    if n is None:
        raise r.reserved() or V0Error(_BAD_BUF)
    data: bytes | None = None
    for _ in range(n):
        if r.key() == "buf":
            data = r.buf()  # a repeated key: the last one wins, as in a dict
        else:
            r.skip()
    if data is None:
        raise _missing_field("buf")
    return DataIn(data)


def _start_process(r: _Reader) -> StartProcess:
    n = r.map_header()
    if n is None:
        raise r.reserved() or V0Error("StartProcess: body must be a map")
    exe: str | None = None
    args: list[str] | None = None
    for _ in range(n):
        key = r.key()
        if key == "exec":
            length = r.str_header()
            if length is None:
                raise r.type_error("a string")
            exe = r.text(length, "StartProcess: exec")
            if "\0" in exe:
                raise V0Error("StartProcess: exec contains a NUL byte")
        elif key == "args":
            count = r.array_header()
            if count is None:
                raise r.type_error("a sequence")
            if count > V0_MAX_ARGS:
                raise V0Error(f"StartProcess: {count} args (at most {V0_MAX_ARGS})")
            args = []
            for _ in range(count):
                length = r.str_header()
                if length is None:
                    raise r.type_error("a string")
                arg = r.text(length, "StartProcess: an arg")
                if "\0" in arg:
                    raise V0Error("StartProcess: an arg contains a NUL byte")
                args.append(arg)
        else:
            r.skip()
    # Like serde's derived code: the first missing field in declaration order.
    if exe is None:
        raise _missing_field("exec")
    if args is None:
        raise _missing_field("args")
    return StartProcess(exe, tuple(args))


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# Size of the length field after a str / bin / ext header byte.
_STR_LEN = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BIN_LEN = {0xC4: 1, 0xC5: 2, 0xC6: 4}
# Scalars skip() passes over itself: marker -> bytes after it.
_SCALAR_SIZE = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
                0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, **{b: 0 for b in range(0x80)},
                **{b: 0 for b in range(0xE0, 0x100)}}
# Int markers and their struct format (any msgpack int form).
_INT_FORMS = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
              0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}


class _Reader:
    """A cursor over a message for the few msgpack forms resin reads itself."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.pos = 0
        self.ignored = 0

    def _length(self, size: int) -> int:
        start = self.pos + 1
        self.pos = start + size
        if self.pos > len(self.data):
            raise IndexError("truncated header")
        return int.from_bytes(self.data[start:self.pos], "big")

    def map_header(self) -> int | None:
        b = self.data[self.pos]
        if 0x80 <= b <= 0x8F:
            self.pos += 1
            return b & 0x0F
        if b == 0xDE or b == 0xDF:
            return self._length(2 if b == 0xDE else 4)
        return None

    def array_header(self) -> int | None:
        b = self.data[self.pos]
        if 0x90 <= b <= 0x9F:
            self.pos += 1
            return b & 0x0F
        if b == 0xDC or b == 0xDD:
            return self._length(2 if b == 0xDC else 4)
        return None

    def str_header(self) -> int | None:
        b = self.data[self.pos]
        if 0xA0 <= b <= 0xBF:
            self.pos += 1
            return b & 0x1F
        size = _STR_LEN.get(b)
        return None if size is None else self._length(size)

    def text(self, length: int, what: str) -> str:
        """The str of `length` bytes at pos (after its header)."""
        if length > V0_MAX_STRING:
            raise V0Error(f"{what}: string of {length} bytes (at most {V0_MAX_STRING})")
        start = self.pos
        self.pos += length
        if self.pos > len(self.data):
            raise IndexError("truncated str")
        return self.data[start:self.pos].decode()

    def key(self) -> str | None:
        """A map key that may be one resin looks for; other keys are skipped."""
        start = self.pos
        length = self.str_header()
        if length is not None and length <= 16:
            return self.text(length, "key")
        self.pos = start
        self.skip()
        return None

    def skip(self) -> None:
        """Pass over one value resin ignores, within V0_MAX_IGNORED bytes per
        message. Scalars are read here; msgpack checks a container (valid
        UTF-8, keys, ...) and finds its end."""
        data, pos = self.data, self.pos
        b = data[pos]
        size = _SCALAR_SIZE.get(b)
        if size is None:
            if b == 0xC1:
                raise V0Error(RESERVED)
            length = self.str_header()
            if length is None or 1 + length > V0_MAX_IGNORED - self.ignored:
                self.pos = pos
                self._skip_msgpack()
                return
            self.text(length, "an ignored value")  # checks its UTF-8
        elif pos + 1 + size > len(data):
            raise IndexError("truncated value")
        else:
            self.pos = pos + 1 + size
        self.ignored += self.pos - pos
        if self.ignored > V0_MAX_IGNORED:
            raise V0Error(f"ignored keys and values exceed {V0_MAX_IGNORED} bytes")

    def _skip_msgpack(self) -> None:
        import msgpack  # rare: only lacca 0.2.3 never sends such a value

        budget = V0_MAX_IGNORED - self.ignored
        window = bytes(self.data[self.pos:self.pos + budget])
        try:
            msgpack.unpackb(window, raw=False, strict_map_key=True)
            used = len(window)
        except msgpack.ExtraData as exc:
            used = len(window) - len(exc.extra)
        except ValueError as exc:
            if str(exc) != "Unpack failed: incomplete input" or len(window) < budget:
                raise
            raise V0Error(f"ignored keys and values exceed {V0_MAX_IGNORED} bytes") from None
        self.pos += used
        self.ignored += used

    def buf(self) -> bytes:
        """DataIn's buf: a bin, or an array of ints 0..255 (decoded in place)."""
        b = self.data[self.pos]
        size = _BIN_LEN.get(b)
        if size is not None:
            n = self._length(size)
            start, self.pos = self.pos, self.pos + n
            if self.pos > len(self.data):
                raise IndexError("truncated bin")
            return bytes(memoryview(self.data)[start:self.pos])
        count = self.array_header()
        if count is None:
            raise self.reserved() or V0Error(_BAD_BUF)
        if count > len(self.data) - self.pos:  # each element takes at least one byte
            raise IndexError("truncated array")
        data, self.pos = _int_array(self.data, self.pos, count)
        return data

    def reserved(self) -> V0Error | None:
        """rmp-serde's error if the value at pos has the never-used marker 0xc1."""
        return V0Error(RESERVED) if self.data[self.pos] == 0xC1 else None

    def type_error(self, expected: str) -> V0Error:
        """serde's `invalid type` error for the value at pos where `expected`
        was wanted (our own text for the forms whose rendering is not known)."""
        reserved = self.reserved()
        if reserved:
            return reserved
        unexpected = self.unexpected()
        if unexpected is None:
            return V0Error(f"invalid type: {self.describe()}, expected {expected}")
        return syntax_error(f"invalid type: {unexpected}, expected {expected}")

    def unexpected(self) -> str | None:
        """The value at pos as serde's `Unexpected` displays it, None for an ext."""
        data, pos = self.data, self.pos
        b = data[pos]
        if b <= 0x7F or b >= 0xE0:
            return f"integer `{b if b <= 0x7F else b - 256}`"
        if b in _INT_FORMS:
            fmt = _INT_FORMS[b]
            (value,) = struct.unpack_from(fmt, data, pos + 1)
            return f"integer `{value}`"
        if b == 0xC0:
            return "unit value"
        if b in (0xC2, 0xC3):
            return f"boolean `{'true' if b == 0xC3 else 'false'}`"
        if b in (0xCA, 0xCB):
            (number,) = struct.unpack_from(">f" if b == 0xCA else ">d", data, pos + 1)
            return f"floating point `{_rust_float(number)}`"
        length = self.str_header()
        if length is not None:
            start = self.pos
            text = bytes(data[start:start + min(length, 4 * _TEXT_CUT)]).decode(errors="replace")
            return f"string {rust_debug_str(_cut(text))}"
        if b in _BIN_LEN:
            return "byte array"
        if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
            return "sequence"
        if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):
            return "map"
        return None

    def describe(self) -> str:
        """What the value at pos is, without decoding it (for error texts)."""
        b = self.data[self.pos]
        n = self.array_header()
        if n is not None:
            return f"an array of {n} entries"
        if b in _BIN_LEN:
            return f"a bin of {self._length(_BIN_LEN[b])} bytes"
        if b <= 0x7F or b >= 0xE0 or 0xCC <= b <= 0xD3:
            return "an integer"
        return {0xC0: "nil", 0xC2: "false", 0xC3: "true", 0xCA: "a float",
                0xCB: "a float"}.get(b, f"a value of type {b:#04x}")


def _rust_float(number: float) -> str:
    """A float as serde displays it in errors: Rust's `{}` (no exponent), with
    a decimal point."""
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "inf" if number > 0 else "-inf"
    text = repr(number)
    if "e" in text:  # Rust never writes an exponent: expand it
        mantissa, exp = text.split("e")
        sign = "-" if mantissa.startswith("-") else ""
        digits = mantissa.lstrip("-")
        whole, _, frac = digits.partition(".")
        digits, point = whole + frac, len(whole) + int(exp)
        if point <= 0:
            text = f"{sign}0.{'0' * -point}{digits}"
        elif point >= len(digits):
            text = f"{sign}{digits}{'0' * (point - len(digits))}"
        else:
            text = f"{sign}{digits[:point]}.{digits[point:]}"
    return text if "." in text else text + ".0"


# DataIn int arrays. lacca 0.2.3 writes each byte as a positive fixint (00..7f)
# or `cc xx`: such stretches are decoded with bytes methods, a block at a time;
# other int forms one element at a time.
_BLOCK = 64 * 1024
# Byte classes: a = positive fixint, c = cc (uint8 marker), h = any other byte.
_CLASSES = bytes.maketrans(bytes(range(256)), b"a" * 128 + b"h" * 76 + b"c" + b"h" * 51)


def _int_array(data: bytearray, start: int, n: int) -> tuple[bytes, int]:
    """The n ints at data[start:] as bytes, and their end. Decoded values are
    written over the array itself (never ahead of what was read)."""
    with memoryview(data) as mv:
        if start + n <= len(mv) and all(  # all positive fixints: one copy
                bytes(mv[i:min(i + _BLOCK, start + n)]).isascii()
                for i in range(start, start + n, _BLOCK)):
            return bytes(mv[start:start + n]), start + n
        read = write = start
        left = n
        while left:
            values, used = _uint8_block(mv, read, left) or _any_ints(mv, read, left)
            mv[write:write + len(values)] = values
            write += len(values)
            read += used
            left -= len(values)
        return bytes(mv[start:write]), read


def _uint8_block(mv: memoryview, pos: int, left: int) -> tuple[bytes, int] | None:
    """Up to `left` elements at pos that are all fixints or `cc xx`: (values,
    bytes used); None if the block holds any other form."""
    size = min(left, _BLOCK)  # holds at most `left` elements
    block = bytes(mv[pos:pos + size])
    if not block:
        raise IndexError("truncated array")
    classes = block.translate(_CLASSES)
    # A marker followed by cc (value 204) is a pair; left to right, as split() finds them.
    unpaired = classes.replace(b"cc", b"")
    if unpaired.endswith(b"c"):  # the block ends on a marker: take its value too
        block = bytes(mv[pos:pos + size + 1])
        if len(block) <= size:
            raise IndexError("truncated array")
        classes = block.translate(_CLASSES)
        unpaired = classes.replace(b"cc", b"")
    rest = unpaired.replace(b"ch", b"").replace(b"ca", b"")
    if rest.count(b"a") != len(rest):  # a lone high byte: not fixint / uint8
        return None
    if b"\xcc\xcc" in block:
        values = b"\xcc".join([p.replace(b"\xcc", b"") for p in block.split(b"\xcc\xcc")])
    else:
        values = block.replace(b"\xcc", b"")
    return values, len(block)


def _any_ints(mv: memoryview, pos: int, left: int) -> tuple[bytes, int]:
    """Up to `left` elements in the _BLOCK bytes at pos, each any msgpack int
    form of a value 0..255: (values, bytes used)."""
    import msgpack  # rare: lacca 0.2.3 writes only fixints and `cc xx`

    block = bytes(mv[pos:pos + max(_BLOCK, 9)])  # an int takes up to 9 bytes
    # No containers, strings or exts: an element must be an int.
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(block), 1), max_str_len=0, max_bin_len=0,
                                max_array_len=0, max_map_len=0, max_ext_len=0)
    unpacker.feed(block)
    out = bytearray()
    used = 0
    try:
        while left:
            value = unpacker.unpack()
            if type(value) is not int or not 0 <= value <= 255:
                raise V0Error(_BAD_BUF)
            out.append(value)
            used = unpacker.tell()
            left -= 1
    except msgpack.OutOfData:
        if not out:
            raise IndexError("truncated array") from None
    return bytes(out), used


def _short_str(text: str) -> str:
    """repr(text), cut in the middle as reprlib cuts it (at most 80 characters)."""
    s = repr(text[:_TEXT_CUT])
    if len(s) > _TEXT_CUT:
        i = (_TEXT_CUT - 3) // 2
        j = _TEXT_CUT - 3 - i
        s = repr(text[:i] + text[len(text) - j:])
        s = s[:i] + "..." + s[len(s) - j:]
    return s


def _short(value: Any) -> str:
    """A short repr that never renders more than a few elements of anything
    (client-side helpers only: reprlib is not loaded for resin itself)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = _TEXT_CUT
    return r.repr(value)


# --- client side and tools: generic msgpack --------------------------------------


def unpack(data: bytes) -> Any:
    """Decode exactly one msgpack value (of at most one packet: resin's
    messages, or a client message in tools and tests)."""
    import msgpack

    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    # msgpack raises ExtraData, FormatError, StackError, UnicodeDecodeError,
    # ValueError, TypeError (unhashable keys), ...: all mean malformed input.
    except Exception as exc:
        raise V0Error(f"malformed msgpack: {type(exc).__name__}: {exc}"[:300]) from exc


def parse_client_value(value: Any) -> ClientMessage:
    """Map a decoded msgpack value to a client message (key order does not matter).

    For tools and tests; resin itself reads the bytes with `decode_client_message`,
    which accepts and refuses the same messages within its limits."""
    if value == "KillProcess":
        return KillProcess()
    if not isinstance(value, dict) or len(value) != 1:
        raise V0Error(f"unknown message: {_short(value)}")
    ((tag, body),) = value.items()
    if tag == "KillProcess":
        return KillProcess()
    if tag == "DataIn":
        if not isinstance(body, dict):
            raise V0Error(_BAD_BUF)
        if "buf" not in body:
            raise _missing_field("buf")
        buf = body["buf"]
        if isinstance(buf, bytes):
            return DataIn(buf)
        if isinstance(buf, list):
            try:
                return DataIn(bytes(buf))
            except (TypeError, ValueError):
                pass
        raise V0Error(_BAD_BUF)
    if tag == "StartProcess":
        if not isinstance(body, dict):
            raise V0Error("StartProcess: body must be a map")
        if "exec" not in body:
            raise _missing_field("exec")
        if "args" not in body:
            raise _missing_field("args")
        exe, args = body["exec"], body["args"]
        if not isinstance(exe, str) or "\0" in exe:
            raise V0Error("StartProcess: exec must be a string without NUL")
        if not isinstance(args, list) or not all(
            isinstance(a, str) and "\0" not in a for a in args
        ):
            raise V0Error("StartProcess: args must be an array of strings")
        return StartProcess(exe, tuple(args))
    raise V0Error(f"unknown message: {_short(tag)}")


# --- resin side: encode what resin sends -------------------------------------
#
# By hand, in rmp-serde's forms (what msgpack.packb gives too): maps with keys
# in field order, the smallest int form, str8 for 32..255 bytes.

_DATA_OUT_PREFIX = {  # {"DataOut": {"ty": s, "buf": ...}} up to the array
    s: b"\x81\xa7DataOut\x82\xa2ty\xa6" + s.encode() + b"\xa3buf" for s in ("Stdout", "Stderr")
}
_EXIT_STATUS_PREFIX = b"\x81\xaaExitStatus\x81\xa4code"
_ERROR_REPORT_PREFIX = b"\x81\xabErrorReport\x81\xa3msg"
# Each byte of a DataOut buf as an int: positive fixint, or `cc xx`.
_UINT8 = [bytes((b,)) if b < 0x80 else bytes((0xCC, b)) for b in range(256)]


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + _U16.pack(n)
    return b"\xdd" + _U32.pack(n)


def _int(n: int) -> bytes:
    """An int in msgpack's smallest form (as rmp's write_sint / write_uint)."""
    if n >= 0:
        if n < 0x80:
            return bytes((n,))
        for marker, fmt, limit in ((0xCC, ">B", 0x100), (0xCD, ">H", 0x10000),
                                   (0xCE, ">I", 0x100000000), (0xCF, ">Q", 1 << 64)):
            if n < limit:
                return bytes((marker,)) + struct.pack(fmt, n)
    elif n >= -32:
        return bytes((n + 256,))
    else:
        for marker, fmt, limit in ((0xD0, ">b", -0x80), (0xD1, ">h", -0x8000),
                                   (0xD2, ">i", -0x80000000), (0xD3, ">q", -(1 << 63))):
            if n >= limit:
                return bytes((marker,)) + struct.pack(fmt, n)
    raise V0Error(f"integer {n} does not fit in msgpack")


def _str(text: str) -> bytes:
    """A msgpack str (fixstr, str8, str16 or str32)."""
    raw = text.encode("utf-8", "replace")
    n = len(raw)
    if n < 32:
        return bytes((0xA0 | n,)) + raw
    if n < 0x100:
        return bytes((0xD9, n)) + raw
    if n < 0x10000:
        return b"\xda" + _U16.pack(n) + raw
    return b"\xdb" + _U32.pack(n) + raw


def data_out_parts(stream: Stream, data: bytes) -> tuple[bytes, bytes]:
    """A DataOut as (head, tail) to write back to back without joining them.

    buf is an array of ints, each byte a positive fixint or `cc xx`; for ASCII
    data that is the array header followed by the data bytes themselves.
    """
    head = _DATA_OUT_PREFIX[stream] + _array_header(len(data))
    if data.isascii():
        return head, data
    return head, b"".join(map(_UINT8.__getitem__, data))


def encode_exit_status(code: int | None) -> bytes:
    return _EXIT_STATUS_PREFIX + (b"\xc0" if code is None else _int(code))


def encode_error_report(msg: str) -> bytes:
    return _ERROR_REPORT_PREFIX + _str(msg)


def encode_resin_message(msg: ResinMessage) -> bytes:
    """The packet payload for a resin -> client message."""
    if isinstance(msg, DataOut):
        head, tail = data_out_parts(msg.stream, msg.data)
        payload = head + tail
    elif isinstance(msg, ExitStatus):
        payload = encode_exit_status(msg.code)
    else:
        payload = encode_error_report(msg.msg)
    if len(payload) > MAX_PACKET:
        raise V0Error(f"message of {len(payload)} bytes does not fit in a packet")
    return payload


# --- client side (tests, tools) ----------------------------------------------


def encode_client_message(
    msg: ClientMessage,
    *,
    flags: int = DEFAULT_FLAGS,
    chunk_size: int = V0_MAX_CHUNK,
    data_as_bin: bool = False,
) -> list[bytes]:
    """Packet payloads for a client message, chunked as lacca 0.2.3 does."""
    import msgpack

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
                    try:
                        return DataOut(body["ty"], bytes(buf))
                    except (TypeError, ValueError):
                        pass
            if tag == "ExitStatus" and "code" in body:
                code = body["code"]
                if code is None or isinstance(code, int):
                    return ExitStatus(code)
            if tag == "ErrorReport" and isinstance(body.get("msg"), str):
                return ErrorReport(body["msg"])
    raise V0Error(f"unexpected message from resin: {_short(value)}")
