"""The one exception tree of resin_py.

Every error resin raises on purpose derives from `ResinError`. Errors caused
by bytes a peer sent derive from `ProtocolError`; the server turns each of them
into an error message on the wire and keeps serving.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing` at run time (see protocol/common.py)

if TYPE_CHECKING:
    from typing import Literal, TypeAlias

    from resin_py.protocol.terms import Term


class ResinError(Exception):
    """Base class of every error raised by resin_py."""


class ProtocolError(ResinError):
    """A peer sent bytes that violate the protocol."""


class FramingError(ProtocolError):
    """The packet framing itself is wrong."""


class ZeroLengthPacket(FramingError):
    """A packet header announced 0 payload bytes."""

    def __init__(self) -> None:
        super().__init__("zero-length packet")


class PacketTooLarge(FramingError):
    """A payload does not fit in one packet (encoder side)."""


class V0Error(ProtocolError):
    """A v0 message could not be decoded or is not acceptable."""


class MessageTooLarge(V0Error):
    """A chunked v0 message grew beyond V0_MAX_MESSAGE."""


class V1Error(ProtocolError):
    """A v1 frame could not be acted on.

    `id` is the process id the frame named, when it could be read.
    """

    def __init__(self, msg: str, id: int | None = None) -> None:
        super().__init__(msg)
        self.id = id


class BadFrame(V1Error):
    """Unknown frame type, or a frame of the wrong size for its type."""

    def __init__(self, frame_type: int, id: int | None = None, why: str = "") -> None:
        super().__init__(f"bad frame of type {frame_type:#04x} {why}".strip(), id)
        self.frame_type = frame_type


class BadTerm(V1Error):
    """A CONTROL payload is not a valid, acceptable external term."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"bad term: {detail}")
        self.detail = detail


class UnknownRequest(V1Error):
    """A well-formed term that is not a request resin knows."""

    def __init__(self, term: Term) -> None:
        super().__init__("unknown request")
        self.term = term


class BadArgument(V1Error):
    """A known request with a malformed field; `what` names the field."""

    def __init__(self, request: str, id: int, what: Term, ref: Term | None = None) -> None:
        super().__init__(f"bad argument in {request}: {what!r}", id)
        self.request = request
        self.what = what
        self.ref = ref


class SpawnFailed(ResinError):
    """The OS refused to start a child: at which `stage` ("path": not found on
    PATH, "cwd": the working directory, "exec": execve or the setup before
    it, "cgroup": the cgroup limits asked for, "user" / "group": the identity
    asked for, "rlimit": a resource limit, "pty": the terminal) and with which
    `errno`. Plain OS facts: each session maps them to its own wire vocabulary."""

    def __init__(self, stage: SpawnStage, errno: int, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = errno


SpawnStage: TypeAlias = "Literal['path', 'cwd', 'exec', 'cgroup', 'user', 'group', 'rlimit', 'pty']"
