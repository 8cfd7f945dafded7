"""Where one `Lacca.run("true", [])` goes inside resin, over a bare pipe:
request to `spawned`, `spawned` to `exit`, and resin's CPU per run, for
several resins interleaved run by run (before/after comparisons).

    .venv/bin/python bench/resin_spawn_stages.py [--runs 2000] RESIN [RESIN ...]

Each RESIN is an executable (a launcher such as .venv/bin/resind); a name
ending in `:nocg` runs it with RESIN_CGROUPS=0, `:py` with
RESIN_SPAWNER=python. The request is the one lacca sends for a run without
options: `/bin/true`, `cd` (this directory), `stdin: null`, a credit.
resin's CPU is read from /proc/<pid>/stat (clock ticks): only the sum over
many runs means anything. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import time

from resin_spawn import PacketPipe  # bench/ is the script's directory

from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import Atom

CREDIT = 1_048_576  # lacca's default window
WARMUP = 50


class Bare(PacketPipe):
    """One resin over pipes: the v1 hello, then spawns of /bin/true."""

    def __init__(self, spec: str) -> None:
        path, _, mode = spec.partition(":")
        env = dict(os.environ)
        if mode == "nocg":
            env["RESIN_CGROUPS"] = "0"
        elif mode == "py":
            env["RESIN_SPAWNER"] = "python"
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.w, self.r = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.buf = b""
        os.write(self.w, b"\x00\x02\x00\x01")
        if self.packet() != b"\x01\x01":
            raise RuntimeError(f"{spec}: no handshake reply")
        self.id = 0
        self.cwd = os.getcwd().encode()

    def run_true(self) -> tuple[float, float]:
        """(request -> spawned, spawned -> exit) in seconds."""
        self.id += 1
        opts = [(Atom("cd"), self.cwd), (Atom("stdin"), Atom("null")),
                (Atom("credit"), CREDIT)]
        payload = b"\x10" + encode_term((Atom("spawn"), self.id, b"/bin/true", [], opts))
        t0 = time.perf_counter()
        os.write(self.w, struct.pack(">H", len(payload)) + payload)
        times = []
        while len(times) < 2:  # spawned, then exit (/bin/true writes nothing)
            p = self.packet()
            if p[0] == 0x20:
                times.append(time.perf_counter())
            else:
                raise RuntimeError(f"unexpected frame {p[:16]!r}")
        return times[0] - t0, times[1] - times[0]

    def cpu_us(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("resins", nargs="+")
    args = ap.parse_args()
    bares = {spec: Bare(spec) for spec in args.resins}
    for bare in bares.values():
        for _ in range(WARMUP):
            bare.run_true()
    cpu0 = {spec: b.cpu_us() for spec, b in bares.items()}
    samples: dict[str, list[tuple[float, float]]] = {spec: [] for spec in bares}
    for _ in range(args.runs):
        for spec, bare in bares.items():
            samples[spec].append(bare.run_true())
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"load average {load}; {args.runs} runs of /bin/true per resin, interleaved; "
          "medians (p90) in us")
    for spec, bare in bares.items():
        cpu = (bare.cpu_us() - cpu0[spec]) / args.runs
        a = sorted(s[0] * 1e6 for s in samples[spec])
        b = sorted(s[1] * 1e6 for s in samples[spec])
        t = sorted((s[0] + s[1]) * 1e6 for s in samples[spec])
        p90 = int(len(a) * 0.9)
        print(f"{spec}: request->spawned {statistics.median(a):,.0f} ({a[p90]:,.0f}); "
              f"spawned->exit {statistics.median(b):,.0f} ({b[p90]:,.0f}); "
              f"total {statistics.median(t):,.0f} ({t[p90]:,.0f}); resin CPU {cpu:,.0f} us/run")
        bare.close()


if __name__ == "__main__":
    main()
