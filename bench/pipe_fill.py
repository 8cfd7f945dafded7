"""Where a throughput transfer stalls: how full the pipes are, sampled.

    .venv/bin/python bench/pipe_fill.py --transfers 6 &
    MIX_ENV=prod mix run bench/lacca_bench.exs throughput

Watches for `head ... /dev/zero` processes (the throughput benchmark's child).
For each one, every ~1 ms, FIONREAD on the child's stdout pipe and, when its
parent is resin, on resin's stdout (the port's pipe), both opened read-only
through /proc without reading from them. Prints one JSON line per transfer:
the share of samples in which each pipe was empty, partly full or full, and
how often "child's pipe full while resin's stdout is empty" (head blocked,
the BEAM starved: resin is the stall). Diagnostic only, not part of
bench/run.py; the sampling itself costs a few % of one core.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import json
import os
import termios
import time
from collections import Counter

# Sampling period: fine enough to see a 64 KiB frame come and go at ~1 GB/s
# (~65 µs) only statistically, coarse enough to cost little CPU.
PERIOD = 0.001
# Slack under a pipe's capacity that still counts as full: the writer's
# next write (head writes 8 KiB) would block.
FULL_SLACK = 16 * 1024
BUCKETS = ("empty", "<256K", "<full", "full")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _is_transfer(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return bool(args) and os.path.basename(args[0]) == b"head" and b"/dev/zero" in args


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _fill(fd: int, buf: array.array[int]) -> int:
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


def _bucket(n: int, capacity: int) -> str:
    if n == 0:
        return "empty"
    if n < 256 * 1024:
        return "<256K"
    return "full" if n >= capacity - FULL_SLACK else "<full"


def _capacity(fd: int) -> int:
    return fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ


def sample(pid: int) -> dict[str, object] | None:
    """Sample one transfer's pipes until `pid` exits."""
    parent = _ppid(pid)
    via_resin = _comm(parent) not in ("erl_child_setup", "beam.smp")
    try:
        child_fd = os.open(f"/proc/{pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK)
        out_fd = (os.open(f"/proc/{parent}/fd/1", os.O_RDONLY | os.O_NONBLOCK)
                  if via_resin else None)
    except OSError:
        return None
    buf = array.array("i", [0])
    child: Counter[str] = Counter()
    out: Counter[str] = Counter()
    stalls = n = 0
    start = time.monotonic()
    try:
        while _is_transfer(pid):
            try:
                a = _fill(child_fd, buf)
                child_cap = _capacity(child_fd)
                b = _fill(out_fd, buf) if out_fd is not None else None
                out_cap = _capacity(out_fd) if out_fd is not None else 0
            except OSError:
                break
            n += 1
            child[_bucket(a, child_cap)] += 1
            if b is not None:
                out[_bucket(b, out_cap)] += 1
                stalls += a >= child_cap - FULL_SLACK and b == 0
            time.sleep(PERIOD)
    finally:
        os.close(child_fd)
        if out_fd is not None:
            os.close(out_fd)
    if not n:
        return None
    result: dict[str, object] = {
        "via_resin": via_resin,
        "wall_s": round(time.monotonic() - start, 3),
        "samples": n,
        "child_pipe": {k: round(100 * child[k] / n, 1) for k in BUCKETS},
    }
    if via_resin:
        result["resin_stdout"] = {k: round(100 * out[k] / n, 1) for k in BUCKETS}
        result["child_full_stdout_empty"] = round(100 * stalls / n, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=6, help="stop after this many")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many s")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    seen: set[int] = set()
    while len(seen) < args.transfers and time.monotonic() < deadline:
        pids = [int(p) for p in os.listdir("/proc")
                if p.isdigit() and int(p) not in seen and _is_transfer(int(p))]
        if not pids:
            time.sleep(0.005)
            continue
        seen.add(pids[0])
        try:
            result = sample(pids[0])
        except OSError:
            result = None
        if result is not None:
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
