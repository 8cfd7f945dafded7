"""`sleep`s started one after another and held, over bare ports to resins:
request to `spawned`, and resin's CPU per spawn, resins interleaved.

    .venv/bin/python bench/resin_held_spawn.py N RESIN [RESIN ...]

Each RESIN is an executable (a launcher such as .venv/bin/resind); a name
ending in `:nocg` runs that resin with RESIN_CGROUPS=0 (process-tree
containment). For before/after comparisons of resin alone (issue 12: the
start of 1,000 sleeps). Nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import time

from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import Atom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resin_spawn  # its raw v1 client (bench/ is not a package)


def start(spec: str) -> resin_spawn.RawV1:
    path, _, mode = spec.partition(":")
    resin_spawn.RESIN[:] = [path]
    saved = os.environ.get("RESIN_CGROUPS")
    if mode == "nocg":
        os.environ["RESIN_CGROUPS"] = "0"
    try:
        return resin_spawn.RawV1()
    finally:
        if saved is None:
            os.environ.pop("RESIN_CGROUPS", None)
        else:
            os.environ["RESIN_CGROUPS"] = saved


def spawn_sleep(resin: resin_spawn.RawV1) -> float:
    """One `sleep 1000` (stdin null): seconds from the request to `spawned`."""
    resin.id += 1
    term = (Atom("spawn"), resin.id, b"/bin/sleep", [b"1000"], [(Atom("stdin"), Atom("null"))])
    payload = b"\x10" + encode_term(term)
    t = time.perf_counter()
    os.write(resin.w, struct.pack(">H", len(payload)) + payload)
    while resin.packet()[0] != 0x20:  # the first event: spawned
        pass
    return time.perf_counter() - t


def main(argv: list[str]) -> None:
    n, specs = int(argv[0]), argv[1:]
    resins = {spec: start(spec) for spec in specs}
    cpu0 = {spec: resin_spawn.cpu_seconds(r.proc.pid) for spec, r in resins.items()}
    samples: dict[str, list[float]] = {spec: [] for spec in specs}
    for _ in range(n):
        for spec, resin in resins.items():
            samples[spec].append(spawn_sleep(resin))
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[0]}; {n} sleeps held per resin")
    for spec, resin in resins.items():
        cpu = (resin_spawn.cpu_seconds(resin.proc.pid) - cpu0[spec]) / n * 1e6
        print(f"{spec}: request to spawned, median {statistics.median(samples[spec]) * 1e6:,.0f}"
              f" us; resin CPU {cpu:,.0f} us per spawn")
        resin.close()


if __name__ == "__main__":
    main(sys.argv[1:])
