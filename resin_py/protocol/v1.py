"""v1: raw-byte data frames plus ETF control terms (docs/protocol.md §4).

Pure functions over packet payloads: `decode_client_frame` / `encode_resin_frame`
for resin, `encode_client_frame` / `decode_resin_frame` for clients.
"""

from __future__ import annotations

import struct

__all__ = ["SpawnOptions", "StreamKind"]  # re-exported: part of this module's API

from resin_py.protocol.common import Record, SpawnOptions, StreamKind
from resin_py.protocol.errors import (
    BadArgument,
    BadFrame,
    BadTerm,
    FramingError,
    ProtocolError,
    UnknownRequest,
    V1Error,
)
from resin_py.protocol.etf import (
    MAX_CONTAINERS,
    MAX_TERMS,
    decode_term,
    encode_atom,
    encode_int,
    encode_term,
    encoded_size,
)
from resin_py.protocol.framing import MAX_PACKET
from resin_py.protocol.terms import FALSE, INFINITY, NIL, TRUE, Atom, Opaque

# Start-up diet (see protocol/common.py): a v1 session imports no `typing`,
# `dataclasses` or `enum` at run time. Frames are Records (mypy sees frozen
# dataclasses); the ones built per data chunk (Stdin, Stdout, Stderr,
# StdinAck, Credit) have a hand-written __init__, faster than a dataclass's.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable
    from enum import IntEnum
    from typing import Any, Literal, TypeAlias, TypeVar

    from resin_py.protocol.common import StderrMode, StdinMode
    from resin_py.protocol.terms import Term

    _T = TypeVar("_T")
else:
    from resin_py.protocol.common import LiteIntEnum as IntEnum

VERSION = 1

# Frame type bytes.
HELLO = 0x00
HELLO_REPLY = 0x01
CONTROL = 0x10
STDIN = 0x11
CREDIT = 0x12
EVENT = 0x20
STDOUT = 0x21
STDERR = 0x22
STDIN_ACK = 0x23

# Data bytes per STDIN/STDOUT/STDERR frame: a packet minus type byte and id.
MAX_DATA = MAX_PACKET - 5
MAX_ID = 2**32 - 1
# A client SHOULD keep at most this many STDIN frames unacked per process.
STDIN_WINDOW = 4
# Refs are echoed in replies, which must still fit in one packet.
MAX_REF_BYTES = 4096
# An unknown request is echoed in the error event only up to this size.
MAX_ECHO_BYTES = 60000

# Spawn requests in parts (docs/protocol.md §4.3.1): what resin keeps of
# `spawn_part` frames until their final `spawn`. Sizes count the way execve
# does: each string with its NUL plus an 8-byte pointer (an env entry
# `Name=Value`).
# Linux never accepts more than 6 MiB of arguments and environment (3/4 of
# _STK_LIM = 8 MiB, whatever RLIMIT_STACK says; ARG_MAX is a quarter of
# RLIMIT_STACK below that, 2 MiB with the usual 8 MiB stack), so a request
# above this could only fail in execve with E2BIG: resin answers `e2big`
# without forking and without keeping the rest.
MAX_SPAWN_BYTES = 6 * 1024 * 1024
# All assemblies together (a client may build several at once): resin's
# memory for them stays within a few times this (~42 bytes of Python
# objects for a 1-byte argument counted as 10). Beyond it a part fails its
# spawn with `enomem`.
MAX_PENDING_BYTES = 16 * 1024 * 1024
# Ids with an assembly open (failed ones included, until their final spawn
# or cancel). lacca assembles one spawn at a time per resin.
MAX_PENDING_SPAWNS = 64

_ID = struct.Struct(">I")
_DATA_HEAD = struct.Struct(">BI")
_CREDIT = struct.Struct(">BIBI")
_ACK = struct.Struct(">BIB")


class AckStatus(IntEnum):
    WRITTEN = 0
    EPIPE = 1  # the child closed its stdin
    CLOSED = 2  # stdin was closed by close_stdin, or is /dev/null
    NO_PROCESS = 3  # unknown or exited id


# --- client -> resin ---------------------------------------------------------

_set = object.__setattr__  # what a frozen dataclass's __init__ calls

