"""The v1 session: frames in, calls on a `Core`; runtime callbacks, frames out
(sans-IO)."""

from __future__ import annotations

import errno
import struct

from resin_py.protocol import v1
from resin_py.protocol.common import StreamKind
from resin_py.protocol.errors import BadArgument, ProtocolError, SpawnFailed
from resin_py.protocol.framing import MAX_PACKET, packet_header
from resin_py.protocol.session import ChildRef, Core, StdinResult
from resin_py.protocol.terms import OK, Atom, Term
from resin_py.protocol.v1 import AckStatus

TYPE_CHECKING = False  # no `typing` at run time (see protocol/common.py)
if TYPE_CHECKING:
    from collections.abc import Callable

_ACK: dict[StdinResult, AckStatus] = {
    StdinResult.WRITTEN: AckStatus.WRITTEN,
    StdinResult.BROKEN: AckStatus.EPIPE,
    StdinResult.CLOSED: AckStatus.CLOSED,
}
# A whole STDIN_ACK packet: {packet,2} length (6), type, id, status. One
# pack per ack: it is on the path of every write (an echo's round trip).
_ACK_PACKET = struct.Struct(">HBIB")
# The error event for a STDIN frame beyond STDIN_WINDOW unanswered ones.
WINDOW_EXCEEDED = (Atom("stdin_window_exceeded"), v1.STDIN_WINDOW)


# The error event for a spawn_part that would open one assembly too many.
TOO_MANY_PENDING = (Atom("too_many_pending_spawns"), v1.MAX_PENDING_SPAWNS)
_BADARG_PARTS = (Atom("badarg"), Atom("parts"))


class _Assembly:
    """A spawn being sent in parts (docs/protocol.md §4.3.1): what its
    spawn_part frames carried, or why it already failed."""

    __slots__ = ("args", "env", "failed", "parts", "pieces", "size")

    def __init__(self) -> None:
        self.parts = 0  # spawn_part frames received, failed ones included
        self.size = 0  # bytes counted against the limits (as execve counts)
        self.args: list[bytes] = []
        self.env: list[tuple[bytes, bytes | None]] = []
        self.pieces: list[bytes] = []  # the start of the next argument or value
        self.failed: Term | None = None  # the spawn_error reason once failed


def errno_atom(code: int) -> Atom:
    """An errno as the lowercase atom the protocol uses (ENOENT -> enoent)."""
    return Atom(errno.errorcode.get(code, f"errno{code}").lower())


def spawn_reason(exc: SpawnFailed) -> Term:
    """The `spawn_error` reason: `Errno`, `{cwd, Errno}` for the directory,
    `{cgroup, Errno}` for cgroup limits that cannot be applied, `{user |
    group | rlimit | pty, Errno}` for the identity, a resource limit or the
    terminal."""
    if exc.stage in _STAGED:
        return (Atom(exc.stage), errno_atom(exc.errno))
    return errno_atom(exc.errno)


# Spawn stages whose errors are reported as {Stage, Errno}.
_STAGED = frozenset({"cwd", "cgroup", "user", "group", "rlimit", "pty"})


# Data bytes per STDOUT/STDERR frame resin sends: one less than MAX_DATA, so
# that a full frame is 65,536 bytes on the wire (2-byte packet length, type,
# id, data). That is the BEAM's read buffer for a port (ERTS_SYS_READ_BUF_SZ
# in erts/emulator/sys/unix/sys_drivers.c): a {packet, 2} frame one byte
# longer never fits one read, so the driver copies what it got aside and
# reads the last byte alone, two reads per frame; at 65,536 each read takes a
# whole frame (measured: BEAM reads per GiB 32,300 -> 18,700,
# docs/performance.md "Frames of 64 KiB").
OUTPUT_FRAME_DATA = 65_536 - 2 - 5
assert OUTPUT_FRAME_DATA <= v1.MAX_DATA


