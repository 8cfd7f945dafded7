"""External term format for the typed term model, on top of erlang-py.

erlang-py decodes into a mix of Python values (bool for true/false, None for
`undefined`, bytes for charlists) and its own classes; `from_erlang` maps them
to resin_py.protocol.terms so the rest of resin never sees those quirks.

erlang-py is pure Python and goes through its own object model, which costs
tens of microseconds per control message. So both directions have a direct
path for the terms resin sees every time (integers, floats, atoms, binaries,
tuples, proper lists, charlists) that gives exactly the bytes and terms of
the erlang-py path; anything else (references, pids, maps, improper lists,
malformed or compressed input) goes the erlang-py way, unchanged.
"""

from __future__ import annotations

import struct
from typing import Any

import erlang

from resin_py.protocol.errors import BadTerm
from resin_py.protocol.terms import FALSE, TRUE, Atom, Opaque, Term

# Compressed terms (tag 80) are refused, at any depth: a 64 KiB packet could
# inflate to gigabytes (nested compression) and lacca never compresses.
COMPRESSED_TAG = 80


class _RefuseCompressed:
    """Stands in for `zlib` inside erlang-py so that it cannot inflate anything."""

    @staticmethod
    def decompress(_data: bytes) -> bytes:
        raise erlang.ParseException("compressed terms are not accepted")


erlang.zlib = _RefuseCompressed()


