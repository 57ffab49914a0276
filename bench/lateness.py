"""Fire lateness: scheduled instant -> job process start, with N jobs due once a minute.

Each job runs `bash -c 'echo $DKRON_SCHEDULED_TIME $EPOCHREALTIME >> ledger'`: bash records the moment it
started next to the slot it was launched for, so the figure includes scheduling, dispatch, the agent's claim
and the fork/exec of the process. Two loads per size:
  uniform:    `@every 1m` jobs whose creation is paced over one minute, so their fire times are spread
              evenly over the minute (what "N jobs due once a minute" means when schedules do not collude);
  per-second: `S * * * * *` with S = i mod 60, so N/60 jobs fire at the very same instant every second:
              the thundering-herd case, bounded below by N/60 back-to-back process spawns.
The baseline, measured in the same run, is the raw latency of spawning the same bash from Python.

    python -m bench.lateness            # 1,000 and 10,000 jobs
    python -m bench.lateness --quick    # 200 jobs (a CI-sized smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Node, wait_for

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def spawn_baseline(samples: int, ledger: Path) -> dict[str, float]:
    """Latency of starting the very same bash command from an asyncio program, nothing else running."""
    lateness = []
    for _ in range(samples):
        before = time.time()
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", f"echo $EPOCHREALTIME >> {ledger}", start_new_session=True
        )
        await proc.wait()
        started = float((await asyncio.to_thread(ledger.read_text)).split()[-1])
        lateness.append((started - before) * 1000)
    return summary(lateness)


async def create_jobs(node: Node, jobs: list[dict[str, Any]], parallel: int = 16, over: float = 0.0) -> float:
    """POST the jobs; with `over` > 0, pace them evenly over that many seconds."""
    started = time.monotonic()
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for i, job in enumerate(jobs):
        queue.put_nowait((i, job))

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i, job = queue.get_nowait()
            if over:
                await asyncio.sleep(max(0.0, started + i * over / len(jobs) - time.monotonic()))
            response = await client.post("/v1/jobs", json=job)
            if response.status_code != 201:
                raise RuntimeError(f"creating {job['name']} failed: {response.status_code} {response.text}")

    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
    return time.monotonic() - started


def job_body(i: int, mode: str, ledger: Path, run: str) -> dict[str, Any]:
    schedule = "@every 1m" if mode == "uniform" else f"{i % 60} * * * * *"
    command = f"bash -c 'echo $DKRON_SCHEDULED_TIME $EPOCHREALTIME >> {ledger}'"
    return {
        "name": f"{run}-{i:06d}",
        "schedule": schedule,
        "executor": "shell",
        "executor_config": {"command": command},
    }


def read_ledger(ledger: Path) -> list[float]:
    lateness = []
    for line in ledger.read_text().splitlines():
        slot_text, started_text = line.split()
        slot = datetime.fromisoformat(slot_text).timestamp()
        lateness.append((float(started_text) - slot) * 1000)
    return lateness


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(size: int, mode: str, workdir: Path) -> dict[str, Any]:
    ledger = workdir / f"ledger-{mode}-{size}.txt"
    ledger.touch()
    node = Node(workdir / f"data-{mode}-{size}", extra=["--log-level", "warn"])
    try:
        node.start().wait_leader()
        run = f"{mode}{size}"
        jobs = [job_body(i, mode, ledger, run) for i in range(size)]
        seconds = await create_jobs(node, jobs, over=58.0 if mode == "uniform" else 0.0)
        # Measure one whole minute of fires after all jobs exist; the first lines may precede that.
        ledger.write_text("")
        timeout = 60 + 60
        wait_for(lambda: len(ledger.read_text().splitlines()) >= size, timeout=timeout, what=f"{size} fires")
        pid = node.proc.pid if node.proc else 0
        result = {
            "jobs": size,
            "mode": mode,
            "create_seconds": round(seconds, 1),
            "server_rss_mb": round(rss_mb(pid)),
        }
        result |= summary(read_ledger(ledger)[:size])
        return result
    finally:
        node.stop()


def machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200 jobs only")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([200] if args.quick else [1_000, 10_000])
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        baseline = await spawn_baseline(200, workdir / "baseline.txt")
        print(f"baseline bash spawn latency: {baseline}")
        rows = []
        for size in sizes:
            for mode in ("uniform", "per-second"):
                row = await measure(size, mode, workdir)
                row["p99_vs_spawn_p99"] = round(row["p99_ms"] / baseline["p99_ms"], 1)
                print(json.dumps(row))
                rows.append(row)
    out = {"machine": machine(), "baseline_spawn": baseline, "lateness": rows, "command": " ".join(sys.argv)}
    name = "lateness-quick.json" if args.quick else "lateness.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {RESULTS / name}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, so every node started is stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    asyncio.run(main(sys.argv[1:]))
