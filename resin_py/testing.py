"""A Python client for resin: starts it as a subprocess and speaks v0 or v1 to it.

`ResinClient` drives a real resin from Python: the test suite and the
benchmarks use it, and so can your own tests (see the pytest fixtures in
`resin_py.pytest_plugin`). Writes never deadlock against a resin that is
writing back: while a write is blocked, whatever resin sends is read and
buffered. Reads block in select() with a timeout; nothing sleeps.

resin decides its protocol from the first packet it receives: the v1
handshake (`hello()`) makes it speak v1, anything else makes it speak the
legacy v0 protocol. The client remembers which one is in use and raises
`ProtocolMisuse` when a method of the other protocol is called.

The wire protocols are described in `docs/protocol.md`, shipped with the
package (`resin --help` prints where).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Self, TypeAlias, TypedDict, Unpack

from resin_py.protocol import v0, v1
from resin_py.protocol.common import StderrMode, StdinMode, StreamKind
from resin_py.protocol.framing import PacketReader, encode_packet
from resin_py.protocol.terms import Term

__all__ = [
    "DEFAULT_COMMAND",
    "DEFAULT_TIMEOUT",
    "ClientTimeout",
    "Protocol",
    "ProtocolMisuse",
    "ResinClient",
    "ResinClosed",
    "RunOpts",
    "RunResult",
    "SpawnOpts",
]

#: How `ResinClient` starts resin by default: this package, run by this Python.
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "resin_py")
# Read size for resin's stdout: many packets per system call.
READ_SIZE = 1024 * 1024
#: Seconds every waiting method waits by default.
DEFAULT_TIMEOUT = 10.0

#: The protocol a resin speaks once its first packet decided it.
Protocol: TypeAlias = Literal["v0", "v1"]

_V0_ONLY = "resin is in v0 mode until the v1 handshake"


class ClientTimeout(TimeoutError):
    """resin did not send what was expected in time."""


class ResinClosed(EOFError):
    """resin closed its stdout."""


class ProtocolMisuse(RuntimeError):
    """A call that does not fit the protocol this resin speaks.

    resin picks v0 or v1 from the first packet it receives, for good: a v1
    method needs `hello()` first, and v0 methods are for a resin that never
    got the handshake.
    """


class RunOpts(TypedDict, total=False):
    """Spawn options (v1) as keyword arguments of `ResinClient.run`: `SpawnOpts`
    without `stdin`, which `run` takes as the data to write."""

    cd: str | bytes  # working directory of the child
    cd_of: int  # ... or the working directory of this OS process at the spawn
    # variables to set (a None value unsets one)
    env: Mapping[str | bytes, str | bytes | None] | Iterable[tuple[str | bytes, str | bytes | None]]
    clear_env: bool  # start from an empty environment instead of resin's
    arg0: str | bytes  # argv[0], if not `exe`
    stderr: StderrMode  # "capture" (default), "stdout" or "discard"
    credit: int | None  # initial output credit in bytes per stream (None: infinity)
    cgroup: tuple[tuple[str, str], ...]  # cgroup files to write first: (("pids.max", "10"),)
    pty: tuple[int, int]  # a pseudo-terminal of (rows, cols) as stdin, stdout and stderr
    user: int | str | bytes  # run as this user (resin must be root)
    group: int | str | bytes  # run with this group (resin must be root)
    # (name, soft, hard) resource limits, None for infinity: (("nofile", 64, 64),)
    rlimits: tuple[tuple[str, int | None, int | None], ...]
    # streams this client reads itself (see `open_direct`): (StreamKind.STDOUT,)
    direct: tuple[StreamKind, ...]


class SpawnOpts(RunOpts, total=False):
    """Spawn options (v1) as keyword arguments of `ResinClient.spawn` and `send_spawn`.

    The fields of `resin_py.protocol.common.SpawnOptions`, with str accepted
    wherever the protocol carries binaries, and `env` as a mapping or pairs.
    """

    stdin: StdinMode  # "pipe" (default) or "null"


@dataclass
class RunResult:
    """Everything one process produced, as collected by `ResinClient.collect`."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit: v1.Exit | None = None
    frames: list[v1.ResinFrame] = field(default_factory=list)