_NO_OPTIONS = SpawnOptions()


class Hello(Record):
    version: int


class Spawn(Record):
    id: int
    exec: bytes
    args: tuple[bytes, ...] = ()
    options: SpawnOptions = _NO_OPTIONS
    parts: int = 0  # the `parts` option: spawn_part frames sent before this one


class SpawnPart(Record):
    """`{spawn_part, Id, args, Args}`, `{spawn_part, Id, env, Env}` or
    `{spawn_part, Id, piece, Bin}`: items of a spawn sent in parts (one of
    `args`, `env` and `piece` is given). A piece is the start of the next
    argument or env value that is too long for one packet."""

    id: int
    args: tuple[bytes, ...] = ()
    env: tuple[tuple[bytes, bytes | None], ...] = ()
    piece: bytes | None = None


class SpawnCancel(Record):
    """`{spawn_cancel, Id}`: drop what was assembled for Id (no reply)."""

    id: int


class Signal(Record):
    id: int
    ref: Term
    signo: int
    group: bool


class CloseStdin(Record):
    id: int
    ref: Term


class Resize(Record):
    """`{resize, Id, Ref, Rows, Cols}`: set the window size of a `pty` child's
    terminal (TIOCSWINSZ; the kernel sends its foreground group SIGWINCH)."""

    id: int
    ref: Term
    rows: int
    cols: int


class Relay(Record):
    """`{relay, Id}`: resin reads Id's direct streams itself from now on (as if
    they had not been direct, under the spawn's credit). No reply."""

    id: int


class Stdin(Record):
    id: int
    data: bytes

    def __init__(self, id: int, data: bytes) -> None:
        _set(self, "id", id)
        _set(self, "data", data)


class Credit(Record):
    id: int
    stream: StreamKind
    amount: int

    def __init__(self, id: int, stream: StreamKind, amount: int) -> None:
        _set(self, "id", id)
        _set(self, "stream", stream)
        _set(self, "amount", amount)


Request: TypeAlias = Spawn | SpawnPart | SpawnCancel | Signal | CloseStdin | Resize | Relay
ClientFrame: TypeAlias = Hello | Request | Stdin | Credit


# --- resin -> client ---------------------------------------------------------


class HelloReply(Record):
    version: int


class Spawned(Record):
    id: int
    os_pid: int
    # The direct streams (only if asked for): (stream, fd of the pipe's read
    # end in resin, the pipe's inode number).
    direct: tuple[tuple[StreamKind, int, int], ...] = ()


class SpawnError(Record):
    id: int
    reason: Term


class Direct(Record):
    """`{direct, Id, [{Stream, Fd, Inode}]}`: from now on the client reads these
    pipes itself (a spawn with `direct_after`: the streams have relayed that much)."""

    id: int
    pipes: tuple[tuple[StreamKind, int, int], ...]


class Reply(Record):
    id: int
    ref: Term
    result: Term  # ok | {error, Reason}


class Exit(Record):
    id: int
    kind: Literal["exit", "signal"]
    value: int  # exit code, or signal number

    @property
    def code(self) -> int | None:
        return self.value if self.kind == "exit" else None

    @property
    def signal(self) -> int | None:
        return self.value if self.kind == "signal" else None


class ErrorEvent(Record):
    id: int | None
    reason: Term


class Stdout(Record):
    id: int
    data: bytes

    def __init__(self, id: int, data: bytes) -> None:
        _set(self, "id", id)
        _set(self, "data", data)


class Stderr(Record):
    id: int
    data: bytes

    def __init__(self, id: int, data: bytes) -> None:
        _set(self, "id", id)
        _set(self, "data", data)


class StdinAck(Record):
    id: int
    status: AckStatus

    def __init__(self, id: int, status: AckStatus) -> None:
        _set(self, "id", id)
        _set(self, "status", status)


Event: TypeAlias = Spawned | SpawnError | Reply | Exit | ErrorEvent | Direct
ResinFrame: TypeAlias = HelloReply | Event | Stdout | Stderr | StdinAck


# --- resin side: decoding ----------------------------------------------------


def is_hello(payload: bytes) -> bool:
    """Is this first packet a handshake request (`00 vv`)?"""
    return len(payload) == 2 and payload[0] == HELLO