def from_erlang(value: Any) -> Term:
    """Map an erlang-py decoded value to the typed term model."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return TRUE if value else FALSE
    if isinstance(value, int | float):
        return value
    if value is None:
        return Atom("undefined")
    if isinstance(value, erlang.OtpErlangAtom):
        name = value.value
        if isinstance(name, bytes):  # ATOM_EXT / SMALL_ATOM_EXT are Latin-1
            return Atom(name.decode("latin-1"))
        if isinstance(name, str):
            return Atom(name)
        return Opaque(value)  # atom cache reference: meaningless outside distribution
    if isinstance(value, erlang.OtpErlangBinary):
        return value.value if value.bits == 8 else Opaque(value)
    if isinstance(value, bytes):  # STRING_EXT: a list of small integers
        return list(value)
    if isinstance(value, tuple):
        return tuple(from_erlang(v) for v in value)
    if isinstance(value, list):
        return [from_erlang(v) for v in value]
    return Opaque(value)


def to_erlang(term: Term) -> Any:
    """Map a typed term back to what erlang-py encodes as that Erlang term."""
    if isinstance(term, bytes):
        return erlang.OtpErlangBinary(term)
    if isinstance(term, Atom):
        return erlang.OtpErlangAtom(term.name)
    if isinstance(term, tuple):
        return tuple(to_erlang(t) for t in term)
    if isinstance(term, list):
        return [to_erlang(t) for t in term]
    if isinstance(term, Opaque):
        return term.raw
    return term  # int or float


def decode_term(data: bytes) -> Term:
    """Decode one external term (starting with 131); raise BadTerm on anything wrong."""
    if len(data) < 2 or data[0] != 131:
        raise BadTerm("not an external term")
    if data[1] == COMPRESSED_TAG:
        raise BadTerm("compressed terms are not accepted")
    data = bytes(data)
    try:
        term, end = _decode(data, 1)
        if end == len(data):
            return term
    except (_Unsupported, ValueError, IndexError, RecursionError, struct.error):
        pass  # the erlang-py way decides (and explains what is wrong)
    try:
        return from_erlang(erlang.binary_to_term(data))
    # erlang-py lets many exception types escape on malformed input (IndexError,
    # struct.error, UnicodeDecodeError, RecursionError on deep nesting, TypeError
    # on unhashable map keys, ...): all of them mean "bad term" here.
    except Exception as exc:
        raise BadTerm(_detail(exc)) from exc


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def encode_term(term: Term) -> bytes:
    """Encode a typed term as an external term (starting with 131)."""
    parts = [b"\x83"]
    try:
        _encode(term, parts)
    except _Unsupported:
        data: bytes = erlang.term_to_binary(to_erlang(term))
        return data
    return b"".join(parts)


# --- the direct path ---------------------------------------------------------


class _Unsupported(Exception):
    """Not for the direct path: use erlang-py."""


_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U16 = struct.Struct(">H")
_F64 = struct.Struct(">d")
_SMALL_INTS = [bytes((97, i)) for i in range(256)]
_NIL_BYTES = b"j"
_atom_cache: dict[str, bytes] = {}


def encode_atom(atom: Atom) -> bytes:
    """The bytes of one atom, as erlang-py writes them (cached: atoms repeat)."""
    cached = _atom_cache.get(atom.name)
    if cached is None:
        name = atom.name.encode()
        if len(name) <= 255:
            cached = bytes((119, len(name))) + name
        elif len(name) <= 65535:
            cached = b"v" + _U16.pack(len(name)) + name
        else:
            raise _Unsupported  # erlang-py raises its own error
        if len(_atom_cache) < 1024:
            _atom_cache[atom.name] = cached
    return cached


def encode_int(value: int) -> bytes:
    """The bytes of one integer, as erlang-py writes them."""
    if 0 <= value <= 255:
        return _SMALL_INTS[value]
    if -2147483648 <= value <= 2147483647:
        return b"b" + _I32.pack(value)
    magnitude = abs(value)
    digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
    sign = b"\x01" if value < 0 else b"\x00"
    if len(digits) <= 255:
        return bytes((110, len(digits))) + sign + digits
    return b"o" + _U32.pack(len(digits)) + sign + digits


def _encode(term: Term, out: list[bytes]) -> None:
    if isinstance(term, int) and not isinstance(term, bool):  # erlang-py: bool is an atom
        out.append(encode_int(term))
    elif isinstance(term, Atom):
        out.append(encode_atom(term))
    elif isinstance(term, bytes):
        out.append(b"m" + _U32.pack(len(term)))
        out.append(term)
    elif isinstance(term, tuple):
        n = len(term)
        out.append(bytes((104, n)) if n <= 255 else b"i" + _U32.pack(n))
        for item in term:
            _encode(item, out)
    elif isinstance(term, list):
        if term:
            out.append(b"l" + _U32.pack(len(term)))
            for item in term:
                _encode(item, out)
        out.append(_NIL_BYTES)
    elif isinstance(term, float):
        out.append(b"F" + _F64.pack(term))
    else:  # Opaque
        raise _Unsupported


def _decode(data: bytes, i: int) -> tuple[Term, int]:
    """One term at data[i]; (term, end). Raises _Unsupported (or an index/value
    error on malformed input) for anything the erlang-py path must handle."""
    tag = data[i]
    i += 1
    if tag == 97:  # SMALL_INTEGER
        return data[i], i + 1
    if tag == 119 or tag == 115:  # SMALL_ATOM_UTF8, SMALL_ATOM (Latin-1)
        end = i + 1 + data[i]
        if end > len(data):
            raise _Unsupported
        name = data[i + 1:end]
        return Atom(name.decode("utf-8" if tag == 119 else "latin-1")), end
    if tag == 109:  # BINARY
        end = i + 4 + _U32.unpack_from(data, i)[0]
        if end > len(data):
            raise _Unsupported
        return data[i + 4:end], end
    if tag == 104 or tag == 105:  # SMALL_TUPLE, LARGE_TUPLE
        if tag == 104:
            n, i = data[i], i + 1
        else:
            n, i = _U32.unpack_from(data, i)[0], i + 4
        items = []
        for _ in range(n):
            item, i = _decode(data, i)
            items.append(item)
        return tuple(items), i
    if tag == 106:  # NIL
        return [], i
    if tag == 108:  # LIST: proper lists only
        n, i = _U32.unpack_from(data, i)[0], i + 4
        elems: list[Term] = []
        for _ in range(n):
            item, i = _decode(data, i)
            elems.append(item)
        if data[i] != 106:
            raise _Unsupported
        return elems, i + 1
    if tag == 98:  # INTEGER
        return _I32.unpack_from(data, i)[0], i + 4
    if tag == 107:  # STRING: a charlist
        end = i + 2 + _U16.unpack_from(data, i)[0]
        if end > len(data):
            raise _Unsupported
        return list(data[i + 2:end]), end
    if tag == 118 or tag == 100:  # ATOM_UTF8, ATOM (Latin-1)
        end = i + 2 + _U16.unpack_from(data, i)[0]
        if end > len(data):
            raise _Unsupported
        return Atom(data[i + 2:end].decode("utf-8" if tag == 118 else "latin-1")), end
    if tag == 110 or tag == 111:  # SMALL_BIG, LARGE_BIG
        if tag == 110:
            n, i = data[i], i + 1
        else:
            n, i = _U32.unpack_from(data, i)[0], i + 4
        sign, end = data[i], i + 1 + n
        if end > len(data):
            raise _Unsupported
        value = int.from_bytes(data[i + 1:end], "little")
        return (-value if sign == 1 else value), end
    if tag == 70:  # NEW_FLOAT
        return _F64.unpack_from(data, i)[0], i + 8
    raise _Unsupported
