"""The typed model of Erlang terms used by the v1 CONTROL/EVENT frames.

    int, float            integers and floats
    bytes                 binaries (never charlists)
    Atom("name")          atoms, including true/false/nil/undefined
    tuple / list          tuples and proper lists (charlists become lists of ints)
    Opaque(raw)           anything resin only passes through (pids, refs, maps,
                          improper lists, ...): `raw` is its external term
                          format encoding, without the 131 version byte

`resin_py.protocol.etf` converts between this model and the external term
format.
"""

from __future__ import annotations

from resin_py.protocol.common import Record

TYPE_CHECKING = False  # no `typing`, no `dataclasses` at run time (see protocol/common.py)

if TYPE_CHECKING:
    from typing import TypeAlias


class Atom(Record):
    """An atom. Interned by name where it counts (the ETF decoder's cache)."""

    name: str

    # Hand-written rather than Record's generic ones: atoms are built and
    # compared on every request.
    def __init__(self, name: str) -> None:
        _set_name(self, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Atom) and other.__class__ is self.__class__:
            return self.name == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Atom({self.name!r})"


_set_name = Atom.__dict__["name"].__set__


class Opaque(Record):
    """A term resin does not interpret and echoes untouched (e.g. a reference):
    its encoding (without the version byte), as the client sent it."""

    raw: bytes


Term: TypeAlias = "int | float | bytes | Atom | Opaque | tuple[Term, ...] | list[Term]"

NIL = Atom("nil")
TRUE = Atom("true")
FALSE = Atom("false")
OK = Atom("ok")
INFINITY = Atom("infinity")


_ATOM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@")
# Erlang reserved words: atoms with these names must be quoted.
_RESERVED = frozenset({
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor",
    "case", "catch", "cond", "div", "else", "end", "fun", "if", "let", "maybe", "not",
    "of", "or", "orelse", "receive", "rem", "try", "when", "xor",
})


def format_term(term: Term) -> str:
    """Print a term in Erlang syntax without spaces (the form used in test vectors).

    Binaries of printable ASCII print as <<"text">> (with \\" and \\\\ escaped),
    other binaries as <<1,2,3>>. The output parses with erl_parse:parse_term/1.
    """
    if isinstance(term, bool):
        return "true" if term else "false"
    if isinstance(term, int):
        return str(term)
    if isinstance(term, float):
        return repr(term)
    if isinstance(term, Atom):
        name = term.name
        if (name[:1].islower() and name[:1].isascii() and set(name) <= _ATOM_CHARS
                and name not in _RESERVED):
            return term.name
        escaped = term.name.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(term, bytes):
        if term and all(0x20 <= b < 0x7F for b in term):
            text = term.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
            return f'<<"{text}">>'
        return "<<" + ",".join(str(b) for b in term) + ">>"
    if isinstance(term, tuple):
        return "{" + ",".join(format_term(t) for t in term) + "}"
    if isinstance(term, list):
        return "[" + ",".join(format_term(t) for t in term) + "]"
    return repr(term.raw)