def decode_client_frame(payload: bytes) -> ClientFrame:
    """Decode one client packet payload; raise a V1Error describing what is wrong."""
    if not payload:
        raise BadFrame(-1, why="empty")
    kind = payload[0]
    if kind == STDIN:
        if len(payload) < 5:
            raise BadFrame(kind, why="shorter than 5 bytes")
        return Stdin(_ID.unpack_from(payload, 1)[0], payload[5:])
    if kind == CREDIT:
        if len(payload) != _CREDIT.size:
            raise BadFrame(kind, _id_of(payload), "not 10 bytes")
        _, id, stream, amount = _CREDIT.unpack(payload)
        if stream not in (1, 2):
            raise BadFrame(kind, id, f"stream {stream}")
        return Credit(id, StreamKind(stream), amount)
    if kind == CONTROL:
        body = payload[1:]
        term = decode_term(body)
        try:
            return parse_request(term)
        except UnknownRequest:
            # Echo the client's own encoding: the same term, and no second
            # walk over a term that may have MAX_TERMS parts.
            raise UnknownRequest(Opaque(bytes(body[1:]))) from None
    if kind == HELLO and len(payload) == 2:
        return Hello(payload[1])
    raise BadFrame(kind, why="unknown type for a client frame")


def _id_of(payload: bytes) -> int | None:
    return _ID.unpack_from(payload, 1)[0] if len(payload) >= 5 else None


def parse_request(term: Term) -> Request:
    """A decoded CONTROL term to a request."""
    if not (isinstance(term, tuple) and len(term) >= 2 and isinstance(term[0], Atom)):
        raise UnknownRequest(term)
    tag, id = term[0].name, term[1]
    if not (isinstance(id, int) and 0 <= id <= MAX_ID):
        raise UnknownRequest(term)
    if tag == "spawn" and len(term) == 5:
        return _parse_spawn(id, term[2], term[3], term[4])
    if tag == "spawn_part" and len(term) == 4 and term[2] in (_ARGS, _ENV, _PIECE):
        if term[2] == _PIECE:
            if not (isinstance(term[3], bytes) and term[3] and b"\0" not in term[3]):
                raise BadArgument("spawn_part", id, _PIECE)
            return SpawnPart(id, piece=term[3])
        if term[2] == _ARGS:
            return SpawnPart(id, _parse_args("spawn_part", id, term[3]))
        try:
            return SpawnPart(id, env=_opt_env(term[3]))
        except _Invalid:
            raise BadArgument("spawn_part", id, _ENV) from None
    if tag == "spawn_cancel" and len(term) == 2:
        return SpawnCancel(id)
    if tag == "relay" and len(term) == 2:
        return Relay(id)
    if tag == "signal" and len(term) == 5:
        ref = _check_ref("signal", id, term[2])
        signo, group = term[3], term[4]
        if not isinstance(signo, int):
            raise BadArgument("signal", id, Atom("signo"), ref)
        if group not in (TRUE, FALSE):
            raise BadArgument("signal", id, Atom("group"), ref)
        return Signal(id, ref, signo, group == TRUE)
    if tag == "close_stdin" and len(term) == 3:
        return CloseStdin(id, _check_ref("close_stdin", id, term[2]))
    if tag == "resize" and len(term) == 5:
        ref = _check_ref("resize", id, term[2])
        for key, value in (("rows", term[3]), ("cols", term[4])):
            if not (isinstance(value, int) and 0 < value <= MAX_WINSIZE):
                raise BadArgument("resize", id, Atom(key), ref)
        return Resize(id, ref, term[3], term[4])  # type: ignore[arg-type]  # checked above
    raise UnknownRequest(term)


def _check_ref(request: str, id: int, ref: Term) -> Term:
    if encoded_size(ref, MAX_REF_BYTES) > MAX_REF_BYTES:
        raise BadArgument(request, id, Atom("ref"))
    return ref


class _Invalid(Exception):
    """An option value of the wrong shape (becomes {badarg, Key})."""


_ARGS = Atom("args")
_ENV = Atom("env")
_PIECE = Atom("piece")


