"""External term format for the typed term model (docs/protocol.md §4.1, §4.9).

resin decodes every CONTROL term itself, in one linear pass with hard limits
(`MAX_DEPTH`, `MAX_BIG_BYTES`, no compression), so that no frame of at most
64 KiB costs more than a few milliseconds whatever its bytes. erlang-py, the
reference codec, is not on this path: its decoder builds bignums byte by byte
(quadratic: a 60 KB integer took 0.7 s) and hashes map keys into a dict
(integer keys are easy to make collide). It stays the reference in the tests
(`from_erlang` / `to_erlang` map between its values and this model).

What resin does not interpret (pids, ports, references, funs, maps, improper
lists, bit strings) decodes to `Opaque(raw)`: `raw` is that term's own
encoding (without the 131 version byte), validated and echoed byte for byte.
"""

from __future__ import annotations

import struct

from resin_py.protocol.errors import BadTerm
from resin_py.protocol.terms import FALSE, TRUE, Atom, Opaque

TYPE_CHECKING = False  # no `typing` at run time (see protocol/common.py)

if TYPE_CHECKING:
    from typing import Any

    from resin_py.protocol.terms import Term

# Compressed terms (tag 80) are refused, at any depth: a 64 KiB packet could
# inflate to gigabytes (nested compression) and lacca never compresses.
COMPRESSED_TAG = 80
# Nesting of tuples, lists, maps and the like. lacca's deepest request, a
# spawn with env, nests 4 deep; refs are usually flat.
MAX_DEPTH = 100
# Bytes in the magnitude of an integer (SMALL_BIG_EXT's range, 2,040 bits).
# Every integer field is at most 32 bits; anything bigger only gets echoed.
MAX_BIG_BYTES = 255
# Terms in one external term: the root plus every element of every tuple,
# list and map (a charlist counts as one). This bounds the cost of decoding,
# checking and echoing a frame (~1 us a term). A spawn runs out of packet
# first unless its args average under 3 bytes (an arg takes 5 bytes + its
# length: 64 KiB hold 5,000 args of 8 bytes). Larger spawns come in
# spawn_part frames, each within these limits (docs/protocol.md §4.3.1).
MAX_TERMS = 8192
# Of those, non-empty tuples, lists, maps and charlists, which cost a call or
# an allocation more than a leaf. lacca's spawn has one per env entry.
MAX_CONTAINERS = 4096


def decode_term(data: bytes | bytearray | memoryview, *, max_terms: int = MAX_TERMS,
                max_containers: int = MAX_CONTAINERS) -> Term:
    """Decode one external term (starting with 131); raise BadTerm on anything wrong.

    Linear in len(data); refuses compression, nesting deeper than MAX_DEPTH,
    more than MAX_TERMS terms or MAX_CONTAINERS containers, integers above
    MAX_BIG_BYTES bytes, and what the BEAM would not decode (atom cache
    references, non-finite floats, unknown tags).
    """
    data = bytes(data)
    if len(data) < 2 or data[0] != 131:
        raise BadTerm("not an external term")
    try:
        term, end = _decode(data, 1, 0, [max_terms - 1, max_containers])
    except (IndexError, struct.error):
        raise BadTerm("truncated term") from None
    except UnicodeDecodeError:
        raise BadTerm("atom is not valid UTF-8") from None
    except RecursionError:  # only when called from deep in a stack already
        raise BadTerm("nested too deep") from None
    except ValueError as exc:  # FLOAT_EXT text that is not a number
        raise BadTerm(f"bad float: {str(exc)[:100]}") from None
    if end != len(data):
        raise BadTerm(f"{len(data) - end} bytes after the term")
    return term


def encode_term(term: Term) -> bytes:
    """Encode a typed term as an external term (starting with 131).

    Python values that are not Terms (str, dict, ...) are encoded the way
    erlang-py encodes them, for tools and tests."""
    parts = [b"\x83"]
    try:
        _encode(term, parts)
    except _NotATerm:
        import erlang

        data: bytes = erlang.term_to_binary(to_erlang(term))
        return data
    return b"".join(parts)


def encoded_size(term: Term, limit: int) -> int:
    """len(encode_term(term)), or some number above `limit` once it is known to
    exceed it: the cost stays bounded by `limit` whatever the term."""
    return limit + 1 - _size(term, limit)


# --- decoding ------------------------------------------------------------------

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U16 = struct.Struct(">H")
_F64 = struct.Struct(">d")

# Atoms repeat (request tags, option keys): one object per name.
_UTF8_ATOMS: dict[bytes, Atom] = {}
_LATIN1_ATOMS: dict[bytes, Atom] = {}
_ATOM_CACHE_MAX = 4096


