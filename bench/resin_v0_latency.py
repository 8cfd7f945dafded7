"""Start-up latency: the exec of resin to its first useful reply.

lacca 0.2.3 reads a process's output 50 ms after starting it, so this decides
whether resin_py is a drop-in for the Rust resin. Measured, interleaved in one
run (so that load affects every contender alike):

- v0: exec of resin to the first DataOut of `/bin/echo hi` (exactly lacca
  0.2.3's StartProcess, nothing else), through the fast launcher
  (`resin launcher`) and through the `resin` console script;
- v1: exec of resin (launcher) to its handshake reply;
- floors: `/bin/echo hi` started directly (first byte), and a bare
  `python -IS` that writes one byte (no program in this interpreter can
  answer sooner).

Usage: resin_v0_latency.py [--runs N] [--hogs K] [--table]
  --hogs K starts K `yes >/dev/null` CPU hogs for the run.
Prints one JSON object on stdout (bench/run.py reads it), or a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BASELINE = "subprocess /bin/echo"


def read_packet(fd: int) -> bytes:
    def read(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise EOFError("resin closed its stdout")
            out += chunk
        return out

    (length,) = struct.unpack(">H", read(2))
    return read(length)


def _timed(cmd: list[str], request: bytes, done: Callable[[bytes], bool]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(request)
    proc.stdin.flush()
    while not done(read_packet(proc.stdout.fileno())):
        pass
    elapsed = time.perf_counter() - start
    proc.stdin.close()
    proc.wait()
    return elapsed * 1000


# Exactly what lacca 0.2.3 sends: flags 0x02, then a msgpack map.
_V0_BODY = msgpack.packb({"StartProcess": {"exec": "/bin/echo", "args": ["hi"]}})
V0_START = struct.pack(">HB", len(_V0_BODY) + 1, 0x02) + _V0_BODY
V1_HELLO = b"\x00\x02\x00\x01"


def v0_first_dataout(resin: list[str]) -> float:
    return _timed(resin, V0_START, lambda p: "DataOut" in msgpack.unpackb(p))


def v1_handshake(resin: list[str]) -> float:
    return _timed(resin, V1_HELLO, lambda p: True)


def first_byte(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    proc.wait()
    return elapsed * 1000


def _resin(name: str) -> list[str] | None:
    path = VENV_BIN / name
    if path.exists():
        return [str(path)]
    found = shutil.which(name)
    return [found] if found else None


def contenders() -> dict[str, Callable[[], float]]:
    found: dict[str, Callable[[], float]] = {
        BASELINE: lambda: first_byte(["/bin/echo", "hi"]),
        "python -IS, one byte": lambda: first_byte(
            [sys.executable, "-IS", "-c", "import os; os.write(1, b'x')"]),
    }
    launcher = _resin("resind")
    console = _resin("resin") or [sys.executable, "-m", "resin_py"]
    if launcher:
        found["resin_py v0 (launcher)"] = lambda: v0_first_dataout(launcher)
        found["resin_py v1 handshake (launcher)"] = lambda: v1_handshake(launcher)
    found["resin_py v0 (console script)"] = lambda: v0_first_dataout(console)
    return found


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--table", action="store_true")
    opts = parser.parse_args()
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(opts.hogs)]
    try:
        runs = contenders()
        for run in runs.values():
            run()  # warm the page cache
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(opts.runs):
            for name, run in runs.items():
                samples[name].append(run())
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if opts.table:
        print(f"{opts.runs} runs each, interleaved, {opts.hogs} CPU hogs "
              f"({os.cpu_count()} CPUs); ms from exec")
        print(f"{'contender':36} {'min':>6} {'median':>7} {'p90':>6} {'p99':>6}")
        for name, values in samples.items():
            print(f"{name:36} {min(values):6.1f} {statistics.median(values):7.1f} "
                  f"{percentile(values, 0.9):6.1f} {percentile(values, 0.99):6.1f}")
        return
    print(json.dumps({"bench": "first_reply", "unit": "ms", "baseline": BASELINE,
                      "hogs": opts.hogs, "variants": samples}))


if __name__ == "__main__":
    main()
