"""Scheduling capacity that adds up: one server against two (and three), each on the same CPU budget.

Every server gets the same CPU budget, enforced by the kernel (a cgroup CPU quota: `--budget` of a core per
server), and schedules `@every 1s` noop jobs that two separate agent processes run (no budget). The offered
load rises step by step; a step is sustained as in bench/throughput.py (97% of the offered executions
finish in the window, no slot missed, p99 lateness under a second). The capacity of a layout is the highest
offered rate sustained before two steps in a row are not (`capacity`), and the ratio of two servers'
capacity to one's is the figure that says whether scheduling adds up. Each step also reports each server's
share of the scheduling decisions (`dkron_decisions_total`) and CPU, so the split over the servers is
visible, and at the end every slot is audited (once each).

Why a CPU quota and not `taskset`: this machine has two cores. Pinning two servers to a core each would leave
no core for the nats-server, the agents and this benchmark; a quota gives each server the same slice of a
core and leaves the rest to them. Where the hosts have the cores, pinning gives the same comparison. The
budget must leave the machine room: at 0.3 of a core two servers reach about 500 executions/s, where the
agents and the nats-server take the rest of the two cores and the machine, not the servers, is the limit.

    python -m bench.scaling                  # 1, 2 and 3 servers, 0.2 of a core each (about 15 minutes)
    python -m bench.scaling --quick          # 1 and 2 servers, short steps
    python -m bench.scaling --budget 0.25 --layouts 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats

from bench.common import SERVER_FLAGS, command_line, cpu_seconds, machine, write_results
from bench.throughput import Ledger, _sync, add_jobs, settled
from tests.harness import Node, embedded_nats_pid, metric, spread_as_assigned, wait_for

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
"""cgroup v1's cpu controller (this machine's); the quota is `cpu.cfs_quota_us` per `cpu.cfs_period_us`."""
PERIOD_US = 100_000
PARTITIONS = 16


class CpuBudget:
    """A cgroup whose processes together get `cores` of a core at most."""

    def __init__(self, name: str, cores: float) -> None:
        self.path = CGROUP_CPU / name
        self.cores = cores

    def __enter__(self) -> CpuBudget:
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(self.cores * PERIOD_US)))
        return self

    def admit(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat.get("throttled_time", "0")) / 1e9

    def __exit__(self, *exc: object) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():  # back to the root group
            with contextlib.suppress(OSError):
                (CGROUP_CPU / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()


async def _totals(clients: dict[str, httpx.AsyncClient], pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Each server's decisions so far and CPU seconds so far."""
    found = {}
    for name, client in clients.items():
        text = (await client.get("/metrics")).text
        found[name] = {"decisions": metric(text, "dkron_decisions_total"), "cpu": cpu_seconds(pids[name])}
    return found


def _shares(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], window: float) -> Any:
    decided = {name: after[name]["decisions"] - before[name]["decisions"] for name in before}
    total = sum(decided.values()) or 1.0
    n = len(before)
    return {
        name: {
            "decisions_share": round(decided[name] / total, 3),
            "of_even_share": round(decided[name] / total * n, 3),
            "cpu_cores": round((after[name]["cpu"] - before[name]["cpu"]) / window, 3),
        }
        for name in before
    }


@contextlib.contextmanager
def _cluster(workdir: Path, servers: int, budget: float) -> Iterator[tuple[list[Node], list[Node]]]:
    """`servers` servers on the first one's embedded nats-server, each in its own CPU budget (the
    nats-server stays outside it), and two agents that run every job."""
    first = Node(workdir / "s1", name="s1", extra=[*SERVER_FLAGS, "--partitions", str(PARTITIONS)])
    others = [
        Node(workdir / f"s{i}", name=f"s{i}", nats_creds_from=first, extra=[*SERVER_FLAGS])
        for i in range(2, servers + 1)
    ]
    agents = [
        Node(
            workdir / f"a{i}",
            name=f"a{i}",
            server=False,
            nats_creds_from=first,
            extra=["--log-level", "warn"],
        )
        for i in (1, 2)
    ]
    for node in [*others, *agents]:
        node.extra += ["--nats-url", first.nats_url]
    for agent in agents:
        agent.extra += ["--tag", "role=worker"]
    budgets = [CpuBudget(f"dkron-scaling-s{i}", budget) for i in range(1, servers + 1)]
    started: list[Node] = []
    try:
        with contextlib.ExitStack() as stack:
            for cgroup in budgets:
                stack.enter_context(cgroup)
            first.start()
            started.append(first)
            wait_for(lambda: embedded_nats_pid(first), timeout=30, what="s1's nats-server")
            first.wait_leader()
            for node in [*others, *agents]:
                node.start()
                started.append(node)
            for node, cgroup in zip([first, *others], budgets, strict=True):
                assert node.proc is not None
                cgroup.admit(node.proc.pid)  # the Python process only: s1's nats-server is already running
            spread_as_assigned([first, *others])
            wait_for(lambda: len(first.get("/v1/members").json()) == servers + 2, timeout=30, what="members")
            yield [first, *others], agents
    finally:
        for node in reversed(started):
            node.stop()