def _parse_args(request: str, id: int, args: Term) -> tuple[bytes, ...]:
    for arg in args if isinstance(args, list) else [None]:
        if not (isinstance(arg, bytes) and b"\0" not in arg):
            raise BadArgument(request, id, _ARGS)
    assert isinstance(args, list)
    return tuple(args)  # type: ignore[arg-type]  # checked: every item is bytes


def _parse_spawn(id: int, exe: Term, args: Term, opts: Term) -> Spawn:
    def bad(what: Term) -> BadArgument:
        return BadArgument("spawn", id, what)

    if not (isinstance(exe, bytes) and exe and b"\0" not in exe):
        raise bad(Atom("exec"))
    argv = _parse_args("spawn", id, args)
    given: dict[str, Term] = {}
    for opt in opts if isinstance(opts, list) else [None]:
        if not (isinstance(opt, tuple) and len(opt) == 2 and isinstance(opt[0], Atom)):
            raise bad(Atom("opts"))
        if opt[0].name not in _OPTION_KEYS:
            raise bad(opt[0])
        given.setdefault(opt[0].name, opt[1])  # the first occurrence wins, as in proplists

    # SpawnOptions' fields by position, the defaults where no option is
    # given: only the options given are parsed (lacca sends 2 or 3 of 12).
    values: list[Any] = list(_SPAWN_DEFAULTS)  # each checked by its parser
    if given:
        # In the fields' order, not the client's: with two bad options the
        # one reported does not depend on their order in the list.
        for key, index, parse in _SPAWN_PARSERS:
            if key in given:
                try:
                    values[index] = parse(given[key])
                except _Invalid:
                    raise bad(Atom(key)) from None
    options = SpawnOptions(*values)
    if options.cd_of is not None and options.cd is not None:  # two directories
        raise bad(Atom("cd_of"))
    # A terminal is stdin, stdout and stderr at once: its output is one stream.
    if options.pty is not None and (options.stdin != "pipe" or options.stderr == "discard"):
        raise bad(Atom("pty"))
    # Only a pipe of its own can be direct: not a terminal, not stderr merged
    # into stdout or discarded.
    if options.direct and (options.pty is not None or (
            StreamKind.STDERR in options.direct and options.stderr != "capture")):
        raise bad(Atom("direct"))
    if options.direct_after and not options.direct:  # it would mean nothing
        raise bad(Atom("direct_after"))
    parts = 0
    if "parts" in given:
        try:
            parts = _opt_parts(given["parts"])
        except _Invalid:
            raise bad(Atom("parts")) from None
    return Spawn(id, exe, argv, options, parts)


_OPTION_KEYS = frozenset(
    {"cd", "cd_of", "env", "clear_env", "arg0", "stdin", "stderr", "credit", "cgroup", "parts",
     "pty", "user", "group", "rlimits", "direct", "direct_after"})
# A terminal's rows and columns are unsigned shorts (struct winsize).
MAX_WINSIZE = 0xFFFF
# cd_of's pid: pid_t is a signed 32-bit integer (Linux's pid_max is lower).
MAX_OS_PID = 2**31 - 1
# Linux uids and gids are 32 bits; (uid_t) -1 means "unchanged" to the kernel.
MAX_UID = 2**32 - 2
# The rlimits option's names: setrlimit(2)'s RLIMIT_<NAME>, lowercase.
RLIMIT_NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
# RLIM_INFINITY is written `infinity`; finite limits fit a signed 64-bit
# integer (what both spawners pass on; larger ones mean nothing more).
MAX_RLIMIT = 2**63 - 1


def _opt_pty(value: Term) -> tuple[int, int]:
    """{Rows, Cols}: the terminal's initial window size."""
    if (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(n, int) and 0 < n <= MAX_WINSIZE for n in value)):
        return value  # type: ignore[return-value]  # checked: two ints
    raise _Invalid


def _opt_id(value: Term) -> int | bytes:
    """A user or group: a name (binary) or a numeric id."""
    if isinstance(value, int) and 0 <= value <= MAX_UID:
        return value
    if isinstance(value, bytes) and value and b"\0" not in value:
        return value
    raise _Invalid