class ResinClient:
    """One resin subprocess, and the client end of its {packet,2} protocol.

    Starting a `ResinClient` starts resin; `kill()` (or leaving the `with`
    block) SIGKILLs it, and `close()` shuts it down the way lacca does, by
    closing its stdin. Either way resin kills every child it still has.

    v1, after `hello()`: `spawn`, `write`, `close_child_stdin`, `signal`,
    `collect`, `run`, or `send`/`recv`/`expect` for single frames. v0 (the
    legacy protocol, one process per resin): `v0_send`, `v0_recv`,
    `v0_collect`. Raw packets and bytes: `send_packet`, `send_raw`,
    `recv_packet`. Calls of the protocol resin is not speaking raise
    `ProtocolMisuse`; waiting calls raise `ClientTimeout` after `timeout`
    seconds and `ResinClosed` when resin closes its stdout.

    Example (v1)::

        with ResinClient() as resin:
            resin.hello()
            result = resin.run(1, "cat", stdin=b"hi")
            assert result.stdout == b"hi" and result.exit is not None
            assert result.exit.code == 0

    The `subprocess.Popen` of resin is the `proc` attribute.
    """

    proc: subprocess.Popen[bytes]

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        """Start resin.

        `command` is the argv that runs resin (default: `DEFAULT_COMMAND`,
        this package under this Python; `["resin"]` runs the installed
        script). `env` replaces resin's environment (default: inherited),
        `cwd` is its working directory, and `stderr` where its own stderr
        goes (as in `subprocess.Popen`; default: inherited).
        """
        self.proc = subprocess.Popen(
            list(command or DEFAULT_COMMAND),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._wfd = self.proc.stdin.fileno()
        self._rfd = self.proc.stdout.fileno()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self._reader = PacketReader()
        self._eof = False
        self._stash: deque[v1.ResinFrame] = deque()
        self._next_ref = 0
        self._protocol: Protocol | None = None

    @property
    def pid(self) -> int:
        """resin's OS pid."""
        return self.proc.pid

    @property
    def protocol(self) -> Protocol | None:
        """The protocol resin speaks, as far as this client sent it packets:
        "v1" after `hello()`, "v0" after a v0 message, None before either."""
        return self._protocol

    # --- protocol state ----------------------------------------------------------

    def _note_first_packet(self, payload: bytes) -> None:
        # The rule resin applies (protocol.negotiate): exactly `00 vv` starts
        # v1, a packet starting with 00 otherwise leaves the mode undecided,
        # anything else starts v0.
        if self._protocol is not None or not payload:
            return
        if v1.is_hello(payload):
            self._protocol = "v1"
        elif payload[0] != v1.HELLO:
            self._protocol = "v0"

    def _require_v1(self, method: str) -> None:
        if self._protocol == "v1":
            return
        if self._protocol is None:
            raise ProtocolMisuse(f"{method}(): call hello() first: {_V0_ONLY}")
        raise ProtocolMisuse(
            f"{method}() is a v1 call, but this resin got a v0 message first and speaks v0 "
            "for good; the v1 handshake must be the first packet: start a new ResinClient "
            "and call hello() before anything else")

    def _require_v0(self, method: str) -> None:
        if self._protocol == "v1":
            raise ProtocolMisuse(
                f"{method}() is a v0 call, but hello() made this resin speak v1 for good; "
                "v0 needs a resin that never got the handshake (a new ResinClient)")

    # --- raw packets -------------------------------------------------------------

    def send_raw(self, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Write bytes to resin's stdin as they are (framing is up to you),
        reading its output meanwhile. `ClientTimeout` if resin does not take
        them within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._wfd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientTimeout("resin does not read its stdin")
            readable, _, _ = select.select([self._rfd], [self._wfd], [], remaining)
            if readable:
                self._read()

    def send_packet(self, payload: bytes) -> None:
        """Send one {packet,2} packet: a 2-byte big-endian length, then `payload`.

        The first packet decides resin's protocol, and `protocol` follows it.
        """
        self._note_first_packet(payload)
        self.send_raw(encode_packet(payload))

    def close_resin_stdin(self) -> None:
        """Close resin's *own* stdin: resin shuts down and SIGKILLs every child
        it still has (their unread output is lost), then exits.

        Not the same as `close_child_stdin(id)`, which sends EOF to one child.
        `close()` does this and also waits for resin to exit.
        """
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def _read(self) -> None:
        try:
            data = os.read(self._rfd, READ_SIZE)
        except BlockingIOError:
            return
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    def recv_packet(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """The payload of the next packet from resin.

        Raw: frames that `expect` set aside are not returned here.
        """
        deadline = time.monotonic() + timeout
        while True:
            payload = self._reader.next_packet()
            if payload is not None:
                return payload
            if self._eof:
                raise ResinClosed("resin closed its stdout")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientTimeout(f"nothing from resin within {timeout} s")
            readable, _, _ = select.select([self._rfd], [], [], remaining)
            if readable:
                self._read()

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for resin to exit; its exit status
        (`subprocess.TimeoutExpired` after `timeout` seconds)."""
        return self.proc.wait(timeout)

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Shut resin down as lacca does: close its stdin (see
        `close_resin_stdin`) and wait for it to exit; its exit status."""
        self.close_resin_stdin()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL resin (if it still runs), reap it and close the pipes.

        resin's children die with it (their parent-death signal is SIGKILL).
        Safe to call more than once.
        """
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()

    def __enter__(self) -> Self:
        """The client itself; leaving the block calls `kill()`."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """`kill()` resin."""
        self.kill()

    # --- v0 ------------------------------------------------------------------------

    def v0_send(
        self,
        msg: v0.ClientMessage,
        *,
        flags: int = v0.DEFAULT_FLAGS,
        chunk_size: int = v0.V0_MAX_CHUNK,
        data_as_bin: bool = False,
    ) -> None:
        """Send a v0 message (`v0.StartProcess`, `v0.DataIn`, `v0.KillProcess`),
        chunked like lacca 0.2.3 (see `v0.encode_client_message` for the keywords).

        The first v0 message makes resin speak v0 for good.
        """
        self._require_v0("v0_send")
        payloads = v0.encode_client_message(
            msg, flags=flags, chunk_size=chunk_size, data_as_bin=data_as_bin)
        self._note_first_packet(payloads[0])
        self.send_raw(b"".join(encode_packet(p) for p in payloads))

    def v0_recv(self, timeout: float = DEFAULT_TIMEOUT) -> v0.ResinMessage:
        """The next v0 message from resin: `v0.DataOut`, `v0.ExitStatus` or
        `v0.ErrorReport`."""
        self._require_v0("v0_recv")
        return v0.decode_resin_message(self.recv_packet(timeout))

    def v0_collect(self, timeout: float = DEFAULT_TIMEOUT
                   ) -> tuple[bytes, bytes, v0.ExitStatus, list[v0.ResinMessage]]:
        """Receive until `v0.ExitStatus`: (stdout, stderr, exit status, every message)."""
        self._require_v0("v0_collect")
        deadline = time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        seen: list[v0.ResinMessage] = []
        while True:
            msg = self.v0_recv(max(0.0, deadline - time.monotonic()))
            seen.append(msg)
            if isinstance(msg, v0.DataOut):
                (out if msg.stream == "Stdout" else err).extend(msg.data)
            elif isinstance(msg, v0.ExitStatus):
                return bytes(out), bytes(err), msg, seen

    # --- v1 ------------------------------------------------------------------------

    def hello(self, version: int = v1.VERSION, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The v1 handshake: must be the first thing sent to resin. Returns the
        version resin will speak (1, whatever `version` was asked for)."""
        if self._protocol == "v0":
            raise ProtocolMisuse(
                "hello() after a v0 message: this resin speaks v0 for good; the handshake "
                "must be the first packet (start a new ResinClient)")
        if self._protocol == "v1":
            raise ProtocolMisuse("hello() was already called: this resin speaks v1")
        self.send(v1.Hello(version))
        reply = self.recv(timeout)
        if not isinstance(reply, v1.HelloReply):
            raise AssertionError(f"expected hello reply, got {reply!r}")
        return reply.version

    def send(self, frame: v1.ClientFrame) -> None:
        """Send one v1 frame (`v1.Hello` only as the first packet; anything
        else needs `hello()` first)."""
        if not isinstance(frame, v1.Hello):
            self._require_v1("send")
        self.send_packet(v1.encode_client_frame(frame))

    def recv(self, timeout: float = DEFAULT_TIMEOUT) -> v1.ResinFrame:
        """The next v1 frame from resin (frames set aside by `expect` come first)."""
        self._require_v1("recv")
        if self._stash:
            return self._stash.popleft()
        return v1.decode_resin_frame(self.recv_packet(timeout))

    def expect(self, match: Callable[[v1.ResinFrame], bool], timeout: float = DEFAULT_TIMEOUT
               ) -> v1.ResinFrame:
        """The first frame for which `match` is true; other frames are kept for `recv`."""
        self._require_v1("expect")
        deadline = time.monotonic() + timeout
        for i, frame in enumerate(self._stash):
            if match(frame):
                del self._stash[i]
                return frame
        while True:
            frame = v1.decode_resin_frame(self.recv_packet(max(0.0, deadline - time.monotonic())))
            if match(frame):
                return frame
            self._stash.append(frame)

    def make_ref(self) -> int:
        """A new request ref (1, 2, 3, ...) for `signal`/`close_stdin` requests."""
        self._next_ref += 1
        return self._next_ref

    def spawn(self, id: int, exe: str | bytes, args: Sequence[str | bytes] = (),
              timeout: float = DEFAULT_TIMEOUT, **opts: Unpack[SpawnOpts]
              ) -> v1.Spawned | v1.SpawnError:
        """Spawn `exe` (looked up in PATH) with `args` as process `id` (any
        unused 32-bit number you choose), and wait for resin's answer:
        `v1.Spawned` (with the OS pid) or `v1.SpawnError` (with the reason).
        Options: see `SpawnOpts`."""
        self._require_v1("spawn")
        self.send_spawn(id, exe, args, **opts)
        frame = self.expect(
            lambda f: isinstance(f, v1.Spawned | v1.SpawnError) and f.id == id, timeout)
        assert isinstance(frame, v1.Spawned | v1.SpawnError)
        return frame

    def send_spawn(self, id: int, exe: str | bytes, args: Sequence[str | bytes] = (),
                   **opts: Unpack[SpawnOpts]) -> None:
        """Send a spawn request without waiting for the answer (see `spawn`)."""
        self._require_v1("send_spawn")
        self.send(v1.Spawn(id, _b(exe), tuple(_b(a) for a in args), _spawn_options(opts)))

    def open_direct(self, spawned: v1.Spawned) -> dict[StreamKind, int]:
        """Open this client's own descriptors of a child's direct pipes (the
        `direct` spawn option) through /proc/<resin>/fd/<fd>, checking each
        one's inode: blocking read ends, by stream. Close them when done."""
        opened: dict[StreamKind, int] = {}
        try:
            for kind, fd, inode in spawned.direct:
                own = os.open(f"/proc/{self.pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                opened[kind] = own
                if os.fstat(own).st_ino != inode:
                    raise OSError(f"/proc/{self.pid}/fd/{fd} is not the pipe of inode {inode}")
        except BaseException:
            for own in opened.values():
                os.close(own)
            raise
        return opened

    def request(self, req: v1.Signal | v1.CloseStdin | v1.Resize,
                timeout: float = DEFAULT_TIMEOUT) -> Term:
        """Send a signal, close_stdin or resize request and wait for its reply; the
        result term (`OK`, or `(Atom("error"), reason)`)."""
        self._require_v1("request")
        self.send(req)
        frame = self.expect(
            lambda f: isinstance(f, v1.Reply) and f.id == req.id and f.ref == req.ref, timeout)
        assert isinstance(frame, v1.Reply)
        return frame.result

    def signal(self, id: int, signo: int, group: bool = False) -> Term:
        """Send signal `signo` to process `id` (to its process group and what
        left it if `group`); resin's result term."""
        self._require_v1("signal")
        return self.request(v1.Signal(id, self.make_ref(), signo, group))

    def resize(self, id: int, rows: int, cols: int) -> Term:
        """Set the window size of `pty` child `id`; resin's result term."""
        self._require_v1("resize")
        return self.request(v1.Resize(id, self.make_ref(), rows, cols))

    def close_child_stdin(self, id: int) -> Term:
        """EOF on the stdin of child process `id`, after the data written before;
        resin's result term. resin and its other children go on (compare
        `close_resin_stdin`)."""
        self._require_v1("close_child_stdin")
        return self.request(v1.CloseStdin(id, self.make_ref()))

    def write(self, id: int, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> v1.AckStatus:
        """Write `data` to the stdin of process `id` in STDIN frames, at most
        STDIN_WINDOW unacked, and wait for every ack; the last ack status
        (the first one that is not `written`, if any)."""
        self._require_v1("write")
        deadline = time.monotonic() + timeout
        chunks = [data[i:i + v1.MAX_DATA] for i in range(0, len(data), v1.MAX_DATA)] or [b""]
        unacked = 0
        status = v1.AckStatus.WRITTEN
        for chunk in chunks:
            while unacked >= v1.STDIN_WINDOW:
                status = self._await_ack(id, deadline, status)
                unacked -= 1
            self.send(v1.Stdin(id, chunk))
            unacked += 1
        while unacked:
            status = self._await_ack(id, deadline, status)
            unacked -= 1
        return status

    def _await_ack(self, id: int, deadline: float, status: v1.AckStatus) -> v1.AckStatus:
        ack = self.expect(lambda f: isinstance(f, v1.StdinAck) and f.id == id,
                          max(0.0, deadline - time.monotonic()))
        assert isinstance(ack, v1.StdinAck)
        return status if status != v1.AckStatus.WRITTEN else ack.status

    def collect(self, id: int, timeout: float = DEFAULT_TIMEOUT) -> RunResult:
        """Receive the frames of process `id` until its exit event: its
        stdout, stderr, exit and every frame (other processes' frames are
        kept for `recv`)."""
        self._require_v1("collect")
        deadline = time.monotonic() + timeout
        result = RunResult()
        out, err = bytearray(), bytearray()
        while result.exit is None:
            frame = self.expect(lambda f: getattr(f, "id", None) == id,
                                max(0.0, deadline - time.monotonic()))
            result.frames.append(frame)
            if isinstance(frame, v1.Stdout):
                out += frame.data
            elif isinstance(frame, v1.Stderr):
                err += frame.data
            elif isinstance(frame, v1.Exit):
                result.exit = frame
        result.stdout, result.stderr = bytes(out), bytes(err)
        return result

    def run(self, id: int, exe: str | bytes, args: Sequence[str | bytes] = (),
            stdin: bytes | None = None, timeout: float = DEFAULT_TIMEOUT,
            **opts: Unpack[RunOpts]) -> RunResult:
        """Spawn, feed `stdin` then close it (if given), collect until exit.
        Options: see `RunOpts`. `AssertionError` if the spawn fails."""
        self._require_v1("run")
        spawned = self.spawn(id, exe, args, timeout=timeout, **opts)
        if not isinstance(spawned, v1.Spawned):
            raise AssertionError(f"spawn failed: {spawned!r}")
        if stdin is not None:
            self.write(id, stdin, timeout)
            self.close_child_stdin(id)
        return self.collect(id, timeout)


def _b(value: str | bytes) -> bytes:
    return os.fsencode(value) if isinstance(value, str) else value


def _spawn_options(opts: SpawnOpts) -> v1.SpawnOptions:
    kw: dict[str, Any] = {**opts}
    for key in ("cd", "arg0", "user", "group"):
        if isinstance(kw.get(key), str):
            kw[key] = os.fsencode(kw[key])
    if "env" in kw:
        kw["env"] = tuple(
            (_b(k), None if v is None else _b(v)) for k, v in dict(kw["env"]).items())
    return v1.SpawnOptions(**kw)
