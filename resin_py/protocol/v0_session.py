"""The v0 session: lacca 0.2.3's msgpack protocol over a `Core` (sans-IO)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from resin_py.protocol import v0
from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.protocol.errors import ProtocolError, SpawnFailed
from resin_py.protocol.framing import packet_header
from resin_py.protocol.session import ChildRef, Core, StdinResult

if TYPE_CHECKING:
    from resin_py.protocol.terms import Term

_V0_STREAM: dict[StreamKind, v0.Stream] = {
    StreamKind.STDOUT: "Stdout",
    StreamKind.STDERR: "Stderr",
}
# v0 children are spawned as resin 0.3.x did: everything piped, no flow control.
_V0_OPTIONS = SpawnOptions()
SIGKILL = 9  # the same number on every Linux architecture
# v0 has no stdin acks: above this many bytes queued for the child's stdin,
# resin stops reading its own stdin until the child has taken them, so a
# client writing to a child that does not read blocks (the BEAM's port turns
# busy) instead of growing resin. One message may go past it (at most
# V0_MAX_MESSAGE).
V0_STDIN_BACKLOG = 1024 * 1024


def _fsencode(text: str) -> bytes:
    """As os.fsencode on Linux (UTF-8, undecodable bytes kept as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


class V0Session:
    """The legacy protocol: one child, msgpack messages."""

    read_limit = v0.V0_MAX_DATA
    stdin_backlog: int | None = V0_STDIN_BACKLOG

    def __init__(self, core: Core) -> None:
        self.core = core
        self.decoder = v0.V0Decoder()
        self.child: ChildRef | None = None
        self.exited = False

    def report(self, msg: str) -> None:
        send_v0_error(self.core, msg)

    def on_packet(self, payload: bytes) -> None:
        try:
            msg = self.decoder.feed_packet(payload)
        except ProtocolError as exc:
            self.report(str(exc))
            return
        if msg is None:
            return
        if isinstance(msg, v0.StartProcess):
            self._start(msg)
        elif self.child is None:
            self.report(f"{type(msg).__name__} before StartProcess")
        elif isinstance(msg, v0.DataIn):
            if self.exited:
                self.report("DataIn: the process has exited")
            else:
                self.core.write_stdin(self.child, msg.data)
        elif self.exited:
            self.report("KillProcess: the process has exited")
        else:
            try:
                self.core.signal(self.child, SIGKILL, group=True)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    self.report("KillProcess: the process has exited")
                else:
                    self.report(f"KillProcess: {exc}")

    def _start(self, msg: v0.StartProcess) -> None:
        if self.child is not None:
            self.report("StartProcess: a process was already started")
            return
        try:
            self.child = self.core.spawn(
                0, _fsencode(msg.exec), tuple(_fsencode(a) for a in msg.args), _V0_OPTIONS
            )
        except (SpawnFailed, OSError) as exc:  # OSError: out of descriptors, fork failed
            self.report(f"StartProcess: {exc}")

    def on_framing_error(self, exc: ProtocolError) -> None:
        self.report(str(exc))

    def on_internal_error(self, exc: Exception) -> None:
        self.report(f"internal error: {type(exc).__name__}: {exc}"[:1000])

    def on_output(self, child: ChildRef, kind: StreamKind, data: bytes) -> None:
        head, tail = v0.data_out_parts(_V0_STREAM[kind], data)
        self.core.send(packet_header(len(head) + len(tail)), head, tail)

    def on_stdin_result(self, child: ChildRef, result: StdinResult) -> None:
        if result is StdinResult.BROKEN and not self.exited:
            self.report("DataIn: the process closed its stdin (broken pipe)")

    def on_close_stdin_done(self, child: ChildRef, ref: Term) -> None:
        pass  # v0 has no close_stdin

    def on_exit(self, child: ChildRef) -> None:
        self.exited = True
        send_v0(self.core, v0.ExitStatus(child.exit_code))


def send_v0(core: Core, msg: v0.ResinMessage) -> None:
    payload = v0.encode_resin_message(msg)
    core.send(packet_header(len(payload)), payload)


def send_v0_error(core: Core, text: str) -> None:
    """An ErrorReport: also how errors are answered before the mode is decided."""
    send_v0(core, v0.ErrorReport(text))
