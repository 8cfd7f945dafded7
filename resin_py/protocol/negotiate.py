"""The session before the mode is known: the first packet picks v0 or v1."""

from __future__ import annotations

from resin_py.protocol.errors import ProtocolError
from resin_py.protocol.v0_session import V0Session, send_v0_error

TYPE_CHECKING = False  # no `typing` at run time (see protocol/common.py)

if TYPE_CHECKING:
    from collections.abc import Callable

    from resin_py.protocol.common import StreamKind
    from resin_py.protocol.session import ChildRef, Core, Session, StdinResult
    from resin_py.protocol.terms import Term


class Negotiator:
    """The session before the mode is known: the first packet decides.

    A handshake (exactly the two bytes `00 vv`) starts v1; anything else is
    v0, and is handled as v0's first packet: a longer packet whose flags byte
    is 0x00 too (resin 0.3.x ignored the flags' type bits). `on_decided`
    receives the new session, which the runtime then calls directly.
    """

    read_limit: int = 0
    stdin_backlog: int | None = None
    splice_limit: int = 0

    def __init__(self, core: Core, on_decided: Callable[[Session], None]) -> None:
        self.core = core
        self.on_decided = on_decided

    def on_packet(self, payload: bytes) -> None:
        if len(payload) == 2 and payload[0] == 0:
            # Imported only for v1: a v0 resin never loads the ETF machinery.
            from resin_py.protocol.v1_session import V1Session

            session = V1Session(self.core)
            self.on_decided(session)
            session.hello(payload[1])
            return
        v0_session = V0Session(self.core)
        self.on_decided(v0_session)
        v0_session.on_packet(payload)

    def on_framing_error(self, exc: ProtocolError) -> None:
        """Errors before the mode is decided are answered in v0 style."""
        send_v0_error(self.core, str(exc))

    def on_internal_error(self, exc: Exception) -> None:
        self.on_framing_error(ProtocolError(f"internal error: {type(exc).__name__}"))

    # No child exists before a session is decided.
    def on_output(self, child: ChildRef, kind: StreamKind, data: bytes) -> None:
        raise AssertionError("output before a session")

    def output_header(self, child: ChildRef, kind: StreamKind, n: int) -> bytes:
        raise AssertionError("output before a session")

    def on_stdin_result(self, child: ChildRef, result: StdinResult) -> None:
        raise AssertionError("stdin before a session")

    def on_close_stdin_done(self, child: ChildRef, ref: Term) -> None:
        raise AssertionError("stdin before a session")

    def on_direct(self, child: ChildRef, pipes: tuple[tuple[StreamKind, int, int], ...]
                  ) -> None:
        raise AssertionError("output before a session")

    def on_exit(self, child: ChildRef) -> None:
        raise AssertionError("exit before a session")
