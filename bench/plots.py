"""The plots of docs/benchmarks.md, drawn from bench/results/*.json (a missing result skips its plot).

python -m bench.plots        # writes docs/benchmarks/*.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from bench.common import read_results

OUT = Path("docs/benchmarks")


def load(name: str) -> dict[str, Any] | None:
    return read_results(name, quick=False)  # the plots are of the full run


def throughput_vs_ceilings(out: Path) -> Path | None:
    tp, ceilings, aps = (
        load("throughput"),
        load("ceilings"),
        load("apscheduler"),
    )
    if tp is None or ceilings is None:
        return None
    bars = [
        (f"dkron-nats {r['executor']}\n({r.get('layout', 'one')})", r["sustained_per_s"], "tab:blue")
        for r in tp["throughput"]
    ]
    if aps and aps.get("throughput"):
        bars.append(("APScheduler 3\nno-op, in-process", aps["throughput"]["sustained_per_s"], "tab:orange"))
    names = {
        "kv_put_seq": "KV put\n1 at a time",
        "kv_put_concurrent": "KV put\n64 in flight",
        "js_publish_concurrent": "JS publish\n64 in flight",
        "request_reply_seq": "request-reply\n1 at a time",
        "spawn_true_seq": "fork/exec\n/bin/true",
    }
    ops = ceilings["ops_per_second"]
    bars += [(label, ops[key], "tab:gray") for key, label in names.items() if key in ops]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_yscale("log")
    ax.set_ylabel("operations or executions per second (log)")
    ax.axhline(1000, color="tab:red", linestyle="--", linewidth=1, label="target: 1,000 executions/s")
    ax.set_title("Sustained executions per second (blue) against the machine's raw ceilings (gray)")
    ax.legend(loc="upper left")
    ax.tick_params(axis="x", labelsize=7)
    return save(fig, out / "throughput.png")


def throughput_steps(out: Path) -> Path | None:
    tp = load("throughput")
    if tp is None:
        return None
    fig, (rate_ax, late_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for row in tp["throughput"]:
        label = f"{row['executor']} ({row.get('layout', 'one')})"
        offered = [s["offered_per_s"] for s in row["steps"]]
        rate_ax.plot(offered, [s["executions_per_s"] for s in row["steps"]], marker="o", label=label)
        late_ax.plot(offered, [s["p99_ms"] for s in row["steps"]], marker="o", label=label)
    top = max(s["offered_per_s"] for r in tp["throughput"] for s in r["steps"])
    rate_ax.plot([0, top], [0, top], color="gray", linestyle=":", label="offered = achieved")
    rate_ax.set_xlabel("offered executions/s")
    rate_ax.set_ylabel("achieved executions/s")
    rate_ax.legend(fontsize=8)
    late_ax.set_xlabel("offered executions/s")
    late_ax.set_ylabel("lateness p99 (ms)")
    late_ax.set_yscale("log")
    late_ax.legend(fontsize=8)
    fig.suptitle("Throughput steps: achieved rate and lateness as the offered load rises")
    return save(fig, out / "throughput-steps.png")


def lateness(out: Path) -> Path | None:
    lat, aps = load("lateness"), load("apscheduler")
    if lat is None:
        return None
    rows = [
        (f"{r.get('executor', 'shell')}\n{r['mode']}\n{r['jobs']:,}", r, "tab:blue") for r in lat["lateness"]
    ]
    rows += [
        (f"APScheduler\n{r['mode']}\n{r['jobs']:,}", r, "tab:orange")
        for r in (aps or {}).get("apscheduler", [])
    ]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    xs = range(len(rows))
    for offset, key, alpha in ((-0.25, "p50_ms", 0.5), (0.0, "p99_ms", 0.8), (0.25, "max_ms", 1.0)):
        ax.bar(
            [x + offset for x in xs],
            [max(r[key], 0.1) for _, r, _ in rows],
            width=0.25,
            color=[c for _, _, c in rows],
            alpha=alpha,
            label=key.removesuffix("_ms"),
        )
    ax.set_xticks(list(xs), [label for label, _, _ in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("scheduled instant -> start (ms, log)")
    ax.axhline(50, color="tab:red", linestyle="--", linewidth=1, label="50 ms (target at 10,000)")
    ax.axhline(250, color="tab:purple", linestyle="--", linewidth=1, label="250 ms (target at 100,000)")
    ax.legend(fontsize=8)
    ax.set_title("Fire lateness p50 / p99 / max: dkron-nats (blue) and APScheduler 3 (orange)")
    return save(fig, out / "lateness.png")


TAKEOVER_MAX, TAKEOVER_MEDIAN = 2.0, 1.2
"""Issue 20's targets for the kill -> next fire time (before, the line was the lease TTL + 1 s, 11 s)."""


def failover(out: Path) -> Path | None:
    chaos = load("chaos")
    if chaos is None:
        return None
    takeovers = chaos["takeover_s"]["all"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(takeovers, bins=20, color="tab:blue")
    ax.axvline(TAKEOVER_MAX, color="tab:red", linestyle="--", label=f"target max {TAKEOVER_MAX:g} s")
    median = f"target median {TAKEOVER_MEDIAN:g} s"
    ax.axvline(TAKEOVER_MEDIAN, color="tab:orange", linestyle=":", label=median)
    ax.set_xlim(0, max(TAKEOVER_MAX * 1.25, max(takeovers) * 1.1))
    ax.set_xlabel("kill -9 of the leader -> next fire (s)")
    ax.set_ylabel("kills")
    ax.set_title(f"Takeover over {chaos['kills']} leader kills; audit: {chaos['audit'].split(':')[0]}")
    ax.legend()
    return save(fig, out / "failover.png")


def memory(out: Path) -> Path | None:
    mem = load("memory")
    if mem is None:
        return None
    samples = mem["soak"]["samples"]
    executions = [s["executions"] / 1000 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(executions, [s["server_rss_mb"] for s in samples], label="dkron-nats server")
    ax.plot(executions, [s["nats_rss_mb"] for s in samples], label="embedded nats-server")
    ax.axhline(500, color="tab:red", linestyle="--", linewidth=1, label="500 MB")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("executions (thousands)")
    ax.set_ylabel("RSS (MB)")
    ax.set_title("Memory over the soak")
    ax.legend()
    return save(fig, out / "memory.png")


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(out: Path = OUT) -> list[Path]:
    made = [plot(out) for plot in (throughput_vs_ceilings, throughput_steps, lateness, failover, memory)]
    return [path for path in made if path is not None]


if __name__ == "__main__":
    for path in plot_all():
        print(path)