def _opt_rlimits(value: Term) -> tuple[tuple[str, int | None, int | None], ...]:
    """[{Name, Limit} | {Name, {Soft, Hard}}], each limit an integer or
    `infinity`; Limit alone sets both."""
    if not isinstance(value, list):
        raise _Invalid
    limits: dict[str, tuple[int | None, int | None]] = {}
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Atom)
                and item[0].name in RLIMIT_NAMES):
            raise _Invalid
        pair = item[1]
        if isinstance(pair, tuple) and len(pair) == 2:
            soft, hard = _rlim(pair[0]), _rlim(pair[1])
        else:
            soft = hard = _rlim(pair)
        if hard is not None and (soft is None or soft > hard):
            raise _Invalid  # the soft limit may not exceed the hard one
        limits.setdefault(item[0].name, (soft, hard))
    return tuple((name, soft, hard) for name, (soft, hard) in limits.items())


def _rlim(value: Term) -> int | None:
    if value == INFINITY:
        return None
    if isinstance(value, int) and 0 <= value <= MAX_RLIMIT:
        return value
    raise _Invalid
# cgroup limits: the interface file each one writes, and how its value reads.
CGROUP_LIMITS = {"memory_max": "memory.max", "pids_max": "pids.max", "cpu_max": "cpu.max"}


def _opt_cgroup(value: Term) -> tuple[tuple[str, str], ...]:
    """[{memory_max, Bytes}, {pids_max, N}, {cpu_max, {QuotaUs, PeriodUs}}] to
    (file, content) pairs."""
    if not isinstance(value, list):
        raise _Invalid
    limits: dict[str, str] = {}
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Atom)
                and item[0].name in CGROUP_LIMITS):
            raise _Invalid
        key, limit = item[0].name, item[1]
        if key == "cpu_max":
            if not (isinstance(limit, tuple) and len(limit) == 2):
                raise _Invalid
            quota, period = limit
            if not (isinstance(quota, int) and isinstance(period, int)
                    and 0 < quota < 2**63 and 0 < period < 2**63):
                raise _Invalid
            text = f"{quota} {period}"
        elif isinstance(limit, int) and 0 < limit < 2**63:
            text = str(limit)
        else:
            raise _Invalid
        limits.setdefault(CGROUP_LIMITS[key], text)
    return tuple(limits.items())


def _opt_os_pid(value: Term) -> int:
    """An OS process id: pid_t is a signed 32-bit integer."""
    if isinstance(value, int) and 0 < value <= MAX_OS_PID:
        return value
    raise _Invalid


def _opt_bin(value: Term) -> bytes | None:
    if isinstance(value, bytes) and value and b"\0" not in value:
        return value
    raise _Invalid


def _opt_bool(value: Term) -> bool:
    if value in (TRUE, FALSE):
        return value == TRUE
    raise _Invalid


def _opt_env(value: Term) -> tuple[tuple[bytes, bytes | None], ...]:
    if not isinstance(value, list):
        raise _Invalid
    env: list[tuple[bytes, bytes | None]] = []
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise _Invalid
        name, val = item
        if not (isinstance(name, bytes) and name and b"\0" not in name and b"=" not in name):
            raise _Invalid
        if val == NIL:
            env.append((name, None))
        elif isinstance(val, bytes) and b"\0" not in val:
            env.append((name, val))
        else:
            raise _Invalid
    return tuple(env)


def _opt_parts(value: Term) -> int:
    if isinstance(value, int) and 0 < value <= MAX_ID:
        return value
    raise _Invalid


# The stdin and stderr options' atoms by name, and their modes.
_STDIN_MODES: dict[str, StdinMode] = {"pipe": "pipe", "null": "null"}
_STDERR_MODES: dict[str, StderrMode] = {
    "capture": "capture", "stdout": "stdout", "discard": "discard"}


def _opt_stdin(value: Term) -> StdinMode:
    mode = _STDIN_MODES.get(value.name) if isinstance(value, Atom) else None
    if mode is None:
        raise _Invalid
    return mode


def _opt_stderr(value: Term) -> StderrMode:
    mode = _STDERR_MODES.get(value.name) if isinstance(value, Atom) else None
    if mode is None:
        raise _Invalid
    return mode


# The direct option's atoms by name.
_STREAMS = {"stdout": StreamKind.STDOUT, "stderr": StreamKind.STDERR}


