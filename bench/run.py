"""Run every benchmark, print the table, write bench/results.json and docs/bench.png.

    make bench                      # everything
    .venv/bin/python bench/run.py spawn roundtrip   # only some lacca benchmarks

Each lacca variant is compared with plain Port / System.cmd measured in the
same run; absolute numbers on a 2-core machine are noise, ratios are not.
Nothing here is asserted: goals are reported as met or not.

A benchmark script prints one JSON object per line: bench, variant, unit,
samples, optionally baseline (a variant of the same bench) and load (the
1-minute load average when the figure was taken; stamped here from
/proc/loadavg as the line arrives when the script leaves it out), plus any
extra fields. Scripts in LACCA_SCRIPTS are run with `mix run`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
CHART = ROOT / "docs" / "bench.png"
# Benchmark scripts run with `mix run <script> [bench ...]`.
LACCA_SCRIPTS = ["bench/lacca_bench.exs"]
# Fields of a line that are not extra figures.
FIELDS = {"bench", "variant", "unit", "samples", "baseline", "load"}


@dataclass(frozen=True)
class Goal:
    text: str
    met: Callable[[dict[str, Any]], bool]


def _ratio_le(limit: float) -> Goal:
    return Goal(f"<= {limit}x", lambda row: row["ratio"] is not None and row["ratio"] <= limit)


def _speed_ge(limit: float) -> Goal:
    return Goal(
        f">= {limit}x speed", lambda row: row["ratio"] is not None and row["ratio"] >= limit
    )


# Issue 12's goals. (bench, variant) -> goal
GOALS: dict[tuple[str, str], Goal] = {
    ("throughput", "stream!"): _speed_ge(0.9),
    ("throughput", "messages"): _speed_ge(0.9),
    ("throughput", "run into"): _speed_ge(0.9),
    ("spawn", "Lacca.run shared"): _ratio_le(1.0),
    ("roundtrip", "messages"): _ratio_le(4.0),
    ("concurrency_1000", "Lacca.start"): _ratio_le(1.2),
    ("concurrency_10000", "Lacca.start"): Goal(
        "resin RSS <= 200 MiB, idle CPU ~0%, none left",
        lambda row: row["extra"]["resin_rss_mib"] <= 200
        and row["extra"]["idle_cpu_percent"] < 1.0
        and row["extra"]["left_after_stop"] == 0,
    ),
    # Issue 10: a drop-in starts like a native program.
    ("first_reply", "resin_py v0 (launcher)"): Goal(
        "median <= 12 ms, p99 <= 30 ms",
        lambda row: row["median"] <= 12 and row["p99"] <= 30),
    ("first_reply", "resin_py v1 handshake (launcher)"): Goal(
        "median <= 10 ms", lambda row: row["median"] <= 10),
}


# bench -> goal of every variant that has a baseline (its lacca variants).
BENCH_GOALS: dict[str, Goal] = {
    "slow_consumer": Goal("< 32 MiB", lambda row: row["median"] < 32),
}


# Variants shown for comparison only: the documented unbounded opt-out.
NO_GOAL: set[tuple[str, str]] = {("slow_consumer", "messages active: true")}


def goal_of(bench: str, variant: str, baseline: str | None) -> Goal | None:
    if (bench, variant) in NO_GOAL:
        return None
    goal = GOALS.get((bench, variant))
    if goal is None and baseline is not None:
        goal = BENCH_GOALS.get(bench)
    return goal


def load_average() -> float | None:
    """The 1-minute load average (/proc/loadavg), None where unknown."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def json_lines(cmd: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run a benchmark script; its JSON lines, each with its load average
    (the script's own, else the one when the line arrived)."""
    lines = []
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                row = json.loads(line)
                row.setdefault("load", load_average())
                lines.append(row)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return lines


def run_lacca(names: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ, MIX_ENV="prod")
    subprocess.run(["mix", "compile"], cwd=ROOT, env=env, check=True, stdout=sys.stderr)
    lines = []
    for script in LACCA_SCRIPTS:
        lines += json_lines(["mix", "run", script, *names], env)
    return lines


# bench/cluster_bench.exs (issue 13): local against a peer node, in one run.
CLUSTER = {"cluster", "cluster_spawn", "cluster_throughput"}


def run_cluster(names: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ, MIX_ENV="prod")
    return json_lines(
        ["mix", "run", "bench/cluster_bench.exs", *[n for n in names if n != "cluster"]], env)


def run_v0() -> list[dict[str, Any]]:
    load = load_average()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "resin_v0_latency.py")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    raw = json.loads(proc.stdout)
    return [
        {"bench": raw["bench"], "variant": name, "unit": "ms", "samples": samples,
         "load": load, **({} if name == raw["baseline"] else {"baseline": raw["baseline"]})}
        for name, samples in raw["variants"].items()
    ]


