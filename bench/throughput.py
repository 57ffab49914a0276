"""Dispatch throughput: sustained end-to-end executions per second on one node, and nothing lost.

One `dkron-nats agent --server` (scheduler, agent and embedded NATS in one node) runs `@every 1s` jobs; the
offered load rises step by step (jobs are added), and each step is measured over a fixed window from the
execution events the leader publishes (`dkron.events.execution.>`): executions finished per second, slots
missed, and lateness (scheduled instant to the executor's start). A step is sustained when the finished rate
keeps up with the offered rate, no slot is missed and p99 lateness stays under a second.

At the end scheduling is paused and every job's slots are audited: each slot from a job's first to its last
has exactly one record (finished or missed), and the leader's counters agree with the events.

What an execution costs, per step: NATS messages through the node's connection and the node's CPU (both from
its /metrics: `dkron_nats_messages_total`, `process_cpu_seconds_total`; for `split` also the agent's), and
the embedded nats-server's CPU (/proc), each divided by the executions finished in the window. Before the
nodes start, the bare execution pipeline (bench/pipeline.py) is measured on its own nats-server, and each
configuration's sustained rate is reported as a ratio to it.

    python -m bench.throughput                             # noop (one process, split) and shell (one)
    python -m bench.throughput --configs noop:split        # the trivial executor in a separate agent
    python -m bench.throughput --quick                     # noop at 250 and 500/s
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg

from bench.common import (
    SERVER_FLAGS,
    command_line,
    cpu_seconds,
    machine,
    rss_mb,
    summary,
    write_results,
)
from bench.pipeline import bare_pipeline
from dkron_nats.natsserver import EmbeddedNats
from tests.harness import Node, embedded_nats_pid, free_port, pid_with_argument, wait_for

EXECUTORS = {  # the trivial in-process executor; /bin/true through the shell executor
    "noop": ("noop", {}),
    "shell": ("shell", {"command": "/bin/true"}),
}


@dataclass
class Ledger:
    """What the execution events said, per job: slot (ns) -> statuses seen."""

    slots: dict[str, dict[int, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    finished_at: list[float] = field(default_factory=list)
    """Monotonic arrival time of every finished event (for windowed rates)."""
    lateness_ms: list[tuple[float, float]] = field(default_factory=list)
    """(arrival, lateness in ms) of every finished execution."""
    missed_at: list[float] = field(default_factory=list)
    failed: int = 0

    def on_event(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        kind = event["type"].rsplit(".", 1)[-1]
        if kind == "started":
            return
        data = event["data"]
        now = time.monotonic()
        scheduled = data.get("scheduled_at") or data.get("started_at")
        slot = int(datetime.fromisoformat(scheduled).timestamp() * 1000)
        self.slots[event["job"]].setdefault(slot, []).append(kind)
        if kind == "missed":
            self.missed_at.append(now)
            return
        if kind == "finished":
            self.finished_at.append(now)
            if not data.get("success"):
                self.failed += 1
            started = datetime.fromisoformat(data["started_at"]).timestamp()
            self.lateness_ms.append((now, (started - slot / 1000) * 1000))

    def window(self, start: float, end: float) -> dict[str, Any]:
        done = sum(1 for t in self.finished_at if start <= t < end)
        late = [ms for t, ms in self.lateness_ms if start <= t < end]
        missed = sum(1 for t in self.missed_at if start <= t < end)
        return {"executions_per_s": round(done / (end - start), 1), "missed": missed, **summary(late)}

    def audit(self) -> dict[str, int]:
        """Every job's slots, first to last, 1 s apart: each exactly once."""
        lost = duplicated = records = 0
        for slots in self.slots.values():
            ordered = sorted(slots)
            records += sum(len(kinds) for kinds in slots.values())
            duplicated += sum(len(kinds) - 1 for kinds in slots.values())
            for before, after in itertools.pairwise(ordered):
                lost += max(0, round((after - before) / 1000) - 1)
        return {"records": records, "lost": lost, "duplicated": duplicated}


async def add_jobs(
    client: httpx.AsyncClient, start: int, count: int, executor: str, tags: dict[str, str] | None = None
) -> None:
    name, config = EXECUTORS[executor]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(start, start + count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "name": f"tp-{i:06d}",
                "schedule": "@every 1s",
                "executor": name,
                "executor_config": config,
                "tags": tags or {},
            }
            response = await client.post("/v1/jobs", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"creating job {i} failed: {response.status_code} {response.text}")

    await asyncio.gather(*(worker() for _ in range(16)))


@dataclass
class Cost:
    """A node's running totals, read before and after a window: NATS messages and CPU seconds."""

    messages: float
    cpu: float

    @staticmethod
    async def of(client: httpx.AsyncClient) -> Cost:
        response = await client.get("/metrics")
        response.raise_for_status()
        messages = cpu = 0.0
        for line in response.text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.startswith("dkron_nats_messages_total{"):
                messages += float(value)
            elif series == "process_cpu_seconds_total":
                cpu = float(value)
        return Cost(messages, cpu)

    def per_execution(self, later: Cost, executions: int, who: str) -> dict[str, float]:
        done = max(executions, 1)
        return {
            f"{who}_messages_per_execution": round((later.messages - self.messages) / done, 2),
            f"{who}_cpu_us_per_execution": round((later.cpu - self.cpu) / done * 1e6),
        }