# Atom(text) without calling Atom's __init__ (an attacker may send 10,000
# names that are not cached).
_new = object.__new__
_set_name = Atom.__dict__["name"].__set__


def _atom(name: bytes, utf8: bool) -> Atom:
    cache = _UTF8_ATOMS if utf8 else _LATIN1_ATOMS
    atom = cache.get(name)
    if atom is None:
        atom = _new(Atom)
        _set_name(atom, name.decode("utf-8" if utf8 else "latin-1"))
        if len(cache) < _ATOM_CACHE_MAX:
            cache[name] = atom
    return atom


def _truncated() -> BadTerm:
    return BadTerm("truncated term")


def _decode(data: bytes, i: int, depth: int, left: list[int]) -> tuple[Term, int]:
    """One term at data[i]: (term, end). `left` is how many more terms and
    containers may follow. Raises BadTerm, or IndexError / struct.error on a truncated term
    (decode_term maps those)."""
    tag = data[i]
    i += 1
    if tag == 104 or tag == 105:  # SMALL_TUPLE, LARGE_TUPLE
        if tag == 104:
            n, i = data[i], i + 1
        else:
            n, i = _U32.unpack_from(data, i)[0], i + 4
        if n == 0:
            return (), i
        items, i = _sequence(data, i, n, depth, left)
        return tuple(items), i
    if tag == 108:  # LIST
        start = i - 1
        n, i = _U32.unpack_from(data, i)[0], i + 4
        elems, i = _sequence(data, i, n, depth, left)
        if data[i] == 106:
            return elems, i + 1
        _, i = _decode(data, i, depth + 1, left)  # an improper list: validate its tail
        return Opaque(data[start:i]), i
    if tag == 107:  # STRING: a charlist
        end = i + 2 + _U16.unpack_from(data, i)[0]
        if end > len(data):
            raise _truncated()
        _charlist(left)
        return list(data[i + 2:end]), end
    if tag == 97:  # SMALL_INTEGER
        return data[i], i + 1
    if tag == 119 or tag == 115:  # SMALL_ATOM_UTF8, SMALL_ATOM (Latin-1)
        end = i + 1 + data[i]
        if end > len(data):
            raise _truncated()
        return _atom(data[i + 1:end], tag == 119), end
    if tag == 109:  # BINARY
        end = i + 4 + _U32.unpack_from(data, i)[0]
        if end > len(data):
            raise _truncated()
        return data[i + 4:end], end
    if tag == 106:  # NIL
        return [], i
    if tag == 98:  # INTEGER
        return _I32.unpack_from(data, i)[0], i + 4
    if tag == 118 or tag == 100:  # ATOM_UTF8, ATOM (Latin-1)
        end = i + 2 + _U16.unpack_from(data, i)[0]
        if end > len(data):
            raise _truncated()
        return _atom(data[i + 2:end], tag == 118), end
    if tag == 110 or tag == 111:  # SMALL_BIG, LARGE_BIG
        if tag == 110:
            n, i = data[i], i + 1
        else:
            n, i = _U32.unpack_from(data, i)[0], i + 4
        if n > MAX_BIG_BYTES:
            raise BadTerm(f"integer of {n} bytes (at most {MAX_BIG_BYTES})")
        sign, end = data[i], i + 1 + n
        if end > len(data):
            raise _truncated()
        if sign > 1:
            raise BadTerm(f"integer with sign byte {sign}")
        value = int.from_bytes(data[i + 1:end], "little")
        return (-value if sign else value), end
    if tag == 70:  # NEW_FLOAT
        value = _F64.unpack_from(data, i)[0]
        if value - value != 0.0:  # inf or nan (math.isfinite without math's .so)
            raise BadTerm("float that is not finite")
        return value, i + 8
    return _decode_opaque(data, i - 1, depth, left)


