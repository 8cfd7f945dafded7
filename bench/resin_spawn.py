"""Spawn + exit cost of resin_py, against plain OS baselines measured in the same run.

    .venv/bin/python bench/resin_spawn.py [--runs 2000] [--spawner c|python]

Prints one line per variant (median, p90 in microseconds), then the same as JSON:

- `fork+_exit`, `posix_spawn /bin/true`, `subprocess.run /bin/true`: baselines.
- `Spawner.spawn /bin/true`: resin's spawner alone (+ waitpid), no protocol.
- `resin run raw`: one v1 `run` of `/bin/true` through a resin: the spawn
  request, `spawned`, `exit`, parsed with a minimal reader, so this is
  resin's cost and not the test client's; also resin's CPU time per run.
- `ResinClient.run`: the same through the test client (decodes every frame).

The spawner is chosen as resin chooses it (`RESIN_SPAWNER` overrides).
Nothing is asserted.
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
from collections.abc import Callable

from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import Atom
from resin_py.testing import ResinClient

RESIN = [sys.executable, "-m", "resin_py"]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    for _ in range(min(50, runs)):  # warm up
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def fork_exit() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def posix_spawn_true() -> None:
    pid = os.posix_spawn("/bin/true", ["true"], os.environ)
    os.waitpid(pid, 0)


def subprocess_true() -> None:
    subprocess.run(["/bin/true"], check=False)


def spawner_true() -> Callable[[], None]:
    import resource

    from resin_py.spawn import ChildSetup, make_spawner

    spawner = make_spawner(resource.getrlimit(resource.RLIMIT_NOFILE))
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    setup = ChildSetup(b"/bin/true", [b"true"], None, None, devnull, devnull, devnull)
    print(f"# spawner: {type(spawner).__name__}", file=sys.stderr)

    def run() -> None:
        pid = spawner.spawn(setup)
        os.waitpid(pid, 0)

    return run


class PacketPipe:
    """{packet,2} packets read from resin's stdout (`r`), blocking."""

    r: int
    buf: bytes

    def packet(self) -> bytes:
        while True:
            if len(self.buf) >= 2:
                n = (self.buf[0] << 8) | self.buf[1]
                if len(self.buf) >= 2 + n:
                    p, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
                    return p
            select.select([self.r], [], [])
            chunk = os.read(self.r, 65536)
            if not chunk:
                raise EOFError
            self.buf += chunk


class RawV1(PacketPipe):
    """Just enough of v1 to run `/bin/true` repeatedly: fixed bytes out, a tiny parser in."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(RESIN, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.w = self.proc.stdin.fileno()
        self.r = self.proc.stdout.fileno()
        self.buf = b""
        os.write(self.w, b"\x00\x02\x00\x01")
        if self.packet() != b"\x01\x01":
            raise RuntimeError("no handshake reply")
        self.id = 0

    def run_true(self) -> None:
        self.id += 1
        term = (Atom("spawn"), self.id, b"/bin/true", [], [(Atom("stdin"), Atom("null"))])
        payload = b"\x10" + encode_term(term)
        os.write(self.w, struct.pack(">H", len(payload)) + payload)
        events = 0
        while events < 2:  # spawned, then exit (no output from /bin/true)
            p = self.packet()
            if p[0] == 0x20:
                events += 1

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def client_run() -> tuple[Callable[[], None], Callable[[], None]]:
    client = ResinClient(RESIN)
    client.hello()
    ids = iter(range(1, 1 << 30))

    def run() -> None:
        client.run(next(ids), "/bin/true")

    return run, client.kill


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(name: str, samples: list[float]) -> dict[str, object]:
    us = sorted(s * 1e6 for s in samples)
    row = {"variant": name, "runs": len(us), "median_us": round(statistics.median(us), 1),
           "p90_us": round(us[int(len(us) * 0.9)], 1)}
    print(f"{name:32} median {row['median_us']:8.1f} us   p90 {row['p90_us']:8.1f} us")
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--spawner", choices=["c", "python"])
    args = ap.parse_args()
    if args.spawner:
        os.environ["RESIN_SPAWNER"] = args.spawner
    rows = [
        stats("fork+_exit", timed(fork_exit, args.runs)),
        stats("posix_spawn /bin/true", timed(posix_spawn_true, args.runs)),
        stats("subprocess.run /bin/true", timed(subprocess_true, args.runs)),
    ]
    try:
        rows.append(stats("Spawner.spawn /bin/true", timed(spawner_true(), args.runs)))
    except ImportError as exc:  # an older resin_py without make_spawner
        print(f"# Spawner.spawn skipped: {exc}", file=sys.stderr)
    raw = RawV1()
    raw_samples = timed(raw.run_true, 50)  # warm-up, then count resin's CPU time
    cpu0 = cpu_seconds(raw.proc.pid)
    raw_samples = timed(raw.run_true, args.runs)
    cpu_us = (cpu_seconds(raw.proc.pid) - cpu0) / (args.runs + 50) * 1e6
    row = stats("resin run raw", raw_samples)
    row["resin_cpu_us_per_run"] = round(cpu_us, 1)
    print(f"{'':32} resin CPU {cpu_us:.0f} us per run")
    rows.append(row)
    raw.close()
    run, close = client_run()
    rows.append(stats("ResinClient.run", timed(run, args.runs)))
    close()
    print(json.dumps({"bench": "resin_spawn", "rows": rows}))


if __name__ == "__main__":
    main()
