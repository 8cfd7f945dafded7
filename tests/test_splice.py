"""End to end: v1 output through a real resin, by splice(2) and by the read
path (RESIN_SPLICE=0), with exact bytes: random data of a few MiB from real
children, stdout and stderr interleaved, several children at once, small
credit windows, and resin's stdout a regular file (no splice possible).
The invariants themselves are unit-tested in test_runtime*.py."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RESIN_COMMAND

from resin_py.protocol import v1
from resin_py.protocol.framing import PacketReader
from resin_py.protocol.v1 import StreamKind
from resin_py.testing import ResinClient

# A child that writes random pieces (1 byte to 200 KB) to its stdout and
# stderr in a random order, from a seed: the test replays the same stream.
WRITER = """
import os, random, sys
rng = random.Random(int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    fd = rng.choice((1, 2))
    view = memoryview(rng.randbytes(rng.randint(1, int(sys.argv[3]))))
    while view:
        view = view[os.write(fd, view):]
"""
PIECES = 40  # about 4 MB per child in all
PIECE = 200_000


def expected(seed: int, pieces: int = PIECES, piece: int = PIECE) -> tuple[bytes, bytes]:
    rng = random.Random(seed)
    out, err = bytearray(), bytearray()
    for _ in range(pieces):
        fd = rng.choice((1, 2))
        (out if fd == 1 else err).extend(rng.randbytes(rng.randint(1, piece)))
    return bytes(out), bytes(err)


def writer_args(seed: int, pieces: int = PIECES, piece: int = PIECE) -> list[str]:
    return ["-c", WRITER, str(seed), str(pieces), str(piece)]


MODES = ["splice", "read"]


def start(mode: str) -> ResinClient:
    env = {**os.environ, "RESIN_SPLICE": "1" if mode == "splice" else "0"}
    client = ResinClient(RESIN_COMMAND, env=env)
    assert client.hello() == 1
    return client


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("mode", MODES)
def test_random_output_interleaved_exact(mode: str) -> None:
    with start(mode) as c:
        r = c.run(1, sys.executable, writer_args(7), stdin=b"", timeout=60)
    out, err = expected(7)
    assert (len(r.stdout), len(r.stderr)) == (len(out), len(err))
    assert digest(r.stdout) == digest(out) and digest(r.stderr) == digest(err)
    assert r.exit == v1.Exit(1, "exit", 0)
    data = [f for f in r.frames if isinstance(f, v1.Stdout | v1.Stderr)]
    assert all(0 < len(f.data) <= v1.MAX_DATA for f in data)


@pytest.mark.parametrize("mode", MODES)
def test_children_at_once_exact(mode: str) -> None:
    seeds = {10 + i: 100 + i for i in range(4)}
    with start(mode) as c:
        for id, seed in seeds.items():
            c.send_spawn(id, sys.executable, writer_args(seed, 25), stdin="null")
        got = {id: c.collect(id, timeout=60) for id in seeds}
    for id, seed in seeds.items():
        out, err = expected(seed, 25)
        assert got[id].stdout == out and got[id].stderr == err
        assert got[id].exit == v1.Exit(id, "exit", 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", [1, 1000, 70_000])
def test_small_credit_windows_exact(mode: str, window: int) -> None:
    """Credit is granted back as frames arrive (as lacca does): no stream
    ever gets more than granted, and every byte arrives."""
    pieces, piece = (10, 500) if window == 1 else (PIECES, PIECE)  # 1 byte a frame: fewer
    with start(mode) as c:
        c.send_spawn(1, sys.executable, writer_args(3, pieces, piece), stdin="null",
                     credit=window)
        got = {StreamKind.STDOUT: bytearray(), StreamKind.STDERR: bytearray()}
        granted = {StreamKind.STDOUT: window, StreamKind.STDERR: window}
        while True:
            frame = c.recv(timeout=60)
            if isinstance(frame, v1.Stdout | v1.Stderr):
                kind = StreamKind.STDOUT if isinstance(frame, v1.Stdout) else StreamKind.STDERR
                got[kind] += frame.data
                assert len(got[kind]) <= granted[kind], "output past the credit"
                c.send(v1.Credit(1, kind, len(frame.data)))
                granted[kind] += len(frame.data)
            elif isinstance(frame, v1.Exit):
                break
    out, err = expected(3, pieces, piece)
    assert got[StreamKind.STDOUT] == out and got[StreamKind.STDERR] == err


def test_stdout_a_regular_file(tmp_path: Path) -> None:
    """resin's stdout is no pipe: output is read and written, whole frames."""
    out_path = tmp_path / "out"
    fifo = tmp_path / "done"
    os.mkfifo(fifo)
    script = WRITER + f"\nopen({str(fifo)!r}, 'w').write('x')\n"
    with open(out_path, "wb") as out_file:
        resin = subprocess.Popen(RESIN_COMMAND, stdin=subprocess.PIPE, stdout=out_file)
    assert resin.stdin is not None
    hello = v1.encode_client_frame(v1.Hello(v1.VERSION))
    spawn = v1.encode_client_frame(v1.Spawn(1, sys.executable.encode(), (
        b"-c", script.encode(), b"5", str(PIECES).encode(), str(PIECE).encode()),
        v1.SpawnOptions(stdin="null")))
    for payload in (hello, spawn):
        resin.stdin.write(len(payload).to_bytes(2, "big") + payload)
    resin.stdin.flush()
    with open(fifo) as done:  # the child has written everything
        assert done.read() == "x"
    resin.stdin.close()  # resin drains the child's pipes, reports, exits
    assert resin.wait(timeout=10) == 0
    reader = PacketReader()
    reader.feed(out_path.read_bytes())
    frames = []
    while (payload := reader.next_packet()) is not None:
        frames.append(v1.decode_resin_frame(payload))
    assert reader.buffered == 0, "a torn frame at the end"
    out, err = expected(5)
    assert b"".join(f.data for f in frames if isinstance(f, v1.Stdout)) == out
    assert b"".join(f.data for f in frames if isinstance(f, v1.Stderr)) == err
