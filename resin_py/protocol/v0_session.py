"""The v0 session: lacca 0.2.3's msgpack protocol over a `Core` (sans-IO)."""

from __future__ import annotations

import errno

from resin_py.protocol import v0
from resin_py.protocol.common import SpawnOptions, StreamKind
from resin_py.protocol.errors import ProtocolError, SpawnFailed
from resin_py.protocol.framing import packet_header
from resin_py.protocol.session import StdinResult

TYPE_CHECKING = False  # no `typing` at run time (see protocol/common.py)

if TYPE_CHECKING:
    from resin_py.protocol.session import ChildRef, Core
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

# resin 0.3.x read a child's pipes 1 KiB at a time and sent each read as one
# DataOut. resin reads up to 32 KiB at once and splits what it read into
# DataOuts of 1 KiB (and a last one of the rest): the same packets as 1 KiB
# reads of the same bytes, at about twice the throughput of 1 KiB reads. It
# must be a multiple of V0_MAX_DATA.
V0_READ_LIMIT = 32 * v0.V0_MAX_DATA

# Every ErrorReport starts like resin 0.3.x's: `resin daemon error: <error>`,
# where a message it could not decode was `fail serializing payload: <rmp-serde
# error>` and a child it could not start `internal io error: <io::Error>`.
ERROR_PREFIX = "resin daemon error: "
DECODE_ERROR = "fail serializing payload: "
# Longest ErrorReport text (resin's own texts are far shorter).
_MAX_ERROR_TEXT = 4096

# The errnos a spawn may meet: std::io::ErrorKind's name (as Rust's Debug
# prints it; "Uncategorized" for the others) and glibc's strerror text (a
# table: the sans-IO core imports no `os`).
_OS_ERRORS = {
    errno.ENOENT: ("NotFound", "No such file or directory"),
    errno.EACCES: ("PermissionDenied", "Permission denied"),
    errno.EPERM: ("PermissionDenied", "Operation not permitted"),
    errno.ENOTDIR: ("NotADirectory", "Not a directory"),
    errno.EISDIR: ("IsADirectory", "Is a directory"),
    errno.ELOOP: ("FilesystemLoop", "Too many levels of symbolic links"),
    errno.ENAMETOOLONG: ("InvalidFilename", "File name too long"),
    errno.E2BIG: ("ArgumentListTooLong", "Argument list too long"),
    errno.ETXTBSY: ("ExecutableFileBusy", "Text file busy"),
    errno.ENOMEM: ("OutOfMemory", "Cannot allocate memory"),
    errno.EAGAIN: ("WouldBlock", "Resource temporarily unavailable"),
    errno.EINVAL: ("InvalidInput", "Invalid argument"),
    errno.EINTR: ("Interrupted", "Interrupted system call"),
    errno.EBUSY: ("ResourceBusy", "Device or resource busy"),
    errno.EROFS: ("ReadOnlyFilesystem", "Read-only file system"),
    errno.ENOSPC: ("StorageFull", "No space left on device"),
    errno.ENOSYS: ("Unsupported", "Function not implemented"),
    errno.ENOEXEC: ("Uncategorized", "Exec format error"),
    errno.EMFILE: ("Uncategorized", "Too many open files"),
    errno.ENFILE: ("Uncategorized", "Too many open files in system"),
    errno.EIO: ("Uncategorized", "Input/output error"),
    errno.EFAULT: ("Uncategorized", "Bad address"),
    errno.ELIBBAD: ("Uncategorized", "Accessing a corrupted shared library"),
}


def rust_io_error(code: int, strerror: str | None = None) -> str:
    """An OS error as Rust's `{:?}` of `io::Error` prints it (resin 0.3.x's
    text for a child it could not start). `strerror`: the C library's text,
    for an errno the table does not know."""
    kind, message = _OS_ERRORS.get(code, ("Uncategorized", strerror or f"Unknown error {code}"))
    return f"Os {{ code: {code}, kind: {kind}, message: {v0.rust_debug_str(message)} }}"


def _fsencode(text: str) -> bytes:
    """As os.fsencode on Linux (UTF-8, undecodable bytes kept as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


class V0Session:
    """The legacy protocol: one child, msgpack messages."""

    read_limit = V0_READ_LIMIT
    stdin_backlog: int | None = V0_STDIN_BACKLOG
    # v0 output is msgpack DataOut messages of at most 1,024 bytes, built
    # from the bytes read: never spliced.
    splice_limit = 0

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
            self.report(DECODE_ERROR + str(exc))
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
        if not msg.exec:  # execvp("") fails so, as resin 0.3.x's spawn did
            self.report("internal io error: " + rust_io_error(errno.ENOENT))
            return
        try:
            self.child = self.core.spawn(
                0, _fsencode(msg.exec), tuple(_fsencode(a) for a in msg.args), _V0_OPTIONS
            )
        except (SpawnFailed, OSError) as exc:  # OSError: out of descriptors, fork failed
            if exc.errno:
                strerror = exc.strerror if isinstance(exc, OSError) else None
                self.report("internal io error: " + rust_io_error(exc.errno, strerror))
            else:
                self.report(f"StartProcess: {exc}")

    def on_framing_error(self, exc: ProtocolError) -> None:
        self.report(str(exc))

    def on_internal_error(self, exc: Exception) -> None:
        self.report(f"internal error: {type(exc).__name__}: {exc}"[:1000])

    def output_header(self, child: ChildRef, kind: StreamKind, n: int) -> bytes:
        raise AssertionError("v0 output is not spliced (splice_limit is 0)")

    def on_output(self, child: ChildRef, kind: StreamKind, data: bytes) -> None:
        # DataOuts of V0_MAX_DATA bytes, as 0.3.x's 1 KiB reads would have cut them.
        stream = _V0_STREAM[kind]
        step = v0.V0_MAX_DATA
        for start in range(0, len(data), step):
            head, tail = v0.data_out_parts(stream, data[start:start + step])
            self.core.send(packet_header(len(head) + len(tail)), head, tail)

    def on_stdin_result(self, child: ChildRef, result: StdinResult) -> None:
        if result is StdinResult.BROKEN and not self.exited:
            self.report("DataIn: the process closed its stdin (broken pipe)")

    def on_close_stdin_done(self, child: ChildRef, ref: Term) -> None:
        pass  # v0 has no close_stdin

    def on_direct(self, child: ChildRef, pipes: tuple[tuple[StreamKind, int, int], ...]
                  ) -> None:
        raise AssertionError("v0 has no direct output")

    def on_exit(self, child: ChildRef) -> None:
        self.exited = True
        payload = v0.encode_exit_status(child.exit_code)
        self.core.send(packet_header(len(payload)), payload)


def send_v0_error(core: Core, text: str) -> None:
    """An ErrorReport, `resin daemon error: ` + text: also how errors are
    answered before the mode is decided."""
    payload = v0.encode_error_report((ERROR_PREFIX + text)[:_MAX_ERROR_TEXT])
    core.send(packet_header(len(payload)), payload)
