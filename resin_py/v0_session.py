"""The v0 session: lacca 0.2.3's msgpack protocol on top of the loop."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from resin_py.protocol import v0
from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.protocol.errors import ProtocolError, SpawnFailed
from resin_py.protocol.framing import packet_header

if TYPE_CHECKING:
    from resin_py.protocol.terms import Term
    from resin_py.server import Child, Resin

_V0_STREAM: dict[StreamKind, v0.Stream] = {
    StreamKind.STDOUT: "Stdout",
    StreamKind.STDERR: "Stderr",
}
# v0 children are spawned as resin 0.3.x did: everything piped, no flow control.
_V0_OPTIONS = SpawnOptions()
# The loop's status for a write that failed because the child closed its stdin.
_EPIPE = 1


class V0Session:
    """The legacy protocol: one child, msgpack messages."""

    read_limit = v0.V0_MAX_DATA

    def __init__(self, loop: Resin) -> None:
        self.loop = loop
        self.decoder = v0.V0Decoder()
        self.child: Child | None = None
        self.exited = False

    @staticmethod
    def report_undecided(loop: Resin, exc: ProtocolError) -> None:
        """Errors before the mode is decided are answered in v0 style."""
        _send_v0(loop, v0.ErrorReport(str(exc)))

    def report(self, msg: str) -> None:
        _send_v0(self.loop, v0.ErrorReport(msg))

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
                self.loop.write_stdin(self.child, msg.data, notify=True)
        elif self.exited or self.child.reaped:
            self.report("KillProcess: the process has exited")
        else:
            try:
                self.loop.signal_child(self.child, signal.SIGKILL, group=True)
            except OSError as exc:
                self.report(f"KillProcess: {exc}")

    def _start(self, msg: v0.StartProcess) -> None:
        if self.child is not None:
            self.report("StartProcess: a process was already started")
            return
        try:
            self.child = self.loop.spawn_child(
                0, os.fsencode(msg.exec), tuple(os.fsencode(a) for a in msg.args), _V0_OPTIONS
            )
        except SpawnFailed as exc:
            self.report(f"StartProcess: {exc}")
        except OSError as exc:  # out of descriptors, fork failed, ...
            self.report(f"StartProcess: {exc}")

    def on_framing_error(self, exc: ProtocolError) -> None:
        self.report(str(exc))

    def on_internal_error(self, exc: Exception) -> None:
        self.report(f"internal error: {type(exc).__name__}: {exc}"[:1000])

    def on_output(self, child: Child, kind: StreamKind, data: bytes) -> None:
        head, tail = v0.data_out_parts(_V0_STREAM[kind], data)
        self.loop.push(packet_header(len(head) + len(tail)), head, tail)

    def on_stdin_result(self, child: Child, status: int) -> None:
        if status == _EPIPE and not self.exited:
            self.report("DataIn: the process closed its stdin (broken pipe)")

    def on_close_stdin_done(self, child: Child, ref: Term) -> None:
        pass  # v0 has no close_stdin

    def on_exit(self, child: Child) -> None:
        self.exited = True
        _send_v0(self.loop, v0.ExitStatus(child.exit_code))


def _send_v0(loop: Resin, msg: v0.ResinMessage) -> None:
    payload = v0.encode_resin_message(msg)
    loop.push(packet_header(len(payload)), payload)