async def measure(
    workdir: Path, servers: int, budget: float, rates: list[int], window: float
) -> dict[str, Any]:
    ledger = Ledger()
    steps: list[dict[str, Any]] = []
    with _cluster(workdir / f"servers-{servers}", servers, budget) as (nodes, _agents):
        pids = {node.name: node.proc.pid for node in nodes if node.proc is not None}
        nc = await nats.connect(**nodes[0].nats_options())
        await nc.subscribe(
            "dkron.events.execution.>", cb=_sync(ledger.on_event), pending_msgs_limit=1_000_000
        )
        clients = {node.name: httpx.AsyncClient(base_url=node.url, timeout=60) for node in nodes}
        try:
            api = clients[nodes[0].name]
            jobs = 0
            for rate in rates:
                await add_jobs(api, jobs, rate - jobs, "noop", {"role": "worker:1"})
                jobs = rate
                await asyncio.sleep(3.0)  # the new jobs' first fires settle
                before = await _totals(clients, pids)
                start = time.monotonic()
                await asyncio.sleep(window)
                step = {"offered_per_s": rate, **ledger.window(start, time.monotonic())}
                step["servers"] = _shares(before, await _totals(clients, pids), window)
                step["sustained"] = (
                    step["executions_per_s"] >= 0.97 * rate and step["missed"] == 0 and step["p99_ms"] < 1000
                )
                print(json.dumps({"servers": servers, **step}), flush=True)
                steps.append(step)
                if _past_the_knee(steps):
                    break
            await api.post("/v1/pause", params={"scheduling": "true"})
            await settled(ledger)
        finally:
            for client in clients.values():
                await client.aclose()
            await nc.drain()
    return {"servers": servers, "capacity_per_s": capacity(steps), "steps": steps, "audit": ledger.audit()}


def _past_the_knee(steps: list[dict[str, Any]]) -> bool:
    """Two steps in a row not sustained (one alone can be noise), or one far below what was offered."""
    last = steps[-1]
    if not last["sustained"] and last["executions_per_s"] < 0.85 * last["offered_per_s"]:
        return True
    return len(steps) >= 2 and not any(step["sustained"] for step in steps[-2:])


def capacity(steps: list[dict[str, Any]]) -> float:
    """The highest offered rate sustained before the knee. A step after the knee can pass by catching up on
    a backlog, and a step's achieved rate can exceed the offered one for the same reason: neither counts."""
    best = 0.0
    for index, step in enumerate(steps):
        if _past_the_knee(steps[: index + 1]) and index:
            break
        if step["sustained"]:
            best = max(best, min(step["executions_per_s"], float(step["offered_per_s"])))
    return best


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layouts", type=int, nargs="*", default=[1, 2, 3], help="server counts to measure")
    parser.add_argument("--budget", type=float, default=0.2, help="CPU budget of each server, in cores")
    parser.add_argument("--start", type=int, default=50, help="the first step's executions per second")
    parser.add_argument("--step", type=int, default=25, help="how much each step adds")
    parser.add_argument("--top", type=int, default=600)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="1 and 2 servers, 6 s windows, steps of 50")
    args = parser.parse_args(argv)
    if args.quick:
        args.layouts, args.window, args.step = [1, 2], 6.0, 50
    if not CGROUP_CPU.is_dir():
        sys.exit(f"no cgroup v1 cpu controller at {CGROUP_CPU}: this benchmark needs one (and root)")
    rates = list(range(args.start, args.top + 1, args.step))
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        results = [
            asyncio.run(measure(Path(tmp), servers, args.budget, rates, args.window))
            for servers in args.layouts
        ]
    one = next((r["capacity_per_s"] for r in results if r["servers"] == 1), 0.0)
    out = {
        "machine": machine(),
        "budget_cores_per_server": args.budget,
        "partitions": PARTITIONS,
        "layouts": results,
        "ratio_to_one_server": {
            str(r["servers"]): round(r["capacity_per_s"] / one, 2) if one else None for r in results
        },
        "command": command_line(),
    }
    print(json.dumps({"ratio_to_one_server": out["ratio_to_one_server"]}), flush=True)
    write_results("scaling", args.quick, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