def _opt_direct(value: Term) -> tuple[StreamKind, ...]:
    if not isinstance(value, list):
        raise _Invalid
    kinds: list[StreamKind] = []
    for item in value:
        kind = _STREAMS.get(item.name) if isinstance(item, Atom) else None
        if kind is None or kind in kinds:
            raise _Invalid
        kinds.append(kind)
    return tuple(kinds)


def _opt_size(value: Term) -> int:
    if isinstance(value, int) and 0 <= value <= MAX_ID:
        return value
    raise _Invalid


def _opt_credit(value: Term) -> int | None:
    if isinstance(value, int):  # first: an int compared to an atom calls Atom.__eq__
        if value >= 0:
            return value
    elif value == INFINITY:
        return None
    raise _Invalid


# SpawnOptions' fields by position as no option sets them, and each field's
# option with its parser, in the fields' order (what _parse_spawn reads).
_SPAWN_DEFAULTS: tuple[object, ...] = tuple(SpawnOptions()._values())
_SPAWN_PARSERS: tuple[tuple[str, int, Callable[[Term], object]], ...] = tuple(
    (key, SpawnOptions._fields.index(key), parse) for key, parse in (
        ("cd", _opt_bin), ("cd_of", _opt_os_pid), ("env", _opt_env),
        ("clear_env", _opt_bool), ("arg0", _opt_bin),
        ("stdin", _opt_stdin), ("stderr", _opt_stderr), ("credit", _opt_credit),
        ("cgroup", _opt_cgroup), ("pty", _opt_pty), ("user", _opt_id), ("group", _opt_id),
        ("rlimits", _opt_rlimits), ("direct", _opt_direct), ("direct_after", _opt_size)))


# --- resin side: encoding ----------------------------------------------------


def data_header(kind: int, id: int, length: int) -> bytes:
    """Packet header + frame header of a STDOUT/STDERR/STDIN frame of `length` data bytes."""
    return struct.pack(">HBI", length + 5, kind, id)


def event_term(event: Event) -> Term:
    if isinstance(event, Spawned):
        if event.direct:
            return (Atom("spawned"), event.id, event.os_pid, _pipes_term(event.direct))
        return (Atom("spawned"), event.id, event.os_pid)
    if isinstance(event, Direct):
        return (Atom("direct"), event.id, _pipes_term(event.pipes))
    if isinstance(event, SpawnError):
        return (Atom("spawn_error"), event.id, event.reason)
    if isinstance(event, Reply):
        return (Atom("reply"), event.id, event.ref, event.result)
    if isinstance(event, Exit):
        return (Atom("exit"), event.id, (Atom(event.kind), event.value))
    return (Atom("error"), NIL if event.id is None else event.id, event.reason)


def _pipes_term(pipes: tuple[tuple[StreamKind, int, int], ...]) -> Term:
    return [(Atom(kind.name.lower()), fd, inode) for kind, fd, inode in pipes]


# The two events of every process, encoded directly (same bytes as
# encode_term(event_term(...))): they are on the spawn/exit hot path.
_SPAWNED_HEAD = bytes((EVENT, 131, 104, 3)) + encode_atom(Atom("spawned"))
_EXIT_HEAD = bytes((EVENT, 131, 104, 3)) + encode_atom(Atom("exit"))
_EXIT_KIND = {
    "exit": bytes((104, 2)) + encode_atom(Atom("exit")),
    "signal": bytes((104, 2)) + encode_atom(Atom("signal")),
}


def encode_spawned(id: int, os_pid: int) -> bytes:
    """The payload of `{spawned, Id, OsPid}`."""
    return _SPAWNED_HEAD + encode_int(id) + encode_int(os_pid)


def encode_exit(id: int, kind: Literal["exit", "signal"], value: int) -> bytes:
    """The payload of `{exit, Id, {exit | signal, Value}}`."""
    return _EXIT_HEAD + encode_int(id) + _EXIT_KIND[kind] + encode_int(value)


def encode_stdin_ack(id: int, status: int) -> bytes:
    """The payload of a STDIN_ACK frame."""
    return _ACK.pack(STDIN_ACK, id, status)