async def costs(clients: dict[str, httpx.AsyncClient], nats_pid: int) -> dict[str, Cost]:
    """Every node's totals now, and the embedded nats-server's CPU (as a cost without messages)."""
    found = {who: await Cost.of(client) for who, client in clients.items()}
    found["nats_server"] = Cost(0.0, cpu_seconds(nats_pid))
    return found


def cost_per_execution(before: dict[str, Cost], after: dict[str, Cost], executions: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for who, cost in before.items():
        figures = cost.per_execution(after[who], executions, who)
        if who == "nats_server":
            figures.pop("nats_server_messages_per_execution")
        out.update(figures)
    return out


async def measure_bare_pipeline(seconds: float, workdir: Path) -> dict[str, Any]:
    """The bare execution pipeline's rate on its own nats-server, as the ceiling of this run."""
    data = workdir / "bare-pipeline"
    async with EmbeddedNats(data, f"127.0.0.1:{free_port()}", "bare") as server:
        pid = pid_with_argument(str(data / "nats-server.conf"), "nats-server") or 0
        found = await bare_pipeline(server.url, seconds, pid)
    print(json.dumps({"bare_pipeline": found}), flush=True)
    return found


async def counted_executions(client: httpx.AsyncClient, jobs: int) -> int:
    total = 0
    for page in range(0, jobs, 1000):
        response = await client.get("/v1/jobs", params={"_start": page, "_end": page + 1000})
        total += sum(j["success_count"] + j["error_count"] for j in response.json())
    return total


async def measure(
    executor: str,
    rates: list[int],
    window: float,
    warmup: float,
    workdir: Path,
    layout: str,
    overload: float = 0.0,
) -> dict[str, Any]:
    node = Node(workdir / f"data-{executor}-{layout}", extra=[*SERVER_FLAGS])
    agent: Node | None = None
    tags: dict[str, str] = {}
    if layout == "split":
        # The same machine, the agent in its own process: the jobs run there, the server only schedules.
        agent = Node(workdir / f"agent-{executor}", name="a1", server=False, nats_creds_from=node)
        agent.extra = ["--log-level", "warn", "--nats-url", f"nats://127.0.0.1:{node.nats_port}"]
        agent.extra += ["--tag", "role=worker"]
        tags = {"role": "worker"}
    ledger = Ledger()
    node.start().wait_leader()
    try:
        if agent is not None:
            agent.start()
            wait_for(lambda: len(node.get("/v1/members").json()) == 2, timeout=30, what="the agent")
        nc = await nats.connect(**node.nats_options())
        await nc.subscribe(
            "dkron.events.execution.>", cb=_sync(ledger.on_event), pending_msgs_limit=1_000_000
        )
        steps: list[dict[str, Any]] = []
        overloaded: dict[str, Any] = {}
        nats_pid = embedded_nats_pid(node) or 0
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=60) as client,
            httpx.AsyncClient(base_url=agent.url if agent else node.url, timeout=60) as agent_client,
        ):
            scraped = {"node": client, **({"agent": agent_client} if agent else {})}
            jobs = 0
            for rate in rates:
                await add_jobs(client, jobs, rate - jobs, executor, tags)
                jobs = rate
                await asyncio.sleep(warmup)  # the new jobs' first fires settle before measuring
                before = await costs(scraped, nats_pid)
                counted = await counted_executions(client, jobs)
                start = time.monotonic()
                await asyncio.sleep(window)
                step = {"offered_per_s": rate, **ledger.window(start, time.monotonic())}
                step["counted_per_s"] = round((await counted_executions(client, jobs) - counted) / window, 1)
                step.update(cost_per_execution(before, await costs(scraped, nats_pid), step["count"]))
                step["server_rss_mb"] = round(rss_mb(node.proc.pid if node.proc else 0))
                if agent is not None:
                    step["agent_rss_mb"] = round(rss_mb(agent.proc.pid if agent.proc else 0))
                step["sustained"] = (
                    step["executions_per_s"] >= 0.97 * rate and step["missed"] == 0 and step["p99_ms"] < 1000
                )
                print(json.dumps({"executor": executor, "layout": layout, **step}), flush=True)
                steps.append(step)
                if not step["sustained"] and step["executions_per_s"] < 0.8 * rate:
                    break  # far past the knee: higher steps only measure the backlog
            if overload and steps:
                overloaded = await measure_overload(
                    client,
                    ledger,
                    steps,
                    jobs,
                    overload,
                    window,
                    warmup,
                    executor,
                    tags,
                    node,
                    scraped,
                    nats_pid,
                )
                jobs = overloaded["jobs"]
                print(
                    json.dumps({"executor": executor, "layout": layout, "overload": overloaded}), flush=True
                )
            # Audit: stop scheduling, let every launch finish, then compare events with the counters.
            await client.post("/v1/pause", params={"scheduling": "true"})
            await settled(ledger)
            counted = await counted_executions(client, jobs)
        await nc.drain()
    finally:
        if agent is not None:
            agent.stop()
        node.stop()
    audit = ledger.audit()
    audit["counted_by_leader"] = counted
    audit["finished_events"] = len(ledger.finished_at)
    audit["failed"] = ledger.failed
    best = max((s["executions_per_s"] for s in steps if s["sustained"]), default=0.0)
    found = {"executor": executor, "layout": layout, "sustained_per_s": best, "steps": steps, "audit": audit}
    return {**found, "overload": overloaded} if overload and steps else found