def _sequence(data: bytes, i: int, n: int, depth: int, left: list[int]
              ) -> tuple[list[Term], int]:
    """n terms from data[i] (the elements of a tuple or list at `depth`): (terms, end)."""
    size = len(data)
    # The container's bounds, checked inline: this runs for every tuple and list.
    if n > size - i:  # each element takes at least one byte
        raise _truncated()
    if depth >= MAX_DEPTH:
        raise BadTerm(f"nested deeper than {MAX_DEPTH}")
    left[0] -= n
    left[1] -= 1
    if left[0] < 0:
        raise BadTerm("too many terms")
    if left[1] < 0:
        raise BadTerm("too many tuples, lists and maps")
    depth += 1
    items: list[Term] = []
    append = items.append
    for _ in range(n):
        tag = data[i]
        # The usual terms inline: small integers, atoms, binaries, nil,
        # integers, small tuples, charlists, proper lists.
        if tag == 97:
            append(data[i + 1])
            i += 2
        elif tag == 119:
            end = i + 2 + data[i + 1]
            if end > size:
                raise _truncated()
            name = data[i + 2:end]
            atom = _UTF8_ATOMS.get(name)
            append(atom if atom is not None else _atom(name, True))
            i = end
        elif tag == 109:
            end = i + 5 + _U32.unpack_from(data, i + 1)[0]
            if end > size:
                raise _truncated()
            append(data[i + 5:end])
            i = end
        elif tag == 106:
            append([])
            i += 1
        elif tag == 104:
            if data[i + 1]:
                elems, i = _sequence(data, i + 2, data[i + 1], depth, left)
                append(tuple(elems))
            else:
                append(())
                i += 2
        elif tag == 98:
            append(_I32.unpack_from(data, i + 1)[0])
            i += 5
        elif tag == 107:
            end = i + 3 + _U16.unpack_from(data, i + 1)[0]
            if end > size:
                raise _truncated()
            _charlist(left)
            append(list(data[i + 3:end]))
            i = end
        elif tag == 108:
            start = i
            elems, i = _sequence(data, i + 5, _U32.unpack_from(data, i + 1)[0], depth, left)
            if data[i] == 106:
                append(elems)
                i += 1
            else:  # an improper list: validate its tail
                _, i = _decode(data, i, depth + 1, left)
                append(Opaque(data[start:i]))
        else:
            item, i = _decode(data, i, depth, left)
            append(item)
    if i > size:
        raise _truncated()
    return items, i


def _charlist(left: list[int]) -> None:
    left[1] -= 1
    if left[1] < 0:
        raise BadTerm("too many tuples, lists and maps")


def _decode_opaque(data: bytes, start: int, depth: int, left: list[int]
                   ) -> tuple[Term, int]:
    """A term resin passes through: validate it, Opaque(its bytes)."""
    tag = data[start]
    i = start + 1
    if tag == 99:  # FLOAT_EXT: 31 bytes of "%.20e" text
        text = data[i:i + 31]
        if len(text) < 31:
            raise _truncated()
        value = float(text.partition(b"\0")[0])
        if value - value != 0.0:  # inf or nan (math.isfinite without math's .so)
            raise BadTerm("float that is not finite")
        return value, i + 31
    if tag == 116:  # MAP: arity, then keys and values
        n, i = _U32.unpack_from(data, i)[0], i + 4
        _, i = _sequence(data, i, 2 * n, depth, left)
    elif tag == 88 or tag == 103:  # NEW_PID, PID: node, id, serial, creation
        i = _node(data, i) + (12 if tag == 88 else 9)
    elif tag == 89 or tag == 102 or tag == 120:  # NEW_PORT, PORT, V4_PORT
        i = _node(data, i) + {89: 8, 102: 5, 120: 12}[tag]
    elif tag == 101:  # REFERENCE: node, id, creation
        i = _node(data, i) + 5
    elif tag == 90 or tag == 114:  # NEWER_REFERENCE, NEW_REFERENCE
        words, i = _U16.unpack_from(data, i)[0], i + 2
        if words > 5:
            raise BadTerm(f"reference of {words} words")
        i = _node(data, i) + (4 if tag == 90 else 1) + 4 * words
    elif tag == 77:  # BIT_BINARY: length, bits in the last byte, data
        n, bits = _U32.unpack_from(data, i)[0], data[i + 4]
        if not (1 <= bits <= 8 if n else bits == 0):
            raise BadTerm(f"bit string with {bits} bits in its last byte")
        i += 5 + n
        if bits == 8 or not n:  # whole bytes: a binary
            if i > len(data):
                raise _truncated()
            return data[i - n:i], i
    elif tag == 112:  # NEW_FUN: its size counts itself, not the tag
        size = _U32.unpack_from(data, i)[0]
        if size < 4:
            raise BadTerm("fun of size < 4")
        i += size
    elif tag == 113:  # EXPORT: module, function, arity
        i = _node(data, _node(data, i))
        if data[i] != 97:
            raise BadTerm("export arity is not a small integer")
        i += 2
    elif tag == COMPRESSED_TAG:
        raise BadTerm("compressed terms are not accepted")
    else:  # ATOM_CACHE_REF (82), LOCAL (121), FUN (117, gone since OTP 23), unknown
        raise BadTerm(f"unsupported tag {tag}")
    if i > len(data):
        raise _truncated()
    return Opaque(data[start:i]), i