def encode_resin_frame(frame: ResinFrame) -> bytes:
    """The packet payload of a resin -> client frame."""
    if isinstance(frame, Spawned) and not frame.direct:
        return encode_spawned(frame.id, frame.os_pid)
    if isinstance(frame, Exit):
        return encode_exit(frame.id, frame.kind, frame.value)
    if isinstance(frame, Stdout | Stderr):
        kind = STDOUT if isinstance(frame, Stdout) else STDERR
        return _DATA_HEAD.pack(kind, frame.id) + frame.data
    if isinstance(frame, StdinAck):
        return encode_stdin_ack(frame.id, frame.status)
    if isinstance(frame, HelloReply):
        return bytes((HELLO_REPLY, frame.version))
    return bytes((EVENT,)) + encode_term(event_term(frame))


def error_event(exc: ProtocolError) -> Event:
    """The event that answers a frame resin could not act on."""
    if isinstance(exc, BadArgument):
        assert exc.id is not None
        reason = (Atom("badarg"), exc.what)
        if exc.request in ("spawn", "spawn_part"):
            return SpawnError(exc.id, reason)
        if exc.ref is not None:
            return Reply(exc.id, exc.ref, (Atom("error"), reason))
        return ErrorEvent(exc.id, reason)
    if isinstance(exc, BadFrame):
        return ErrorEvent(exc.id, (Atom("bad_frame"), exc.frame_type))
    if isinstance(exc, BadTerm):
        return ErrorEvent(None, (Atom("bad_term"), exc.detail.encode()))
    if isinstance(exc, UnknownRequest):
        term = exc.term
        if encoded_size(term, MAX_ECHO_BYTES) > MAX_ECHO_BYTES:
            term = Atom("too_large")
        return ErrorEvent(None, (Atom("unknown_request"), term))
    if isinstance(exc, FramingError):
        return ErrorEvent(None, Atom("zero_length_packet"))
    id = exc.id if isinstance(exc, V1Error) else None
    return ErrorEvent(id, (Atom("protocol_error"), str(exc).encode()))


# --- client side -------------------------------------------------------------


def options_term(o: SpawnOptions) -> list[Term]:
    """Spawn options as a proplist, leaving out the defaults."""
    opts: list[Term] = []
    if o.cd is not None:
        opts.append((Atom("cd"), o.cd))
    if o.cd_of is not None:
        opts.append((Atom("cd_of"), o.cd_of))
    if o.env:
        opts.append((Atom("env"), [(k, NIL if v is None else v) for k, v in o.env]))
    if o.clear_env:
        opts.append((Atom("clear_env"), TRUE))
    if o.arg0 is not None:
        opts.append((Atom("arg0"), o.arg0))
    if o.stdin != "pipe":
        opts.append((Atom("stdin"), Atom(o.stdin)))
    if o.stderr != "capture":
        opts.append((Atom("stderr"), Atom(o.stderr)))
    if o.credit is not None:
        opts.append((Atom("credit"), o.credit))
    if o.cgroup:
        names = {file: key for key, file in CGROUP_LIMITS.items()}
        opts.append((Atom("cgroup"), [
            (Atom(names[file]), tuple(int(n) for n in text.split()) if " " in text else int(text))
            for file, text in o.cgroup]))
    if o.pty is not None:
        opts.append((Atom("pty"), o.pty))
    if o.user is not None:
        opts.append((Atom("user"), o.user))
    if o.group is not None:
        opts.append((Atom("group"), o.group))
    if o.rlimits:
        opts.append((Atom("rlimits"), [
            (Atom(name), (_rlim_term(soft), _rlim_term(hard))) for name, soft, hard in o.rlimits]))
    if o.direct:
        opts.append((Atom("direct"), [Atom(kind.name.lower()) for kind in o.direct]))
    if o.direct_after:
        opts.append((Atom("direct_after"), o.direct_after))
    return opts


def _rlim_term(value: int | None) -> Term:
    return INFINITY if value is None else value


