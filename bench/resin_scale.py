"""Many sleeping children in one v1 resin: spawn rate, memory, descriptors, idle CPU.

    .venv/bin/python bench/resin_scale.py [N ...] [--stdin pipe|null]
        [--stderr capture|stdout|discard]          # default: 1000 10000, null, capture

For each N: start a resin, spawn N `sleep 1000` (by default with `stdin:
null`, as lacca's concurrency benchmark does, and stderr captured) as fast as
resin takes them, then report

- spawn rate: N / (time from the first spawn request to the last `spawned`),
- resin's RSS (VmRSS, VmHWM) and open descriptors with all N running,
- resin's CPU time over an idle window of IDLE seconds (should be 0),
- kill: SIGKILL to every child (a `signal` request each), time until every
  `exit` arrived; with --eof instead: close resin's stdin, time until resin
  has exited (the protocol says within 1 s). Then: how many children are
  still alive without a SIGKILL pending (should be 0), how many are dying
  (killed, the kernel still tearing them down), and the time until none of
  them is in /proc any more (zombies resin had no time to reap go to init).

Nothing is asserted. Prints one line per N, then JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from resin_py.protocol import v1
from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import FALSE, Atom
from resin_py.testing import ResinClient

IDLE = 2.0
WINDOW = 256  # spawn requests in flight


def proc_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return -1


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def kill_pending(pid: int) -> bool:
    """SIGKILL is pending for the process: it is dying (the kernel is tearing it down)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            masks = dict(line.split(":", 1) for line in f if line.startswith(("SigPnd", "ShdPnd")))
    except OSError:
        return True
    return any(int(m, 16) & (1 << (signal.SIGKILL - 1)) for m in masks.values())


def send_control(client: ResinClient, term: object) -> None:
    client.send_packet(b"\x10" + encode_term(term))  # type: ignore[arg-type]


def run(n: int, opts: list[tuple[Atom, Atom]], eof: bool) -> dict[str, object]:
    client = ResinClient(stderr=None)
    client.hello()
    pids: list[int] = []
    errors: list[object] = []
    start = time.perf_counter()
    sent = 0
    while len(pids) + len(errors) < n:
        while sent < n and sent - len(pids) - len(errors) < WINDOW:
            send_control(client, (Atom("spawn"), sent, b"sleep", [b"1000"], opts))
            sent += 1
        frame = client.recv(timeout=60)
        if isinstance(frame, v1.Spawned):
            pids.append(frame.os_pid)
        elif isinstance(frame, v1.SpawnError):
            errors.append(frame.reason)
    spawn_s = time.perf_counter() - start
    rss_kib = proc_field(client.pid, "VmRSS")
    fds = len(os.listdir(f"/proc/{client.pid}/fd"))
    cpu0 = cpu_seconds(client.pid)
    time.sleep(IDLE)  # a benchmark, not a test: the idle window is the point
    idle_cpu = (cpu_seconds(client.pid) - cpu0) / IDLE * 100
    hwm_kib = proc_field(client.pid, "VmHWM")
    start = time.perf_counter()
    if eof:
        client.close_resin_stdin()
        client.proc.wait()  # no timeout: a blocking waitpid, not a polling loop
    else:
        for i in range(n):  # ids that failed to spawn are answered no_process
            send_control(client, (Atom("signal"), i, i, signal.SIGKILL, FALSE))
        exits = 0
        while exits < len(pids):
            if isinstance(client.recv(timeout=60), v1.Exit):
                exits += 1
    kill_s = time.perf_counter() - start
    states = [state(pid) for pid in pids]
    running = [pid for pid, st in zip(pids, states, strict=True) if st not in (None, "Z", "X")]
    alive = sum(not kill_pending(pid) for pid in running)  # not even dying
    remaining = [pid for pid, st in zip(pids, states, strict=True) if st is not None]
    while remaining and time.perf_counter() - start < 30:
        time.sleep(0.001)  # no event for "init reaped it": look again
        remaining = [pid for pid in remaining if state(pid) is not None]
    gone_s = time.perf_counter() - start
    client.close()
    row = {
        "n": n, "spawned": len(pids), "spawn_errors": sorted({repr(e) for e in errors}),
        "spawn_per_s": round(len(pids) / spawn_s), "rss_mib": round(rss_kib / 1024, 1),
        "hwm_mib": round(hwm_kib / 1024, 1), "fds": fds, "idle_cpu_percent": round(idle_cpu, 2),
        "kill_all_s": round(kill_s, 3), "dying_after_kill": len(running) - alive,
        "alive_after_kill": alive,
        "all_gone_s": round(gone_s, 3) if not remaining else None,
    }
    print(f"N={n:6}: spawned {len(pids)} ({len(errors)} errors {row['spawn_errors']}), "
          f"{row['spawn_per_s']} spawns/s, RSS {row['rss_mib']} MiB (peak {row['hwm_mib']}), "
          f"{fds} fds, idle CPU {row['idle_cpu_percent']}%, "
          f"{'stdin EOF to resin exit' if eof else 'kill all'} {row['kill_all_s']} s, "
          f"then {alive} alive ({row['dying_after_kill']} dying), "
          f"all gone after {row['all_gone_s']} s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    ap.add_argument("--stdin", choices=["pipe", "null"], default="null")
    ap.add_argument("--stderr", choices=["capture", "stdout", "discard"], default="capture")
    ap.add_argument("--eof", action="store_true", help="end with stdin EOF, not signals")
    args = ap.parse_args()
    opts = [(Atom("stdin"), Atom(args.stdin)), (Atom("stderr"), Atom(args.stderr))]
    print(f"# stdin: {args.stdin}, stderr: {args.stderr}", file=sys.stderr)
    rows = [run(n, opts, args.eof) for n in args.sizes]
    print(json.dumps({"bench": "resin_scale", "rows": rows}))


if __name__ == "__main__":
    main()
