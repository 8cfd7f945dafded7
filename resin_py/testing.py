"""A test and benchmark client for resin: starts it as a subprocess and speaks v0 or v1 to it.

Used by the test suite and the benchmarks. Writes never deadlock against a
resin that is writing back: while a write is blocked, whatever resin sends is
read and buffered. Reads block in select() with a timeout; nothing sleeps.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from resin_py.protocol import v0, v1
from resin_py.protocol.framing import PacketReader, encode_packet
from resin_py.protocol.terms import Term

DEFAULT_COMMAND = (sys.executable, "-m", "resin_py")
# Read size for resin's stdout: many packets per system call.
READ_SIZE = 1024 * 1024
DEFAULT_TIMEOUT = 10.0


class ClientTimeout(TimeoutError):
    """resin did not send what was expected in time."""


class ResinClosed(EOFError):
    """resin closed its stdout."""


@dataclass
class RunResult:
    """Everything one process produced, as collected by `ResinClient.collect`."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit: v1.Exit | None = None
    frames: list[v1.ResinFrame] = field(default_factory=list)


class ResinClient:
    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> None:
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

    @property
    def pid(self) -> int:
        return self.proc.pid

    # --- raw packets -------------------------------------------------------------

    def send_raw(self, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Write bytes to resin's stdin, reading its output meanwhile."""
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
        self.send_raw(encode_packet(payload))

    def close_stdin(self) -> None:
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
        """Wait for resin to exit; its exit status."""
        return self.proc.wait(timeout)

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Close resin's stdin and wait for it to exit."""
        self.close_stdin()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()

    def __enter__(self) -> ResinClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.kill()

    # --- v0 ------------------------------------------------------------------------

    def v0_send(self, msg: v0.ClientMessage, **kw: Any) -> None:
        """Send a v0 message (chunked like lacca 0.2.3; see v0.encode_client_message)."""
        self.send_raw(b"".join(encode_packet(p) for p in v0.encode_client_message(msg, **kw)))

    def v0_recv(self, timeout: float = DEFAULT_TIMEOUT) -> v0.ResinMessage:
        return v0.decode_resin_message(self.recv_packet(timeout))

    def v0_collect(self, timeout: float = DEFAULT_TIMEOUT
                   ) -> tuple[bytes, bytes, v0.ExitStatus, list[v0.ResinMessage]]:
        """Receive until ExitStatus: (stdout, stderr, exit status, every message)."""
        deadline = time.monotonic() + timeout
        out, err, seen = bytearray(), bytearray(), []
        while True:
            msg = self.v0_recv(max(0.0, deadline - time.monotonic()))
            seen.append(msg)
            if isinstance(msg, v0.DataOut):
                (out if msg.stream == "Stdout" else err).extend(msg.data)
            elif isinstance(msg, v0.ExitStatus):
                return bytes(out), bytes(err), msg, seen

    # --- v1 ------------------------------------------------------------------------

    def hello(self, version: int = v1.VERSION, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Handshake; the version resin will speak."""
        self.send(v1.Hello(version))
        reply = self.recv(timeout)
        if not isinstance(reply, v1.HelloReply):
            raise AssertionError(f"expected hello reply, got {reply!r}")
        return reply.version

    def send(self, frame: v1.ClientFrame) -> None:
        self.send_packet(v1.encode_client_frame(frame))

    def recv(self, timeout: float = DEFAULT_TIMEOUT) -> v1.ResinFrame:
        """The next frame (frames set aside by `expect` come first)."""
        if self._stash:
            return self._stash.popleft()
        return v1.decode_resin_frame(self.recv_packet(timeout))

    def expect(self, match: Callable[[v1.ResinFrame], bool], timeout: float = DEFAULT_TIMEOUT
               ) -> v1.ResinFrame:
        """The first frame for which `match` is true; other frames are kept for `recv`."""
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
        self._next_ref += 1
        return self._next_ref

    def spawn(self, id: int, exe: str | bytes, args: Sequence[str | bytes] = (),
              timeout: float = DEFAULT_TIMEOUT, **opts: Any) -> v1.Spawned | v1.SpawnError:
        """Spawn and wait for `spawned` or `spawn_error`. Options as in SpawnOptions,
        with str accepted for binaries."""
        self.send_spawn(id, exe, args, **opts)
        frame = self.expect(
            lambda f: isinstance(f, v1.Spawned | v1.SpawnError) and f.id == id, timeout)
        assert isinstance(frame, v1.Spawned | v1.SpawnError)
        return frame

    def send_spawn(self, id: int, exe: str | bytes, args: Sequence[str | bytes] = (),
                   **opts: Any) -> None:
        for key in ("cd", "arg0"):
            if isinstance(opts.get(key), str):
                opts[key] = os.fsencode(opts[key])
        if "env" in opts:
            opts["env"] = tuple(
                (_b(k), None if v is None else _b(v)) for k, v in dict(opts["env"]).items())
        self.send(v1.Spawn(id, _b(exe), tuple(_b(a) for a in args), v1.SpawnOptions(**opts)))

    def request(self, req: v1.Signal | v1.CloseStdin, timeout: float = DEFAULT_TIMEOUT) -> Term:
        """Send signal/close_stdin and wait for its reply; the result term."""
        self.send(req)
        frame = self.expect(
            lambda f: isinstance(f, v1.Reply) and f.id == req.id and f.ref == req.ref, timeout)
        assert isinstance(frame, v1.Reply)
        return frame.result

    def signal(self, id: int, signo: int, group: bool = False) -> Term:
        return self.request(v1.Signal(id, self.make_ref(), signo, group))

    def close_child_stdin(self, id: int) -> Term:
        return self.request(v1.CloseStdin(id, self.make_ref()))

    def write(self, id: int, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> v1.AckStatus:
        """Send data in STDIN frames, at most STDIN_WINDOW unacked; the last ack status
        (the first one that is not `written`, if any)."""
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
        """Receive the frames of process `id` until its exit event."""
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
            stdin: bytes | None = None, timeout: float = DEFAULT_TIMEOUT, **opts: Any
            ) -> RunResult:
        """Spawn, feed `stdin` then close it (if given), collect until exit."""
        spawned = self.spawn(id, exe, args, timeout=timeout, **opts)
        if not isinstance(spawned, v1.Spawned):
            raise AssertionError(f"spawn failed: {spawned!r}")
        if stdin is not None:
            self.write(id, stdin, timeout)
            self.close_child_stdin(id)
        return self.collect(id, timeout)


def _b(value: str | bytes) -> bytes:
    return os.fsencode(value) if isinstance(value, str) else value
