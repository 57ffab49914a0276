"""API latency and memory with many jobs stored: 0, 10,000 and 100,000.

One `dkron-nats agent --server` and one separate agent process joined to its NATS. Jobs are created through
the real API (32 clients in parallel; `@manually` shell jobs with `metadata.team` = one of 100 teams, so
they are stored and listed but never fire). At every size the server's and the agent's RSS are read, and
each request below is timed sequentially on one keep-alive connection (p50/p99/max):

  page:      GET /v1/jobs?_start=0&_end=20                (the UI's first page)
  search:    GET /v1/jobs?q=<a name fragment>&_end=20
  metadata:  GET /v1/jobs?metadata[team]=t7&_end=20
  get_one:   GET /v1/jobs/<name>
  post:      POST /v1/jobs (a new job each time)
  executions: GET /v1/jobs/<name>/executions of a job that runs every second (noop executor)

    python -m bench.api_latency                 # 0, 10,000 and 100,000 jobs (about 6 minutes)
    python -m bench.api_latency --quick         # 0 and 10,000 jobs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import SERVER_FLAGS, command_line, machine, rss_mb, run_main, summary, write_results
from tests.harness import Node, wait_for

TARGETS = {"page_p99_ms": 50.0, "server_rss_mb_at_100000": 500.0}
SAMPLES = 200


def job(i: int) -> dict[str, Any]:
    return {
        "name": f"api-{i:06d}",
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": "true"},
        "metadata": {"team": f"t{i % 100}"},
    }


async def seed(client: httpx.AsyncClient, start: int, stop: int, parallel: int = 32) -> float:
    """Create jobs start..stop-1 through the API; the seconds it took."""
    began = time.monotonic()
    numbers = iter(range(start, stop))

    async def worker() -> None:
        for i in numbers:
            response = await client.post("/v1/jobs", json=job(i))
            if response.status_code != 201:
                raise RuntimeError(f"creating job {i} failed: {response.status_code} {response.text}")

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return time.monotonic() - began


async def timed(request: Callable[[int], Awaitable[httpx.Response]], samples: int) -> dict[str, float]:
    latencies = []
    for i in range(samples):
        began = time.perf_counter()
        response = await request(i)
        latencies.append((time.perf_counter() - began) * 1000)
        if response.status_code >= 300:
            raise RuntimeError(f"{response.request.url} answered {response.status_code}: {response.text}")
    return summary(latencies)


async def latencies(client: httpx.AsyncClient, size: int, samples: int) -> dict[str, dict[str, float]]:
    one = f"api-{size // 2:06d}"
    fragment = f"api-{size // 3:06d}"[:-2]  # matches about a hundred names
    posted = iter(range(10_000_000, 20_000_000))
    return {
        "page": await timed(lambda _: client.get("/v1/jobs", params={"_start": 0, "_end": 20}), samples),
        "search": await timed(lambda _: client.get("/v1/jobs", params={"q": fragment, "_end": 20}), samples),
        "metadata": await timed(
            lambda _: client.get("/v1/jobs", params={"metadata[team]": "t7", "_end": 20}), samples
        ),
        "get_one": await timed(lambda _: client.get(f"/v1/jobs/{one}"), samples),
        "post": await timed(lambda _: client.post("/v1/jobs", json=job(next(posted))), samples),
        "executions": await timed(lambda _: client.get("/v1/jobs/ticker/executions"), samples),
    }


def pid_of(node: Node) -> int:
    return node.proc.pid if node.proc else 0


async def measure(sizes: list[int], samples: int, workdir: Path) -> list[dict[str, Any]]:
    server = Node(workdir / "server", extra=[*SERVER_FLAGS])
    agent = Node(workdir / "agent", name="a1", server=False, nats_creds_from=server)
    rows = []
    try:
        server.start().wait_leader()
        agent.extra = ["--log-level", "warn", "--nats-url", f"nats://127.0.0.1:{server.nats_port}"]
        agent.start()
        wait_for(lambda: len(server.get("/v1/members").json()) == 2, timeout=30, what="the agent")
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            ticker = {"name": "ticker", "schedule": "@every 1s", "executor": "noop"}
            if (await client.post("/v1/jobs", json=ticker)).status_code != 201:
                raise RuntimeError("could not create the ticker job")
            created = 0
            for size in sizes:
                seconds = await seed(client, created, size)
                created = size
                row: dict[str, Any] = {"jobs": size, "seed_seconds": round(seconds, 1)}
                row["server_rss_mb"] = round(rss_mb(pid_of(server)))
                row["agent_rss_mb"] = round(rss_mb(pid_of(agent)))
                if size > 0:
                    row["latency"] = await latencies(client, size, samples)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        agent.stop()
        server.stop()
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets, the measured figures and their ratio (measured / target: <= 1 meets it)."""
    largest = rows[-1]
    page_p99 = largest.get("latency", {}).get("page", {}).get("p99_ms", 0.0)
    out: dict[str, Any] = {"at_jobs": largest["jobs"]}
    out["page_p99_ms"] = {"target": TARGETS["page_p99_ms"], "measured": page_p99}
    rss = largest["server_rss_mb"]
    out["server_rss_mb"] = {"target": TARGETS["server_rss_mb_at_100000"], "measured": rss}
    for figure in out.values():
        if isinstance(figure, dict):
            figure["ratio"] = round(figure["measured"] / figure["target"], 3)
    return out


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="0 and 10,000 jobs")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([0, 10_000] if args.quick else [0, 10_000, 100_000])
    with tempfile.TemporaryDirectory() as tmp:
        rows = await measure(sizes, args.samples, Path(tmp))
    out = {"machine": machine(), "sizes": rows, "targets": verdicts(rows), "command": command_line()}
    write_results("api", args.quick, out)
    return out


if __name__ == "__main__":
    run_main(main)
