"""v0 start-up latency: spawn of `resin` to its first DataOut for `/bin/echo hi`.

lacca 0.2.3 reads a process's output 50 ms after starting it, so this is the
number that decides whether resin_py is a drop-in for the Rust resin. The
baseline is the same child started directly with subprocess, in the same run.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import msgpack

RUNS = 50


def read_packet(stream: object) -> bytes:
    read = stream.read  # type: ignore[attr-defined]
    (length,) = struct.unpack(">H", read(2))
    return bytes(read(length))


def resin_first_dataout(resin: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(resin, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    # Exactly what lacca 0.2.3 sends: flags 0x02, then a msgpack map.
    body = msgpack.packb({"StartProcess": {"exec": "/bin/echo", "args": ["hi"]}})
    proc.stdin.write(struct.pack(">HB", len(body) + 1, 0x02) + body)
    proc.stdin.flush()
    while True:
        msg = msgpack.unpackb(read_packet(proc.stdout))
        if "DataOut" in msg:
            break
    elapsed = time.perf_counter() - start
    proc.stdin.close()
    proc.wait()
    return elapsed


def direct_first_byte() -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/echo", "hi"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    proc.wait()
    return elapsed


def main() -> None:
    resin_path = os.environ.get("LACCA_RESIN") or shutil.which("resin")
    resin = [resin_path] if resin_path else [sys.executable, "-m", "resin_py"]
    resin_first_dataout(resin)  # warm the page cache
    resin_ms = [resin_first_dataout(resin) * 1000 for _ in range(RUNS)]
    direct_ms = [direct_first_byte() * 1000 for _ in range(RUNS)]
    print(
        json.dumps(
            {
                "bench": "v0_first_dataout",
                "unit": "ms",
                "samples": resin_ms,
                "baseline_samples": direct_ms,
                "baseline": "subprocess /bin/echo",
            }
        )
    )


if __name__ == "__main__":
    main()
