"""Every input resin buffers has a bound and a behaviour at the bound
(docs/protocol.md, "Bounds"), against a real resin:

- v1 STDIN frames past the ack window are refused for that id;
- v0 DataIn (no acks) beyond a backlog: resin stops reading its stdin;
- a full output backlog (nobody reads resin's stdout): resin stops reading
  its stdin, so junk frames cannot grow it either.

"Stopped reading" is read off resin's epoll registrations in /proc (a fact
no protocol event tells), never guessed from a timeout.
"""

from __future__ import annotations

import os
import select

import pytest
from conftest import spawned_child, wait_gone

from resin_py.protocol import v0, v1
from resin_py.protocol.framing import encode_packet
from resin_py.protocol.terms import Atom
from resin_py.protocol.v0_session import V0_STDIN_BACKLOG
from resin_py.testing import ResinClient

EPOLLIN = 0x1


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def reads_stdin(pid: int) -> bool:
    """resin's epoll watches its fd 0 for input (not just for a hangup)."""
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                info = f.read()
        except FileNotFoundError:
            continue
        for line in info.splitlines():
            fields = line.split()
            if fields[:2] == ["tfd:", "0"] and "events:" in fields:
                return bool(int(fields[fields.index("events:") + 1], 16) & EPOLLIN)
    return False


def write_until_throttled(resin: ResinClient, packet: bytes, limit: int) -> int:
    """Write `packet` over and over without reading resin's output until resin
    stops reading its stdin; the bytes written. Fails past `limit` bytes."""
    fd = resin._wfd
    written = 0
    pending = memoryview(b"")
    while True:
        if not pending:
            pending = memoryview(packet * 64)
        try:
            n = os.write(fd, pending)
            written += n
            pending = pending[n:]
            assert written <= limit, f"resin took {written} bytes without pushing back"
            continue
        except BlockingIOError:
            pass
        if not reads_stdin(resin.pid):
            return written
        select.select([], [fd], [], 0.05)  # resin is still reading: it will drain the pipe


def test_v1_stdin_past_the_window_is_refused(client: ResinClient) -> None:
    assert isinstance(client.spawn(1, "sleep", ["1000"]), v1.Spawned)
    before = rss(client.pid)
    frames = 1000
    data = b"x" * v1.MAX_DATA
    for _ in range(frames):
        client.send(v1.Stdin(1, data))  # never waits for acks
    # The signal's reply comes after every STDIN frame was handled.
    ref = client.make_ref()
    client.send(v1.Signal(1, ref, 9, True))
    refused = acks = 0
    while True:
        frame = client.recv()
        if isinstance(frame, v1.ErrorEvent):
            assert frame == v1.ErrorEvent(
                1, (Atom("stdin_window_exceeded"), v1.STDIN_WINDOW))
            refused += 1
        elif isinstance(frame, v1.StdinAck):
            acks += 1
        elif isinstance(frame, v1.Reply):
            assert frame.ref == ref
            # 1000 x 64 KiB sent: resin holds the window, not 64 MB.
            assert rss(client.pid) - before < 16 * 1024 * 1024
        elif isinstance(frame, v1.Exit):
            assert frame == v1.Exit(1, "signal", 9)
            break
    assert refused + acks == frames
    # What the child's pipe took (about one frame) plus the window.
    assert v1.STDIN_WINDOW <= acks <= v1.STDIN_WINDOW + 2


def test_v0_datain_backlog_stops_reading_stdin(resin: ResinClient) -> None:
    resin.v0_send(v0.StartProcess("sleep", ("1000",)))
    child = spawned_child(resin.pid)
    before = rss(resin.pid)
    chunk = 60_000
    packet = b"".join(encode_packet(p) for p in v0.encode_client_message(
        v0.DataIn(b"d" * chunk), data_as_bin=True))
    # Bound: the backlog, one message past it, the child's stdin pipe, resin's
    # read buffer and packet reassembly, and resin's own stdin pipe.
    limit = V0_STDIN_BACKLOG + 4 * 1024 * 1024
    written = write_until_throttled(resin, packet, limit)
    assert written >= V0_STDIN_BACKLOG
    assert rss(resin.pid) - before < 32 * 1024 * 1024
    # Not reading, resin still sees its client go away: it exits and kills the child.
    resin.close_resin_stdin()
    assert resin.wait() == 0
    wait_gone(child)


@pytest.mark.heavy
def test_output_backlog_stops_reading_stdin(client: ResinClient) -> None:
    before = rss(client.pid)
    junk = encode_packet(b"\x7f\x00")  # each answered with an error event
    # Bound: resin's stdout pipe (up to 1 MiB) and backlog (1 MiB) in error
    # events of ~20 bytes, each from a 4-byte junk packet, plus the pipes.
    written = write_until_throttled(client, junk, 16 * 1024 * 1024)
    assert written > 0
    assert rss(client.pid) - before < 32 * 1024 * 1024
    # Reading again, resin serves again: every junk packet is answered.
    answered = 0
    while True:
        frame = client.recv()
        if not isinstance(frame, v1.ErrorEvent):
            break
        answered += 1
        if answered == written // len(junk):
            break
    assert answered == written // len(junk)
    assert client.run(2, "echo", ["still here"]).stdout == b"still here\n"