def _node(data: bytes, i: int) -> int:
    """The end of the atom at data[i] (a pid's node, an export's module, ...)."""
    tag = data[i]
    if tag == 119 or tag == 115:
        end = i + 2 + data[i + 1]
    elif tag == 118 or tag == 100:
        end = i + 3 + _U16.unpack_from(data, i + 1)[0]
    else:
        raise BadTerm(f"expected an atom, got tag {tag}")
    if end > len(data):
        raise _truncated()
    if tag == 119 or tag == 118:
        data[i + (2 if tag == 119 else 3):end].decode("utf-8")
    return end


# --- encoding --------------------------------------------------------------------

class _NotATerm(Exception):
    """A Python value outside the term model: erlang-py encodes it."""


_SMALL_INTS = [bytes((97, i)) for i in range(256)]
_NIL_BYTES = b"j"
_atom_cache: dict[str, bytes] = {}


def encode_atom(atom: Atom) -> bytes:
    """The bytes of one atom (SMALL_ATOM_UTF8_EXT or ATOM_UTF8_EXT; cached: atoms repeat)."""
    cached = _atom_cache.get(atom.name)
    if cached is None:
        name = atom.name.encode()
        if len(name) <= 255:
            cached = bytes((119, len(name))) + name
        elif len(name) <= 65535:
            cached = b"v" + _U16.pack(len(name)) + name
        else:
            raise ValueError(f"atom of {len(name)} bytes cannot be encoded")
        if len(_atom_cache) < 1024:
            _atom_cache[atom.name] = cached
    return cached


def encode_int(value: int) -> bytes:
    """The bytes of one integer, as erlang-py (and the BEAM) write them."""
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
    if isinstance(term, bool):  # not a Term, but an atom wherever it slips in
        out.append(encode_atom(TRUE if term else FALSE))
    elif isinstance(term, int):
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
    elif isinstance(term, Opaque):
        out.append(term.raw)
    else:  # not a Term (a str, a dict, ... from a tool or a test)
        raise _NotATerm


def _size(term: Term, budget: int) -> int:
    """`budget` minus the encoded size of `term` (without the version byte),
    stopping as soon as that is negative."""
    if isinstance(term, Atom):
        return budget - len(encode_atom(term))
    if isinstance(term, bool):
        return budget - 6 if term else budget - 7
    if isinstance(term, int):
        return budget - len(encode_int(term))
    if isinstance(term, bytes):
        return budget - 5 - len(term)
    if isinstance(term, float):
        return budget - 9
    if isinstance(term, tuple | list):
        n = len(term)
        budget -= (2 if n <= 255 else 5) if isinstance(term, tuple) else (6 if n else 1)
        for item in term:
            if budget < 0:
                break
            budget = _size(item, budget)
        return budget
    if isinstance(term, Opaque):
        return budget - len(term.raw)
    return budget - len(encode_term(term)) + 1  # not a Term: see encode_term


# --- erlang-py interop (the reference codec, for tests and tools) ----------------


def from_erlang(value: Any) -> Term:
    """Map an erlang-py decoded value to the typed term model."""
    import erlang

    if isinstance(value, bool):  # before int: bool is an int subclass
        return TRUE if value else FALSE
    if isinstance(value, int | float):
        return value
    if value is None:
        return Atom("undefined")
    if isinstance(value, erlang.OtpErlangAtom) and not isinstance(value.value, int):
        name = value.value
        return Atom(name.decode("latin-1") if isinstance(name, bytes) else name)
    if isinstance(value, erlang.OtpErlangBinary) and value.bits == 8:
        return bytes(value.value)
    if isinstance(value, bytes):  # STRING_EXT: a list of small integers
        return list(value)
    if isinstance(value, tuple):
        return tuple(from_erlang(v) for v in value)
    if isinstance(value, list):
        return [from_erlang(v) for v in value]
    return Opaque(bytes(erlang.term_to_binary(value))[1:])


def to_erlang(term: Term) -> Any:
    """Map a typed term to what erlang-py encodes as that Erlang term."""
    import erlang

    if isinstance(term, bytes):
        return erlang.OtpErlangBinary(term)
    if isinstance(term, Atom):
        return erlang.OtpErlangAtom(term.name)
    if isinstance(term, tuple):
        return tuple(to_erlang(t) for t in term)
    if isinstance(term, list):
        return [to_erlang(t) for t in term]
    if isinstance(term, Opaque):
        return erlang.binary_to_term(b"\x83" + term.raw)
    return term  # int or float