def request_term(req: Request) -> Term:
    if isinstance(req, Spawn):
        opts = options_term(req.options)
        if req.parts:
            opts.append((Atom("parts"), req.parts))
        return (Atom("spawn"), req.id, req.exec, list(req.args), opts)
    if isinstance(req, SpawnPart):
        if req.piece is not None:
            return (Atom("spawn_part"), req.id, _PIECE, req.piece)
        if req.env:
            return (Atom("spawn_part"), req.id, _ENV,
                    [(k, NIL if v is None else v) for k, v in req.env])
        return (Atom("spawn_part"), req.id, _ARGS, list(req.args))
    if isinstance(req, SpawnCancel):
        return (Atom("spawn_cancel"), req.id)
    if isinstance(req, Signal):
        return (Atom("signal"), req.id, req.ref, req.signo, TRUE if req.group else FALSE)
    if isinstance(req, Resize):
        return (Atom("resize"), req.id, req.ref, req.rows, req.cols)
    if isinstance(req, Relay):
        return (Atom("relay"), req.id)
    return (Atom("close_stdin"), req.id, req.ref)


def encode_client_frame(frame: ClientFrame) -> bytes:
    if isinstance(frame, Stdin):
        return _DATA_HEAD.pack(STDIN, frame.id) + frame.data
    if isinstance(frame, Credit):
        return _CREDIT.pack(CREDIT, frame.id, frame.stream, frame.amount)
    if isinstance(frame, Hello):
        return bytes((HELLO, frame.version))
    return bytes((CONTROL,)) + encode_term(request_term(frame))


def decode_resin_frame(payload: bytes) -> ResinFrame:
    """Decode a resin -> client payload (strict; raises ProtocolError)."""
    kind = payload[0] if payload else -1
    if kind in (STDOUT, STDERR) and len(payload) >= 5:
        id = _ID.unpack_from(payload, 1)[0]
        return Stdout(id, payload[5:]) if kind == STDOUT else Stderr(id, payload[5:])
    if kind == STDIN_ACK and len(payload) == _ACK.size:
        _, id, status = _ACK.unpack(payload)
        if status <= 3:
            return StdinAck(id, AckStatus(status))
    if kind == HELLO_REPLY and len(payload) == 2:
        return HelloReply(payload[1])
    if kind == EVENT:  # an event may wrap an echoed term at resin's limits
        return parse_event(decode_term(payload[1:], max_terms=2 * MAX_TERMS,
                                       max_containers=2 * MAX_CONTAINERS))
    raise BadFrame(kind, why="not a resin frame")


def _parse_direct(items: Term) -> tuple[tuple[StreamKind, int, int], ...]:
    """The direct streams of a `spawned` event: [{Stream, Fd, Inode}]."""
    found: list[tuple[StreamKind, int, int]] = []
    for item in items if isinstance(items, list) else [None]:
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], Atom)
                and item[0].name in _STREAMS and isinstance(item[1], int)
                and isinstance(item[2], int)):
            raise UnknownRequest(items)
        found.append((_STREAMS[item[0].name], item[1], item[2]))
    return tuple(found)


def parse_event(term: Term) -> Event:
    if isinstance(term, tuple) and len(term) >= 3 and isinstance(term[0], Atom):
        tag, id = term[0].name, term[1]
        if tag == "error" and len(term) == 3 and id == NIL:
            return ErrorEvent(None, term[2])
        if isinstance(id, int):
            if tag == "error" and len(term) == 3:
                return ErrorEvent(id, term[2])
            if tag == "spawned" and len(term) == 3 and isinstance(term[2], int):
                return Spawned(id, term[2])
            if tag == "spawned" and len(term) == 4 and isinstance(term[2], int):
                return Spawned(id, term[2], _parse_direct(term[3]))
            if tag == "direct" and len(term) == 3:
                return Direct(id, _parse_direct(term[2]))
            if tag == "spawn_error" and len(term) == 3:
                return SpawnError(id, term[2])
            if tag == "reply" and len(term) == 4:
                return Reply(id, term[2], term[3])
            status = term[2]
            if (tag == "exit" and len(term) == 3 and isinstance(status, tuple)
                    and len(status) == 2 and status[0] in (Atom("exit"), Atom("signal"))
                    and isinstance(status[1], int) and isinstance(status[0], Atom)):
                kind: Literal["exit", "signal"] = "exit" if status[0].name == "exit" else "signal"
                return Exit(id, kind, status[1])
    raise UnknownRequest(term)