class V1Session:
    """The multi-process protocol: an id registry over the core's children."""

    # Reads may be bigger than a frame: on_output splits them (one read
    # syscall, one writev for several frames).
    read_limit = 1024 * 1024
    # Every id's queue is bounded by STDIN_WINDOW frames of at most MAX_DATA.
    stdin_backlog: int | None = None
    # Output may be spliced: a STDOUT/STDERR frame is a fixed header and the
    # bytes, up to OUTPUT_FRAME_DATA of them.
    splice_limit = OUTPUT_FRAME_DATA

    def __init__(self, core: Core) -> None:
        self.core = core
        self.procs: dict[int, ChildRef] = {}
        # Spawns being sent in parts, and their bytes together.
        self.pending: dict[int, _Assembly] = {}
        self.pending_bytes = 0

    def hello(self, _version: int) -> None:
        # Whatever version was asked for, resin answers with the one it speaks.
        self.send(v1.HelloReply(v1.VERSION))

    def send(self, frame: v1.ResinFrame) -> None:
        payload = v1.encode_resin_frame(frame)
        if len(payload) > MAX_PACKET:  # only an event echoing something huge
            payload = v1.encode_resin_frame(
                v1.ErrorEvent(getattr(frame, "id", None), Atom("event_too_large")))
        self._send_payload(payload)

    def _send_payload(self, payload: bytes) -> None:
        self.core.send(packet_header(len(payload)), payload)

    def on_packet(self, payload: bytes) -> None:
        # The hot frames first, without building frame objects (same checks
        # as decode_client_frame, which handles everything else).
        kind = payload[0] if payload else -1
        if kind == v1.STDIN and len(payload) >= 5:
            id = int.from_bytes(payload[1:5], "big")
            child = self.procs.get(id)
            if child is not None and self.core.stdin_queued(child) < v1.STDIN_WINDOW:
                self.core.write_stdin(child, payload[5:])  # the common case, inline
            else:
                self._stdin(id, payload[5:])
            return
        if kind == v1.CREDIT and len(payload) == 10 and payload[5] in (1, 2):
            self._credit(int.from_bytes(payload[1:5], "big"), StreamKind(payload[5]),
                         int.from_bytes(payload[6:10], "big"))
            return
        try:
            frame = v1.decode_client_frame(payload)
        except BadArgument as exc:
            if exc.request == "spawn_part" and exc.id is not None:
                self._bad_part(exc.id, (Atom("badarg"), exc.what))
                return
            if exc.request == "spawn" and exc.id is not None:
                self._drop_assembly(exc.id)  # answered now: nothing may wait for it
            self.send(v1.error_event(exc))
            return
        except ProtocolError as exc:
            self.send(v1.error_event(exc))
            return
        if isinstance(frame, v1.Stdin):
            self._stdin(frame.id, frame.data)
        elif isinstance(frame, v1.Credit):
            self._credit(frame.id, frame.stream, frame.amount)
        elif isinstance(frame, v1.Spawn):
            self._spawn(frame)
        elif isinstance(frame, v1.SpawnPart):
            self._spawn_part(frame)
        elif isinstance(frame, v1.SpawnCancel):
            self._drop_assembly(frame.id)
        elif isinstance(frame, v1.Relay):
            child = self.procs.get(frame.id)
            if child is not None:  # an unknown id may just have exited
                self.core.relay(child)
        elif isinstance(frame, v1.Signal):
            self._signal(frame)
        elif isinstance(frame, v1.Resize):
            self._resize(frame)
        elif isinstance(frame, v1.CloseStdin):
            child = self.procs.get(frame.id)
            if child is None:
                self.send(v1.Reply(frame.id, frame.ref, _error(Atom("no_process"))))
            else:
                self.core.close_stdin(child, frame.ref)
        else:  # a second hello
            self.send(v1.ErrorEvent(None, (Atom("bad_frame"), v1.HELLO)))

    def _stdin(self, id: int, data: bytes) -> None:
        child = self.procs.get(id)
        if child is None:
            self._send_payload(v1.encode_stdin_ack(id, AckStatus.NO_PROCESS))
        elif self.core.stdin_queued(child) >= v1.STDIN_WINDOW:
            # Past the window: refused (not queued, not acked), so what resin
            # holds for one id stays bounded whatever the client sends.
            self.send(v1.ErrorEvent(id, WINDOW_EXCEEDED))
        else:
            self.core.write_stdin(child, data)

    def _credit(self, id: int, stream: StreamKind, amount: int) -> None:
        child = self.procs.get(id)
        if child is not None:  # an unknown id may just have exited
            self.core.grant_credit(child, stream, amount)

    # -- spawns in parts: every problem is answered once, by the spawn_error
    # of the final spawn; until then the assembly stays (failed, without its
    # items) so that later parts cannot start a new, truncated one.

    def _spawn_part(self, part: v1.SpawnPart) -> None:
        asm = self._assembly(part.id)
        if asm is None or asm.failed is not None:
            return
        # As execve counts: a string, its NUL and a pointer.
        size = sum(map(len, part.args)) + 9 * len(part.args)
        if part.piece is not None:
            size += len(part.piece)
        for name, value in part.env:
            size += len(name) + (0 if value is None else len(value)) + 10
        if asm.size + size > v1.MAX_SPAWN_BYTES:
            self._fail(asm, Atom("e2big"))
        elif self.pending_bytes + size > v1.MAX_PENDING_BYTES:
            self._fail(asm, Atom("enomem"))
        else:
            asm.size += size
            self.pending_bytes += size
            if part.piece is not None:
                asm.pieces.append(part.piece)
                return
            args, env = part.args, part.env
            if asm.pieces:  # they start the first item of this part
                start = b"".join(asm.pieces)
                asm.pieces = []
                if args:
                    args = (start + args[0], *args[1:])
                elif env and env[0][1] is not None:
                    env = ((env[0][0], start + env[0][1]), *env[1:])
                else:  # an empty part, or a piece of a variable to unset
                    self._fail(asm, _BADARG_PARTS)
                    return
            asm.args.extend(args)
            asm.env.extend(env)

    def _bad_part(self, id: int, reason: Term) -> None:
        """A malformed spawn_part: its spawn fails with `reason`."""
        asm = self._assembly(id)
        if asm is not None:
            self._fail(asm, reason)

    def _assembly(self, id: int) -> _Assembly | None:
        """The assembly a spawn_part for `id` adds to, counted; None when
        resin cannot open one more (the client is told at once)."""
        asm = self.pending.get(id)
        if asm is None:
            if len(self.pending) >= v1.MAX_PENDING_SPAWNS:
                # Nothing kept: the final spawn's `parts` count will not match.
                self.send(v1.ErrorEvent(id, TOO_MANY_PENDING))
                return None
            asm = self.pending[id] = _Assembly()
            if id in self.procs:
                asm.failed = Atom("id_in_use")
        asm.parts += 1
        return asm

    def _fail(self, asm: _Assembly, reason: Term) -> None:
        """Its spawn will fail with `reason` (the first one wins); its items go."""
        if asm.failed is None:
            asm.failed = reason
        self.pending_bytes -= asm.size
        asm.size = 0
        asm.args = []
        asm.env = []
        asm.pieces = []

    def _drop_assembly(self, id: int) -> _Assembly | None:
        asm = self.pending.pop(id, None)
        if asm is not None:
            self.pending_bytes -= asm.size
        return asm

    def _spawn(self, req: v1.Spawn) -> None:
        asm = self._drop_assembly(req.id) if self.pending else None
        if asm is not None or req.parts:
            if asm is not None and asm.failed is not None:
                self.send(v1.SpawnError(req.id, asm.failed))
                return
            if asm is None or asm.parts != req.parts or asm.pieces:
                self.send(v1.SpawnError(req.id, _BADARG_PARTS))
                return
            opts = req.options
            req = v1.Spawn(req.id, req.exec, (*asm.args, *req.args), v1.SpawnOptions(
                opts.cd, opts.cd_of, (*asm.env, *opts.env), opts.clear_env, opts.arg0,
                opts.stdin, opts.stderr, opts.credit, opts.cgroup, opts.pty, opts.user,
                opts.group, opts.rlimits, opts.direct, opts.direct_after))
            del asm
        if req.id in self.procs:
            self.send(v1.SpawnError(req.id, Atom("id_in_use")))
            return
        try:
            child = self.core.spawn(req.id, req.exec, req.args, req.options)
        except SpawnFailed as exc:
            self.send(v1.SpawnError(req.id, spawn_reason(exc)))
            return
        except OSError as exc:  # out of descriptors, fork failed, ...
            self.send(v1.SpawnError(req.id, errno_atom(exc.errno or errno.EIO)))
            return
        self.procs[req.id] = child
        if req.options.direct and not req.options.direct_after:
            self.send(v1.Spawned(req.id, child.pid, self.core.direct_pipes(child)))
        else:
            self._send_payload(v1.encode_spawned(req.id, child.pid))

    def _signal(self, req: v1.Signal) -> None:
        self._on_child(req.id, req.ref,
                       lambda child: self.core.signal(child, req.signo, req.group))

    def _resize(self, req: v1.Resize) -> None:
        self._on_child(req.id, req.ref,
                       lambda child: self.core.resize(child, req.rows, req.cols))

    def _on_child(self, id: int, ref: Term, act: Callable[[ChildRef], None]) -> None:
        """Answer a request about one child: ok, no_process, or the errno
        `act` failed with."""
        child = self.procs.get(id)
        result: Term = OK
        if child is None:
            result = _error(Atom("no_process"))
        else:
            try:
                act(child)
            except OSError as exc:
                result = _error(errno_atom(exc.errno or errno.EINVAL))
        self.send(v1.Reply(id, ref, result))

    def on_framing_error(self, exc: ProtocolError) -> None:
        self.send(v1.error_event(exc))

    def on_internal_error(self, exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {exc}"[:1000].encode()
        self.send(v1.ErrorEvent(None, (Atom("internal"), detail)))

    def on_output(self, child: ChildRef, kind: StreamKind, data: bytes) -> None:
        frame_type = v1.STDOUT if kind == StreamKind.STDOUT else v1.STDERR
        n = len(data)
        step = OUTPUT_FRAME_DATA
        if n <= step:
            self.core.send(v1.data_header(frame_type, child.id, n), data)
            return
        view = memoryview(data)  # frames share the read's buffer: no copies
        parts: list[bytes | memoryview] = []
        for start in range(0, n, step):
            chunk = view[start:start + step]
            parts.append(v1.data_header(frame_type, child.id, len(chunk)))
            parts.append(chunk)
        self.core.send(*parts)

    def output_header(self, child: ChildRef, kind: StreamKind, n: int) -> bytes:
        return v1.data_header(v1.STDOUT if kind == StreamKind.STDOUT else v1.STDERR, child.id, n)

    def on_stdin_result(self, child: ChildRef, result: StdinResult) -> None:
        # The bytes of _send_payload(encode_stdin_ack(...)), packed at once.
        self.core.send(_ACK_PACKET.pack(_ACK_PACKET.size - 2, v1.STDIN_ACK, child.id,
                                        _ACK[result]))

    def on_close_stdin_done(self, child: ChildRef, ref: Term) -> None:
        self.send(v1.Reply(child.id, ref, OK))

    def on_direct(self, child: ChildRef, pipes: tuple[tuple[StreamKind, int, int], ...]
                  ) -> None:
        self.send(v1.Direct(child.id, pipes))

    def on_exit(self, child: ChildRef) -> None:
        del self.procs[child.id]
        code = child.exit_code
        if code is None:
            self._send_payload(v1.encode_exit(child.id, "signal", child.term_signal))
        else:
            self._send_payload(v1.encode_exit(child.id, "exit", code))


def _error(reason: Term) -> Term:
    return (Atom("error"), reason)
