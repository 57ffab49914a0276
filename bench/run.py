"""The whole benchmark in one run: every part in its own process, then a summary of every figure with its
target or baseline, and the plots.

    python -m bench.run             # the full run (about 90 minutes; `make bench`)
    python -m bench.run --quick     # every part at a CI size (under 10 minutes; `make bench-quick`)
    python -m bench.run --only throughput lateness
    python -m bench.run --summary-only   # the summary and plots again from the results of earlier runs

Parts: ceilings (the machine's raw rates), throughput (noop and shell, one process and a separate agent),
lateness (1,000 / 10,000 / 100,000 jobs a minute; 1,000 jobs every second), apscheduler (the in-process
baseline), failover (leader kills and graceful hand-overs), api (latency and RSS with 0 / 10,000 / 100,000
jobs), memory (the soak: RSS over 1,000,000 executions). Results: bench/results/<part>[-quick].json and
summary[-quick].json; plots: docs/benchmarks/*.png (full run only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import machine, read_results, write_results

PARTS: dict[str, tuple[str, list[str], list[str]]] = {
    # part: (module, full-run arguments, quick arguments); each writes <file>[-quick].json
    "ceilings": ("bench.ceilings", [], ["--quick"]),
    "throughput": ("bench.throughput", [], ["--quick"]),
    "lateness": ("bench.lateness", [], ["--quick"]),
    "apscheduler": ("bench.apscheduler_baseline", [], ["--quick"]),
    "failover": ("bench.chaos", ["--kills", "20"], ["--quick"]),
    "api": ("bench.api_latency", [], ["--quick"]),
    "memory": ("bench.memory", [], ["--quick"]),
}
FILES = {"failover": "chaos"}
"""Parts whose results file is named otherwise."""

TARGETS = {
    "throughput_noop_per_s": 1000.0,
    "lateness_p99_ms_10000": 50.0,
    "lateness_p99_ms_100000": 250.0,
    "takeover_max_s": 2.0,
    "takeover_median_s": 1.2,
    "api_page_p99_ms": 50.0,
    "rss_mb_100000": 500.0,
}


def results(part: str, quick: bool) -> dict[str, Any] | None:
    return read_results(FILES.get(part, part), quick)


def run_part(part: str, quick: bool) -> dict[str, Any]:
    module, full, fast = PARTS[part]
    command = [sys.executable, "-m", module, *(fast if quick else full)]
    print(f"\n=== {part}: {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    code = subprocess.call(command)
    status = {"part": part, "command": " ".join(["python", *command[1:]]), "exit_code": code}
    status["seconds"] = round(time.monotonic() - began)
    return status


def ratio(measured: float, reference: float) -> float | None:
    """None where the reference is no rate to divide by (a count that must be 0, a baseline of its own)."""
    return round(measured / reference, 3) if reference else None


def figure(name: str, measured: float, unit: str, reference: float, against: str) -> dict[str, Any]:
    return {
        "figure": name,
        "measured": measured,
        "unit": unit,
        "reference": reference,
        "against": against,
        "ratio": ratio(measured, reference),
    }


def throughput_figures(tp: dict[str, Any], ceilings: dict[str, Any] | None) -> list[dict[str, Any]]:
    ops = (ceilings or {}).get("ops_per_second", {})
    out = []
    for row in tp["throughput"]:
        layout = "agent in its own process" if row.get("layout") == "split" else "one process"
        name = f"sustained executions/s, {row['executor']}, {layout}"
        measured = row["sustained_per_s"]
        if row["executor"] == "noop":
            out.append(figure(name, measured, "/s", TARGETS["throughput_noop_per_s"], "target 1,000/s"))
        if ops.get("kv_put_concurrent"):
            out.append(figure(name, measured, "/s", ops["kv_put_concurrent"], "KV put ceiling, 64 in flight"))
        if row["executor"] == "shell" and ops.get("spawn_true_seq"):
            out.append(figure(name, measured, "/s", ops["spawn_true_seq"], "fork/exec ceiling"))
        out += cost_figures(row, tp.get("bare_pipeline"), layout)
        audit = row["audit"]
        out.append(
            figure(
                f"lost / duplicated slots, {row['executor']}",
                audit["lost"] + audit["duplicated"],
                "",
                0,
                "must be 0",
            )
        )
    return out


def cost_figures(row: dict[str, Any], bare: dict[str, Any] | None, layout: str) -> list[dict[str, Any]]:
    """Throughput and cost per execution against the bare pipeline measured in the same run."""
    if not bare:
        return []
    what = f"{row['executor']}, {layout}"
    out = [
        figure(
            f"sustained executions/s, {what}",
            row["sustained_per_s"],
            "/s",
            bare["executions_per_s"],
            "bare pipeline, same run",
        ),
        figure(
            f"best achieved executions/s, {what}",
            row["best_achieved_per_s"],
            "/s",
            bare["executions_per_s"],
            "bare pipeline, same run",
        ),
    ]
    if "node_messages_per_execution" in row:
        out.append(
            figure(
                f"messages per execution through the node, {what}",
                row["node_messages_per_execution"],
                "",
                bare["messages_per_execution"],
                "bare pipeline",
            )
        )
        out.append(
            figure(
                f"node CPU per execution, {what}",
                row["node_cpu_us_per_execution"],
                "µs",
                bare["python_us_per_execution"],
                "bare pipeline's Python",
            )
        )
    return out


def lateness_figures(lat: dict[str, Any], aps: dict[str, Any] | None) -> list[dict[str, Any]]:
    baseline = {(r["mode"], r["jobs"]): r for r in (aps or {}).get("apscheduler", [])}
    out = []
    for row in lat["lateness"]:
        name = f"lateness p99, {row['executor']}, {row['mode']}, {row['jobs']:,} jobs"
        target = {10_000: TARGETS["lateness_p99_ms_10000"], 100_000: TARGETS["lateness_p99_ms_100000"]}
        if row["mode"] == "uniform":
            if row["jobs"] in target:
                out.append(figure(name, row["p99_ms"], "ms", target[row["jobs"]], "target"))
            elif row["jobs"] < 10_000:
                out.append(figure(name, row["p99_ms"], "ms", target[10_000], "target at 10,000 jobs"))
        aps_row = baseline.get((row["mode"], row["jobs"]))
        if aps_row is not None and row["executor"] == "shell":
            out.append(figure(name, row["p99_ms"], "ms", aps_row["p99_ms"], "APScheduler 3 p99"))
        if row.get("p99_vs_spawn_p99"):
            out.append(
                figure(name, row["p99_ms"], "ms", row["p99_ms"] / row["p99_vs_spawn_p99"], "bare spawn p99")
            )
        achieved = f"executions/s, {row['executor']}, {row['mode']}, {row['jobs']:,} jobs"
        out.append(figure(achieved, row["executions_per_s"], "/s", row["offered_per_s"], "offered"))
        if row.get("missed"):
            out.append(
                figure(
                    f"missed slots, {row['executor']}, {row['mode']}, {row['jobs']:,}",
                    row["missed"],
                    "",
                    0,
                    "in the measured window",
                )
            )
    return out


def summary_figures(quick: bool) -> list[dict[str, Any]]:
    """Every headline figure with its target or baseline and the ratio (measured / reference)."""
    ceilings = results("ceilings", quick)
    sections: list[tuple[str, Callable[[dict[str, Any]], list[dict[str, Any]]]]] = [
        ("throughput", lambda d: throughput_figures(d, ceilings)),
        ("lateness", lambda d: lateness_figures(d, results("apscheduler", quick))),
        ("apscheduler", apscheduler_figures),
        ("failover", failover_figures),
        ("api", api_figures),
        ("memory", memory_figures),
    ]
    out = []
    for part, make in sections:
        data = results(part, quick)
        if data is not None:
            out.extend(make(data))
    return out


def apscheduler_figures(aps: dict[str, Any]) -> list[dict[str, Any]]:
    tp = aps.get("throughput")
    if not tp:
        return []
    return [
        figure(
            "APScheduler 3 sustained no-op executions/s",
            tp["sustained_per_s"],
            "/s",
            0,
            "the in-process baseline",
        )
    ]


def failover_figures(chaos: dict[str, Any]) -> list[dict[str, Any]]:
    take = chaos["takeover_s"]
    kills = chaos["kills"]
    return [
        figure(f"takeover max over {kills} kills", take["max"], "s", TARGETS["takeover_max_s"], "target"),
        figure("takeover median", take["p50"], "s", TARGETS["takeover_median_s"], "target"),
        figure("kills taken over within TTL + 1 s", chaos["within_ttl_plus_1s"], "", kills, "all kills"),
        figure(
            "graceful hand-over max",
            chaos["graceful_handover_s"]["max"],
            "s",
            TARGETS["takeover_max_s"],
            "takeover target",
        ),
    ]


def api_figures(api: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in api["sizes"]:
        jobs = row["jobs"]
        out.append(
            figure(
                f"server RSS, {jobs:,} jobs",
                row["server_rss_mb"],
                "MB",
                TARGETS["rss_mb_100000"],
                "target at 100,000 jobs",
            )
        )
        out.append(
            figure(
                f"agent RSS, {jobs:,} jobs",
                row["agent_rss_mb"],
                "MB",
                TARGETS["rss_mb_100000"],
                "target at 100,000 jobs",
            )
        )
        for request, stats in row.get("latency", {}).items():
            out.append(
                figure(
                    f"API {request} p99, {jobs:,} jobs",
                    stats["p99_ms"],
                    "ms",
                    TARGETS["api_page_p99_ms"],
                    "page target",
                )
            )
    return out


def memory_figures(mem: dict[str, Any]) -> list[dict[str, Any]]:
    soak = mem["soak"]
    out = []
    for process in ("server_rss_mb", "nats_rss_mb"):
        stats = soak[process]
        out.append(
            figure(
                f"{process} after {soak['executions']:,} executions",
                stats["at_end"],
                "MB",
                stats["at_10pct"],
                "RSS at 10% of the soak",
            )
        )
    return out


def print_summary(figures: list[dict[str, Any]]) -> None:
    print("\n=== summary (ratio = measured / reference)")
    for f in figures:
        measured = f"{f['figure']:<58} {f['measured']:>10,} {f['unit']:<3}"
        if f["ratio"] is None:
            print(f"{measured} ({f['against']})")
        else:
            print(f"{measured} vs {f['reference']:>10,.1f} ({f['against']}): {f['ratio']}x")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="every part at a CI size (under 10 minutes)")
    parser.add_argument("--only", nargs="*", choices=sorted(PARTS), default=None)
    parser.add_argument(
        "--summary-only", action="store_true", help="no measuring: the summary and plots from bench/results"
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    parts = [] if args.summary_only else (args.only or list(PARTS))
    statuses = [run_part(part, args.quick) for part in parts]
    figures = summary_figures(args.quick)
    print_summary(figures)
    failed = [s["part"] for s in statuses if s["exit_code"] != 0]
    out = {
        "machine": machine(),
        "quick": args.quick,
        "remade_from_stored_results": args.summary_only,
        "seconds": round(time.monotonic() - began),
        "parts": statuses,
        "failed": failed,
        "figures": figures,
    }
    write_results("summary", args.quick, out)
    if not args.quick:
        from bench.plots import plot_all  # matplotlib only for the full run's documentation

        print("plots:", ", ".join(str(p) for p in plot_all(Path("docs/benchmarks"))))
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
    print(f"done in {out['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
