"""What a session needs from the runtime (`Core`) and what the runtime needs
from a session (`Session`).

Sessions are sans-IO: they turn packets into calls on a `Core` and the
runtime's callbacks into bytes handed to `Core.send`. The runtime implements
`Core` over real descriptors; the unit tests implement it with a fake.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no `typing`, no `enum` at run time (see protocol/common.py)

if TYPE_CHECKING:
    from enum import Enum
    from typing import Protocol

    from resin_py.protocol.common import SpawnOptions, StreamKind
    from resin_py.protocol.errors import ProtocolError
    from resin_py.protocol.terms import Term
else:
    from resin_py.protocol.common import LiteEnum as Enum

    Protocol = object  # at run time the protocols below are plain base classes


class StdinResult(Enum):
    """What became of one write to a child's stdin."""

    WRITTEN = "written"  # every byte is in the child's pipe
    BROKEN = "broken"  # the child closed its stdin (EPIPE), or exited
    CLOSED = "closed"  # stdin was closed by request, or is /dev/null


class ChildRef(Protocol):
    """A spawned child as the session sees it."""

    @property
    def id(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def exit_code(self) -> int | None:
        """The exit code, or None if a signal ended it (valid once exited)."""
    @property
    def term_signal(self) -> int:
        """The signal that ended it (valid when exit_code is None)."""


class Core(Protocol):
    """The runtime's services, as a session calls them."""

    def spawn(self, id: int, exe: bytes, args: tuple[bytes, ...], opts: SpawnOptions
              ) -> ChildRef:
        """Start a child; raise SpawnFailed (nothing runs) or OSError (no child
        could be created: out of descriptors, fork failed)."""
    def write_stdin(self, child: ChildRef, data: bytes) -> None:
        """Queue bytes for the child's stdin; `Session.on_stdin_result` tells
        what became of them, once, in order."""
    def stdin_queued(self, child: ChildRef) -> int:
        """Writes queued for the child's stdin and not yet answered."""
    def close_stdin(self, child: ChildRef, ref: Term) -> None:
        """Close the child's stdin after what is queued; then
        `Session.on_close_stdin_done`."""
    def grant_credit(self, child: ChildRef, kind: StreamKind, amount: int) -> None: ...
    def direct_pipes(self, child: ChildRef) -> tuple[tuple[StreamKind, int, int], ...]:
        """The child's direct streams (spawn option `direct`) as (stream, fd of
        the read end in resin, the pipe's inode)."""
    def relay(self, child: ChildRef) -> None:
        """Read the child's direct streams from now on, as captured ones."""
    def signal(self, child: ChildRef, signo: int, group: bool) -> None:
        """Send a signal; raise OSError (ESRCH once the child has exited,
        EINVAL for a bad signal number)."""
    def resize(self, child: ChildRef, rows: int, cols: int) -> None:
        """Set a `pty` child's window size; raise OSError (ENOTTY: no
        terminal, ESRCH: the terminal is gone)."""
    def send(self, *parts: bytes | memoryview) -> None:
        """Queue bytes for resin's stdout (whole packets, in order)."""


class Session(Protocol):
    """A protocol session, as the runtime calls it."""

    # Largest single read of a child's pipe (on_output splits it into frames).
    read_limit: int
    # Bound on a child's unanswered stdin writes above which the runtime stops
    # reading resin's stdin (backpressure to the client); None: no bound, the
    # session bounds them itself.
    stdin_backlog: int | None
    # Most data bytes in one frame whose bytes the runtime moves to resin's
    # stdout itself (by splice(2), never through Python) right after the
    # frame's `output_header`; 0: the session frames output only from bytes
    # handed to `on_output`.
    splice_limit: int

    def on_packet(self, payload: bytes) -> None: ...
    def on_framing_error(self, exc: ProtocolError) -> None: ...
    def on_internal_error(self, exc: Exception) -> None: ...
    def on_output(self, child: ChildRef, kind: StreamKind, data: bytes) -> None: ...
    def output_header(self, child: ChildRef, kind: StreamKind, n: int) -> bytes:
        """The bytes of a frame of `n` output bytes that come before them (only
        if `splice_limit`, with 0 < n <= splice_limit); the runtime writes
        these and then exactly the `n` bytes, with nothing in between."""
    def on_stdin_result(self, child: ChildRef, result: StdinResult) -> None: ...
    def on_close_stdin_done(self, child: ChildRef, ref: Term) -> None: ...
    def on_direct(self, child: ChildRef, pipes: tuple[tuple[StreamKind, int, int], ...]
                  ) -> None:
        """The child's pipes are the client's to read from now on (spawn option
        `direct_after`): (stream, fd of the read end in resin, the pipe's inode)."""
    def on_exit(self, child: ChildRef) -> None: ...
