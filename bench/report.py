"""Markdown tables of the benchmark results (bench/results/*.json), as docs/benchmarks.md shows them.

python -m bench.report            # the full run's results
python -m bench.report --quick    # the quick run's
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from bench.common import read_results


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary(data: dict[str, Any]) -> str:
    rows = [
        [
            f["figure"],
            f"{_cell(f['measured'])} {f['unit']}",
            f["against"] if f["ratio"] is None else f"{_cell(f['reference'])} ({f['against']})",
            "" if f["ratio"] is None else f"{f['ratio']}x",
        ]
        for f in data["figures"]
    ]
    return table(["Figure", "Measured", "Reference", "Ratio"], rows)


def ceilings(data: dict[str, Any]) -> str:
    out = table(["Operation", "ops/s"], [[k, v] for k, v in data["ops_per_second"].items()])
    if "bare_pipeline" in data:
        out += "\n\n" + bare_pipeline(data["bare_pipeline"])
    return out


def bare_pipeline(figures: dict[str, Any]) -> str:
    """The bare pipeline's rate, cost per execution and audit."""
    return table(["Bare pipeline", "Measured"], [[k.replace("_", " "), v] for k, v in figures.items()])


def throughput(data: dict[str, Any]) -> str:
    rows = [
        [
            run["executor"],
            run.get("layout", "one"),
            step["offered_per_s"],
            step["executions_per_s"],
            step["missed"],
            step["p50_ms"],
            step["p99_ms"],
            step["max_ms"],
            step.get("node_messages_per_execution", ""),
            step.get("node_cpu_us_per_execution", ""),
            step.get("nats_server_cpu_us_per_execution", ""),
            "yes" if step["sustained"] else "no",
        ]
        for run in data["throughput"]
        for step in run["steps"]
    ]
    audits = [
        [
            r["executor"],
            r.get("layout", "one"),
            r["sustained_per_s"],
            r["audit"]["records"],
            r["audit"]["lost"],
            r["audit"]["duplicated"],
            r["audit"]["counted_by_leader"],
            r["audit"]["finished_events"],
            r.get("achieved_vs_bare_pipeline", ""),
        ]
        for r in data["throughput"]
    ]
    return (
        table(
            [
                "Executor",
                "Layout",
                "Offered/s",
                "Achieved/s",
                "Missed",
                "p50 ms",
                "p99 ms",
                "max ms",
                "Node msgs/exec",
                "Node CPU µs/exec",
                "nats-server CPU µs/exec",
                "Sustained",
            ],
            rows,
        )
        + "\n\n"
        + table(
            [
                "Executor",
                "Layout",
                "Sustained/s",
                "Slots audited",
                "Lost",
                "Duplicated",
                "Leader's counters",
                "Finished events",
                "Best achieved / bare pipeline",
            ],
            audits,
        )
        + ("\n\n" + bare_pipeline(data["bare_pipeline"]) if "bare_pipeline" in data else "")
    )


def lateness(data: dict[str, Any]) -> str:
    rows = [
        [
            r["executor"],
            r["mode"],
            r["jobs"],
            r["offered_per_s"],
            r["executions_per_s"],
            r["missed"],
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["server_rss_mb"],
        ]
        for r in data["lateness"]
    ]
    return table(
        [
            "Executor",
            "Load",
            "Jobs",
            "Offered/s",
            "Achieved/s",
            "Missed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "Server RSS MB",
        ],
        rows,
    )


