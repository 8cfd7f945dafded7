"""Run every benchmark, print the table, write bench/results.json and docs/bench.png.

    make bench                      # everything
    .venv/bin/python bench/run.py spawn roundtrip   # only some lacca benchmarks

Each lacca variant is compared with plain Port / System.cmd measured in the
same run; absolute numbers on a 2-core machine are noise, ratios are not.
Nothing here is asserted: goals are reported as met or not.
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


# (bench, variant) -> goal
GOALS: dict[tuple[str, str], Goal] = {
    ("throughput", "stream!"): _speed_ge(0.7),
    ("throughput", "messages"): _speed_ge(0.7),
    ("spawn", "Lacca.run shared"): _ratio_le(1.0),
    ("roundtrip", "messages"): _ratio_le(10.0),
    ("concurrency_1000", "Lacca.start"): _ratio_le(1.2),
    ("concurrency_10000", "Lacca.start"): Goal(
        "resin RSS <= 200 MiB, idle CPU ~0%, none left",
        lambda row: row["extra"]["resin_rss_mib"] <= 200
        and row["extra"]["idle_cpu_percent"] < 1.0
        and row["extra"]["left_after_stop"] == 0,
    ),
    ("slow_consumer", "stream!"): Goal("< 32 MiB", lambda row: row["median"] < 32),
    # Issue 10: a drop-in starts like a native program.
    ("first_reply", "resin_py v0 (launcher)"): Goal(
        "median <= 12 ms, p99 <= 30 ms",
        lambda row: row["median"] <= 12 and row["p99"] <= 30),
    ("first_reply", "resin_py v1 handshake (launcher)"): Goal(
        "median <= 10 ms", lambda row: row["median"] <= 10),
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_lacca(names: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ, MIX_ENV="prod")
    subprocess.run(["mix", "compile"], cwd=ROOT, env=env, check=True, stdout=sys.stderr)
    proc = subprocess.run(
        ["mix", "run", "bench/lacca_bench.exs", *names],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# bench/cluster_bench.exs (issue 13): local against a peer node, in one run.
CLUSTER = {"cluster", "cluster_spawn", "cluster_throughput"}


def run_cluster(names: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ, MIX_ENV="prod")
    proc = subprocess.run(
        ["mix", "run", "bench/cluster_bench.exs", *[n for n in names if n != "cluster"]],
        cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def run_v0() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "resin_v0_latency.py")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    raw = json.loads(proc.stdout)
    return [
        {"bench": raw["bench"], "variant": name, "unit": "ms", "samples": samples,
         **({} if name == raw["baseline"] else {"baseline": raw["baseline"]})}
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
        extra = {
            k: v
            for k, v in ln.items()
            if k not in {"bench", "variant", "unit", "samples", "baseline"}
        }
        row = {
            "bench": ln["bench"],
            "variant": ln["variant"],
            "unit": ln["unit"],
            "n": len(ln["samples"]),
            "median": median,
            "p99": percentile(ln["samples"], 0.99),
            "baseline": base,
            "ratio": ratio,
            "extra": extra,
        }
        goal = GOALS.get((ln["bench"], ln["variant"]))
        row["goal"] = goal.text if goal else None
        row["met"] = goal.met(row) if goal else None
        rows.append(row)
    return rows


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| benchmark | variant | n | median | p99 | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
        extra = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}"
                          for k, v in r["extra"].items() if k != "bytes")
        variant = r["variant"] + (f" ({extra})" if extra else "")
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        out.append(
            f"| {r['bench']} | {variant} | {r['n']} | {fmt(r['median'])} {r['unit']} | "
            f"{fmt(r['p99'])} {r['unit']} | {r['baseline'] or ''} | {ratio} | "
            f"{r['goal'] or ''} | {met} |"
        )
    return "\n".join(out)


def chart(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [r for r in rows if r["ratio"] is not None]
    if not ratios:
        return
    labels = [f"{r['bench']}\n{r['variant']}" for r in ratios]
    values = [r["ratio"] for r in ratios]
    colors = ["#2a9d8f" if r["met"] in (True, None) else "#e76f51" for r in ratios]
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(ratios) + 1.5))
    ax.barh(labels, values, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, r in enumerate(ratios):
        ax.text(values[i], i, f" {values[i]:.2f}x  (goal {r['goal'] or '-'})", va="center")
    ax.set_xscale("log")
    ax.set_xlabel("ratio to plain Port / System.cmd in the same run "
                  "(throughput: speed, higher is better; others: cost, lower is better)")
    ax.invert_yaxis()
    ax.set_title("lacca + resin_py vs plain Port / System.cmd")
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
