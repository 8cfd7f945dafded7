"""External term format for the typed term model, on top of erlang-py.

erlang-py decodes into a mix of Python values (bool for true/false, None for
`undefined`, bytes for charlists) and its own classes; `from_erlang` maps them
to resin_py.protocol.terms so the rest of resin never sees those quirks.
"""

from __future__ import annotations

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
    try:
        return from_erlang(erlang.binary_to_term(bytes(data)))
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
    data: bytes = erlang.term_to_binary(to_erlang(term))
    return data