def summarise(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    medians = {(ln["bench"], ln["variant"]): statistics.median(ln["samples"]) for ln in lines}
    rows = []
    for ln in lines:
        median = statistics.median(ln["samples"])
        base = ln.get("baseline")
        ratio = None
        if base is not None and (ln["bench"], base) in medians:
            base_median = medians[(ln["bench"], base)]
            # Throughput is reported as speed relative to the baseline; the
            # rest as cost relative to it.
            speed = ln["bench"].endswith("throughput")
            ratio = base_median / median if speed else median / base_median
        extra = {k: v for k, v in ln.items() if k not in FIELDS}
        row = {
            "bench": ln["bench"],
            "variant": ln["variant"],
            "unit": ln["unit"],
            "n": len(ln["samples"]),
            "median": median,
            "p99": percentile(ln["samples"], 0.99),
            "baseline": base,
            "ratio": ratio,
            "load": ln.get("load"),
            "extra": extra,
        }
        goal = goal_of(ln["bench"], ln["variant"], base)
        row["goal"] = goal.text if goal else None
        row["met"] = goal.met(row) if goal else None
        rows.append(row)
    return rows


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| benchmark | variant | n | median | p99 | baseline | ratio | goal | met | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
        extra = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}"
                          for k, v in r["extra"].items() if k != "bytes")
        variant = r["variant"] + (f" ({extra})" if extra else "")
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        load = "" if r["load"] is None else f"{r['load']:.2f}"
        out.append(
            f"| {r['bench']} | {variant} | {r['n']} | {fmt(r['median'])} {r['unit']} | "
            f"{fmt(r['p99'])} {r['unit']} | {r['baseline'] or ''} | {ratio} | "
            f"{r['goal'] or ''} | {met} | {load} |"
        )
    return "\n".join(out)


def chart(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [r for r in rows if r["ratio"] is not None]
    if not ratios:
        return
    labels = [f"{r['bench']}\n{r['variant']}"
              + ("" if r["load"] is None else f" (load {r['load']:.1f})") for r in ratios]
    values = [r["ratio"] for r in ratios]
    colors = ["#2a9d8f" if r["met"] in (True, None) else "#e76f51" for r in ratios]
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(ratios) + 1.5))
    ax.barh(labels, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, r in enumerate(ratios):
        ax.text(values[i], i, f" {values[i]:.2f}x  (goal {r['goal'] or '-'})", va="center")
    ax.set_xscale("log")
    ax.set_xlabel("ratio to plain Port in the same run "
                  "(throughput: speed, higher is better; others: cost, lower is better)")
    ax.invert_yaxis()
    ax.set_title("lacca + resin_py vs plain Port (1-minute load average in brackets)")
    fig.tight_layout()
    CHART.parent.mkdir(exist_ok=True)
    fig.savefig(CHART, dpi=110)


def main(argv: list[str]) -> None:
    cluster = [a for a in argv if a in CLUSTER]
    rest = [a for a in argv if a not in CLUSTER]
    lines = run_lacca(rest) if rest or not argv else []
    if not argv:
        lines += run_v0()
    if cluster or not argv:
        lines += run_cluster(cluster)
    rows = summarise(lines)
    print(table(rows))
    RESULTS.write_text(
        json.dumps(
            {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "kernel": platform.release()},
             "rows": rows},
            indent=2,
        )
        + "\n"
    )
    chart(rows)
    print(f"\nwrote {RESULTS.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
