"""Output throughput: `head -c SIZE /dev/zero` through resin's v1 STDOUT frames.

    .venv/bin/python bench/resin_throughput.py [--size 1073741824] [--runs 3] [--only KEY,...]

Variants, each the median of RUNS, interleaved (one round runs each variant
once) so that the machine's load hits them alike:

- `direct pipe`: the same child read straight from a pipe in Python
  (os.readv into a 1 MiB buffer): the ceiling for any Python reader.
- `resin, raw reader`: through a v1 resin with infinite credit; the reader
  walks the packet headers of 1 MiB reads and counts the data bytes (what a
  BEAM port does, minus the BEAM). Also resin's CPU time for the transfer
  (user + system, from /proc/PID/stat), steadier than wall time on a busy
  machine. Output goes by splice(2) from the child's pipe to resin's stdout.
- `resin, raw, reads`: the same with RESIN_SPLICE=0: resin reads the output
  and writes it (the path before splice, and where splice is not possible).
- `resin, ResinClient`: the same through the test client, which decodes every
  frame into an object (its own cost shows).
- `resin stdin`: the other direction, SIZE bytes in STDIN frames of MAX_DATA
  bytes to `cat > /dev/null`, at most STDIN_WINDOW (4) unacked, as lacca
  writes; with resin's CPU time.

Prints GB/s (10^9 bytes per second) per variant, then JSON. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import struct
import subprocess
import sys
import time

from resin_py.protocol import v1
from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import Atom
from resin_py.testing import ResinClient

READ = 1 << 20


def check(ok: bool, what: str) -> None:
    """A broken transfer measures nothing: stop (this is not a result check)."""
    if not ok:
        raise RuntimeError(what)


def direct(size: int) -> float:
    buf = bytearray(READ)
    start = time.perf_counter()
    proc = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = 0
    while n := os.readv(fd, [buf]):
        got += n
    proc.wait()
    elapsed = time.perf_counter() - start
    check(got == size, f"got {got} bytes, expected {size}")
    return elapsed


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


RESIN_CPU: list[float] = []  # resin's CPU seconds in each raw run
STDIN_CPU: list[float] = []  # ... in each stdin run


RAW_READS_CPU: list[float] = []  # ... in each raw run without splice


def raw_reads(size: int) -> float:
    return raw(size, splice=False)


def raw(size: int, splice: bool = True) -> float:
    env = {**os.environ, "RESIN_SPLICE": "1" if splice else "0"}
    proc = subprocess.Popen([sys.executable, "-m", "resin_py"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, bufsize=0, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    os.write(w, b"\x00\x02\x00\x01")
    term = (Atom("spawn"), 1, b"head", [b"-c", str(size).encode(), b"/dev/zero"],
            [(Atom("stdin"), Atom("null"))])
    payload = b"\x10" + encode_term(term)
    start = time.perf_counter()
    os.write(w, struct.pack(">H", len(payload)) + payload)
    buf = bytearray(READ + 65537)
    view = memoryview(buf)
    have = 0  # bytes in buf not yet parsed
    got = 0
    done = False
    while not done:
        select.select([r], [], [])
        n = os.readv(r, [view[have:have + READ]])
        if not n:
            raise EOFError("resin closed its stdout")
        have += n
        pos = 0
        while have - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if have - pos < 2 + length:
                break
            kind = buf[pos + 2]
            if kind == v1.STDOUT:
                got += length - 5
            elif kind == v1.EVENT and buf[pos + 8:pos + 12] == b"exit":  # {exit, 1, ...}
                done = True
            pos += 2 + length
        buf[: have - pos] = buf[pos:have]
        have -= pos
    elapsed = time.perf_counter() - start
    (RESIN_CPU if splice else RAW_READS_CPU).append(cpu_seconds(proc.pid))
    proc.stdin.close()
    proc.wait()
    check(got == size, f"got {got} bytes, expected {size}")
    return elapsed


def stdin(size: int) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "resin_py"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    os.write(w, b"\x00\x02\x00\x01")
    payload = b"\x10" + encode_term((Atom("spawn"), 1, b"sh", [b"-c", b"cat >/dev/null"], []))
    os.write(w, struct.pack(">H", len(payload)) + payload)
    buf = b""
    while b"spawned" not in buf:
        buf += os.read(r, 4096)
    chunk = b"x" * v1.MAX_DATA
    frame = struct.pack(">HBI", len(chunk) + 5, v1.STDIN, 1) + chunk
    frames = -(-size // len(chunk))
    cpu0 = cpu_seconds(proc.pid)
    start = time.perf_counter()
    sent = acked = 0
    buf = b""
    while acked < frames:
        while sent < frames and sent - acked < v1.STDIN_WINDOW:
            os.write(w, frame)  # blocking: resin reads its stdin all the time
            sent += 1
        buf += os.read(r, 65536)
        while len(buf) >= 8:  # STDIN_ACK packets: 2 + 6 bytes
            check(buf[2] == v1.STDIN_ACK and buf[7] == 0, f"not a written ack: {buf[:8]!r}")
            buf = buf[8:]
            acked += 1
    elapsed = time.perf_counter() - start
    STDIN_CPU.append(cpu_seconds(proc.pid) - cpu0)
    proc.stdin.close()
    proc.wait()
    return elapsed * size / (frames * len(chunk))


def client(size: int) -> float:
    with ResinClient() as c:
        c.hello()
        start = time.perf_counter()
        c.send_spawn(1, "head", ["-c", str(size), "/dev/zero"], stdin="null")
        got = 0
        while True:
            frame = c.recv(timeout=120)
            if isinstance(frame, v1.Stdout):
                got += len(frame.data)
            elif isinstance(frame, v1.Exit):
                break
        elapsed = time.perf_counter() - start
    check(got == size, f"got {got} bytes, expected {size}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="",
                    help="comma-separated keys of variants: direct,raw,reads,client,stdin")
    args = ap.parse_args()
    keys = {"direct": ("direct pipe", direct), "raw": ("resin, raw reader", raw),
            "reads": ("resin, raw, reads", raw_reads), "client": ("resin, ResinClient", client),
            "stdin": ("resin stdin", stdin)}
    variants = [keys[k] for k in (args.only.split(",") if args.only else keys)]
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    timings: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(args.runs):
        for name, fn in variants:
            timings[name].append(fn(args.size))
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    rows = []
    gib = args.size / (1 << 30)
    for name, fn in variants:
        times = timings[name]
        gbps = args.size / statistics.median(times) / 1e9
        row: dict[str, object] = {"variant": name, "bytes": args.size,
                                   "gb_per_s": round(gbps, 3),
                                   "seconds": [round(t, 3) for t in times]}
        extra = ""
        cpu = {raw: RESIN_CPU, raw_reads: RAW_READS_CPU, stdin: STDIN_CPU}.get(fn)
        if cpu:
            row["resin_cpu_s"] = [round(t, 3) for t in cpu]
            extra = (f"   resin CPU {statistics.median(cpu):.2f} s (median), "
                     f"{statistics.median(cpu) / gib:.2f} s/GiB")
        rows.append(row)
        print(f"{name:22} {gbps:6.2f} GB/s   ({', '.join(f'{t:.2f}' for t in times)} s){extra}",
              flush=True)
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    print(json.dumps({"bench": "resin_throughput", "rows": rows,
                      "loadavg": {"before": load_before, "after": load_after}}))


if __name__ == "__main__":
    main()
