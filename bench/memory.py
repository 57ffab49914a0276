"""The soak: memory over a million executions on one node (it must stay flat: history lives in JetStream).

One `dkron-nats agent --server` runs `@every 1s` noop jobs (N jobs = N executions per second offered) until
the leader has recorded the requested number of executions, counted from its execution events. Every 10 s
the RSS of the server process and of its embedded nats-server is sampled. The history of each job is kept at
the default 100 records, so the stores stay bounded whatever the run length; what grows would be a leak.

    python -m bench.memory                      # 1,000,000 executions at 550/s (about 30 minutes)
    python -m bench.memory --quick              # 20,000 executions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg

from bench.common import SERVER_FLAGS, command_line, machine, rss_mb, run_main, write_results
from bench.throughput import add_jobs
from tests.harness import Node, embedded_nats_pid

SAMPLE_EVERY = 10.0
FLAT_GROWTH = 0.10
"""Growth from 10% to 100% of the run, as a share of the 10% figure, still called flat."""


async def soak(executions: int, rate: int, workdir: Path) -> dict[str, Any]:
    node = Node(workdir / "soak", extra=[*SERVER_FLAGS])
    done = 0

    async def count(msg: Msg) -> None:
        nonlocal done
        done += msg.subject.endswith(".finished")

    samples: list[dict[str, float]] = []
    try:
        node.start().wait_leader()
        nc = await nats.connect(**node.nats_options())
        await nc.subscribe("dkron.events.execution.>", cb=count, pending_msgs_limit=1_000_000)
        async with httpx.AsyncClient(base_url=node.url, timeout=60) as client:
            await add_jobs(client, 0, rate, "noop")
        began = time.monotonic()
        nats_pid = embedded_nats_pid(node) or 0
        while done < executions:
            await asyncio.sleep(SAMPLE_EVERY)
            sample = {
                "seconds": round(time.monotonic() - began),
                "executions": done,
                "server_rss_mb": round(rss_mb(node.proc.pid if node.proc else 0), 1),
                "nats_rss_mb": round(rss_mb(nats_pid), 1),
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
        await nc.close()
    finally:
        node.stop()
    return {"executions": done, "rate": rate, "seconds": samples[-1]["seconds"], **growth(samples)}


def growth(samples: list[dict[str, float]]) -> dict[str, Any]:
    """RSS at 10%, 50% and 100% of the run, the growth from 10% to the end, and whether that is flat."""
    total = samples[-1]["executions"]

    def at(share: float) -> dict[str, float]:
        return next(s for s in samples if s["executions"] >= share * total)

    out: dict[str, Any] = {"samples": samples}
    for process in ("server_rss_mb", "nats_rss_mb"):
        early, middle, end = at(0.1)[process], at(0.5)[process], samples[-1][process]
        out[process] = {
            "at_10pct": early,
            "at_50pct": middle,
            "at_end": end,
            "growth_mb": round(end - early, 1),
            "flat": end - early < max(FLAT_GROWTH * early, 1.0),
        }
    return out


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20,000 executions")
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument(
        "--rate", type=int, default=550, help="executions per second offered (jobs @every 1s)"
    )
    args = parser.parse_args(argv)
    executions = 20_000 if args.quick else args.executions
    with tempfile.TemporaryDirectory() as tmp:
        result = await soak(executions, args.rate, Path(tmp))
    out = {"machine": machine(), "soak": result, "command": command_line()}
    write_results("memory", args.quick, out)
    return out


if __name__ == "__main__":
    run_main(main)