async def measure_overload(
    client: httpx.AsyncClient,
    ledger: Ledger,
    steps: list[dict[str, Any]],
    jobs: int,
    factor: float,
    window: float,
    warmup: float,
    executor: str,
    tags: dict[str, str],
    node: Node,
    scraped: dict[str, httpx.AsyncClient],
    nats_pid: int,
) -> dict[str, Any]:
    """Offer `factor` times the capacity (the most any step achieved) and measure what is achieved, the
    slots recorded missed, and the server's memory at the start and the end of a window twice as long."""
    capacity = max(s["executions_per_s"] for s in steps)
    offered = max(jobs, round(capacity * factor))
    await add_jobs(client, jobs, offered - jobs, executor, tags)
    await asyncio.sleep(warmup)
    rss_start = rss_mb(node.proc.pid if node.proc else 0)
    before = await costs(scraped, nats_pid)
    start = time.monotonic()
    await asyncio.sleep(2 * window)
    found = ledger.window(start, time.monotonic())
    spent = cost_per_execution(before, await costs(scraped, nats_pid), found["count"])
    return {
        "jobs": offered,
        "capacity_per_s": capacity,
        "offered_per_s": offered,
        "achieved_per_s": found["executions_per_s"],
        "achieved_vs_capacity": round(found["executions_per_s"] / capacity, 3) if capacity else None,
        "missed_per_s": round(found["missed"] / (2 * window), 1),
        "p50_ms": found.get("p50_ms"),
        "p99_ms": found.get("p99_ms"),
        "server_rss_mb_start": round(rss_start),
        "server_rss_mb_end": round(rss_mb(node.proc.pid if node.proc else 0)),
        **spent,
    }


def against_ceiling(result: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """The sustained and the best achieved rate as shares of the bare pipeline's, and the cost figures of the
    best sustained step (past the knee a step also pays for its missed slots; when no step was sustained,
    the step that achieved the most)."""
    steps = result["steps"]
    best = max((s for s in steps if s["sustained"]), key=lambda s: s["executions_per_s"], default=None)
    at: dict[str, Any] = best or max(steps, key=lambda s: s["executions_per_s"], default={})
    per_execution = {k: v for k, v in at.items() if k.endswith("_per_execution")}
    achieved = max((s["executions_per_s"] for s in steps), default=0.0)
    rate = ceiling.get("executions_per_s")
    return {
        **result,
        "best_achieved_per_s": achieved,
        "sustained_vs_bare_pipeline": round(result["sustained_per_s"] / rate, 3) if rate else None,
        "achieved_vs_bare_pipeline": round(achieved / rate, 3) if rate else None,
        "cost_at_offered_per_s": at.get("offered_per_s"),
        **per_execution,
    }


async def settled(ledger: Ledger, quiet: float = 2.0, deadline: float = 120.0) -> None:
    """Wait until no execution has finished for `quiet` seconds (the backlog is applied)."""
    end = time.monotonic() + deadline
    seen = -1
    while len(ledger.finished_at) != seen:
        if time.monotonic() > end:
            raise TimeoutError(f"results still arriving after {deadline:g}s")
        seen = len(ledger.finished_at)
        await asyncio.sleep(quiet)


def _sync(handler: Any) -> Any:
    async def callback(msg: Msg) -> None:
        handler(msg)

    return callback


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--configs",
        nargs="*",
        default=["noop:one", "noop:split", "shell:one"],
        help="executor:layout; layout one: `agent --server` runs everything; split: a separate agent process",
    )
    parser.add_argument("--rates", type=int, nargs="*", default=[250, 500, 750, 1000, 1250, 1500])
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--overload",
        type=float,
        default=2.0,
        help="after the steps, offer this many times the capacity reached (0: not)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="noop in one process, 250 and 500/s, 8 s windows"
    )
    parser.add_argument(
        "--pipeline-seconds",
        type=float,
        default=5.0,
        help="window of the bare pipeline's ceiling (1 s quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.rates, args.window, args.warmup = ["noop:one"], [250, 500], 8, 3
        args.pipeline_seconds = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        ceiling = await measure_bare_pipeline(args.pipeline_seconds, Path(tmp))
        results = []
        for config in args.configs:
            executor, layout = config.split(":")
            measured = await measure(
                executor, args.rates, args.window, args.warmup, Path(tmp), layout, args.overload
            )
            results.append(against_ceiling(measured, ceiling))
    out = {
        "machine": machine(),
        "bare_pipeline": ceiling,
        "throughput": results,
        "command": command_line(),
    }
    write_results("throughput", args.quick, out)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:])), indent=2))