def apscheduler(data: dict[str, Any]) -> str:
    rows = [
        [r["mode"], r["jobs"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["process_rss_mb"]]
        for r in data["apscheduler"]
    ]
    out = table(["Load", "Jobs", "p50 ms", "p99 ms", "max ms", "RSS MB"], rows) if rows else ""
    tp = data.get("throughput")
    if tp:
        steps = [
            [s["offered_per_s"], s["executions_per_s"], s["missed"], s["p50_ms"], s["p99_ms"]]
            for s in tp["steps"]
        ]
        out += "\n\n" + table(["Offered/s (no-op)", "Achieved/s", "Missed", "p50 ms", "p99 ms"], steps)
    return out


def failover(data: dict[str, Any]) -> str:
    take, hand = data["takeover_s"], data["graceful_handover_s"]
    rows = [
        [
            "Leader kills"
            if data.get("partitions", 1) == 1
            else f"Kills of a partition's owner ({data['partitions']} partitions)",
            data["kills"],
        ],
        [
            "Takeover, kill to the next fire",
            f"min {take['min']} s, median {take['p50']} s, max {take['max']} s",
        ],
        [
            f"Within TTL + 1 s ({data['lease_ttl_s'] + 1:g} s)",
            f"{data['within_ttl_plus_1s']} / {data['kills']}",
        ],
        ["Graceful hand-over", f"median {hand['p50']} s, max {hand['max']} s ({hand['rounds']} rounds)"],
        ["Audit", data["audit"]],
        ["All takeovers (s)", ", ".join(str(t) for t in take["all"])],
    ]
    return table(["Measure", "Result"], rows)


def api(data: dict[str, Any]) -> str:
    rss = [[r["jobs"], r["server_rss_mb"], r["agent_rss_mb"], r["seed_seconds"]] for r in data["sizes"]]
    out = table(["Jobs stored", "Server RSS MB", "Agent RSS MB", "Seconds to create them"], rss)
    rows = []
    for r in data["sizes"]:
        for name, s in r.get("latency", {}).items():
            rows.append([r["jobs"], name, s["p50_ms"], s["p99_ms"], s["max_ms"]])
    return out + "\n\n" + table(["Jobs", "Request", "p50 ms", "p99 ms", "max ms"], rows)


def memory(data: dict[str, Any]) -> str:
    soak = data["soak"]
    rows = []
    for process in ("server_rss_mb", "nats_rss_mb"):
        s = soak[process]
        rows.append(
            [
                process.removesuffix("_rss_mb"),
                s["at_10pct"],
                s["at_50pct"],
                s["at_end"],
                s["growth_mb"],
                "yes" if s["flat"] else "no",
            ]
        )
    head = f"{soak['executions']:,} executions in {soak['seconds']:,} s ({soak['rate']}/s offered)\n\n"
    return head + table(["Process", "RSS at 10% (MB)", "at 50%", "at the end", "Growth MB", "Flat"], rows)


def scaling(data: dict[str, Any]) -> str:
    """Each layout's capacity and ratio, then each server's share of the decisions at every step."""
    ratios = data["ratio_to_one_server"]
    rows = [
        [
            layout["servers"],
            layout["capacity_per_s"],
            f"{ratios[str(layout['servers'])]}x",
            f"{layout['audit']['lost']} lost, {layout['audit']['duplicated']} duplicated",
        ]
        for layout in data["layouts"]
    ]
    head = table(["Servers", "Capacity (executions/s)", "Against one", "Audit"], rows)
    shares = []
    for layout in data["layouts"]:
        for step in layout["steps"]:
            before_the_knee = step["offered_per_s"] <= layout["capacity_per_s"]
            if layout["servers"] > 1 and step["sustained"] and before_the_knee:
                split = ", ".join(
                    f"{name} {s['of_even_share']:.2f} ({s['cpu_cores']:.2f} cores)"
                    for name, s in sorted(step["servers"].items())
                )
                shares.append([layout["servers"], step["offered_per_s"], split])
    return head + "\n\n" + table(["Servers", "Offered/s", "Decisions against an even share (CPU)"], shares)


SECTIONS = {
    "summary": summary,
    "ceilings": ceilings,
    "throughput": throughput,
    "lateness": lateness,
    "apscheduler": apscheduler,
    "chaos": failover,
    "chaos-partitions": failover,
    "scaling": scaling,
    "api": api,
    "memory": memory,
}


def fill(doc: Path, quick: bool) -> None:
    """Replace every `<!-- bench:NAME -->...<!-- /bench:NAME -->` block of `doc` with NAME's table."""
    text = doc.read_text()
    for name, render in SECTIONS.items():
        data = read_results(name, quick)
        if data is None:
            continue
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(f"{start}\n{render(data)}\n{end}".replace("\\", "\\\\"), text)
    doc.write_text(text)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fill", type=Path, help="write the tables into this document's bench markers")
    args = parser.parse_args(argv)
    if args.fill:
        fill(args.fill, args.quick)
        return
    for name, render in SECTIONS.items():
        data = read_results(name, args.quick)
        if data is not None:
            print(f"### {name}\n\n{render(data)}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
