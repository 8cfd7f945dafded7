"""What a cgroup per child costs resin's spawner: /bin/true spawned and
reaped in a loop, with no cgroup, with a fresh cgroup each time (mkdir +
rmdir, as before the spares), and through resin's Cgroups with its spares.

    .venv/bin/python bench/resin_cgroup_spawn.py [--runs 300] [--gap-ms 0]

Interleaved per run; prints medians in microseconds per stage, and the CPU
time (resin + child, getrusage) per run, which load on the machine disturbs
less than wall time. `--gap-ms` sleeps between runs (children that do not
start in a row). `--clone` passes cgroup_clone=True (the spawner's hint for
clone3 where it copies resin's memory; where clone3 shares it, x86-64, the
child is created in its cgroup either way). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

from resin_py.runtime.cgroups import Cgroups, _rmdir
from resin_py.spawn import ChildSetup, make_spawner


def cpu_us() -> float:
    self, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return (self.ru_utime + self.ru_stime + kids.ru_utime + kids.ru_stime) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=0.0)
    parser.add_argument("--clone", action="store_true")
    args = parser.parse_args()
    spawner = make_spawner(resource.getrlimit(resource.RLIMIT_NOFILE))
    cgroups = Cgroups.detect()
    if cgroups is None or not cgroups.usable():
        raise SystemExit("no usable cgroup2 hierarchy here")
    devnull = os.open(os.devnull, os.O_RDWR)
    modes = ["none", "fresh", "spares"]
    stages: dict[str, dict[str, list[float]]] = {
        m: {"cgroup": [], "spawn": [], "wait": [], "release": [], "total": []} for m in modes}
    cpu = dict.fromkeys(modes, 0.0)
    serial = 0
    for _ in range(args.runs):
        for mode in modes:
            if args.gap_ms:
                time.sleep(args.gap_ms / 1000)
            serial += 1
            c0, t0 = cpu_us(), time.perf_counter()
            path, fd = (None, -1) if mode == "none" else cgroups.create(serial)
            t1 = time.perf_counter()
            pid = spawner.spawn(ChildSetup(b"/bin/true", [b"true"], None, b"/", devnull,
                                           devnull, devnull, fd, args.clone))
            t2 = time.perf_counter()
            if fd >= 0:
                os.close(fd)
            os.waitpid(pid, 0)
            t3 = time.perf_counter()
            if path is not None:
                if mode == "fresh":
                    _rmdir(path)
                else:
                    cgroups.try_remove(path)
            t4 = time.perf_counter()
            cpu[mode] += cpu_us() - c0
            for name, value in (("cgroup", t1 - t0), ("spawn", t2 - t1), ("wait", t3 - t2),
                                ("release", t4 - t3), ("total", t4 - t0)):
                stages[mode][name].append(value * 1e6)
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[0]}; {args.runs} runs per mode, "
              f"gap {args.gap_ms} ms, cgroup_clone={args.clone}")
    print("| mode | cgroup | spawn (to exec) | wait (to exit) | release | total | CPU |")
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        med = {k: statistics.median(v) for k, v in stages[mode].items()}
        print(f"| {mode} | {med['cgroup']:.0f} | {med['spawn']:.0f} | {med['wait']:.0f} | "
              f"{med['release']:.0f} | {med['total']:.0f} | {cpu[mode] / args.runs:.0f} |")
    for path in getattr(cgroups, "spares", []):  # none before the spares
        _rmdir(path)
    _rmdir(cgroups.base)


if __name__ == "__main__":
    main()
