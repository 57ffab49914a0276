"""Fire lateness: scheduled instant -> executor start, with N jobs due once a minute, and N jobs every second.

One `dkron-nats agent --server` with its embedded NATS. Two executors:
  shell:  every job runs `bash -c 'echo $DKRON_SCHEDULED_TIME $EPOCHREALTIME >> ledger'`; bash writes down
          when it started next to the slot it was launched for, so the figure includes scheduling, dispatch,
          the agent's claim and the fork/exec. The baseline, measured in the same run, is the latency of
          spawning the same bash from an idle asyncio program. APScheduler runs the very same command
          (bench/apscheduler_baseline.py).
  noop:   the trivial in-process executor (plugins/dkron-nats-noop); the lateness is the execution record's
          `started_at` minus its slot, read from the leader's execution events. It needs no process spawn,
          so it reaches sizes whose fork rate alone would exceed the machine (100,000 jobs a minute).
Loads:
  uniform:      `@every 1m` jobs. Up to 10,000 their creation is paced over one minute, so fire times are
                spread evenly over the minute ("N jobs due once a minute" when schedules do not collude);
                larger sets are created as fast as the API takes them.
  per-second:   `S * * * * *` with S = i mod 60: N/60 jobs fire at the very same instant every second (the
                thundering herd).
  every-second: `@every 1s`: all N jobs fire every second (N executions per second offered).
Slots never launched (missed: later than the 60 s starting deadline) are counted; they are not in the
lateness figures.

    python -m bench.lateness                  # the full set (about 25 minutes)
    python -m bench.lateness --quick          # 200 jobs (a CI-sized smoke run)
    python -m bench.lateness --runs noop:uniform:10000   # re-measures that row of lateness.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats

from bench.common import (
    RESULTS,
    SERVER_FLAGS,
    command_line,
    machine,
    rss_mb,
    run_main,
    summary,
    write_results,
)
from bench.throughput import Ledger, _sync
from tests.harness import Node, wait_for

FULL_RUNS = [
    "shell:uniform:1000",
    "shell:per-second:1000",
    "shell:uniform:10000",
    "shell:per-second:10000",
    "noop:uniform:10000",
    "noop:uniform:100000",
    "noop:every-second:1000",
]
QUICK_RUNS = ["shell:uniform:200", "noop:every-second:200"]
SETTLE = 20.0
"""Seconds between the last job created and the measured window, when creation was not paced."""
PACED_UP_TO = 10_000
"""Larger uniform sets are created as fast as the API takes them (pacing would need more POSTs/s)."""


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

    async with httpx.AsyncClient(base_url=node.url, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
    return time.monotonic() - started


def schedule_of(mode: str, i: int) -> str:
    return {"uniform": "@every 1m", "per-second": f"{i % 60} * * * * *", "every-second": "@every 1s"}[mode]


def job_body(i: int, executor: str, mode: str, ledger: Path, run: str) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"{run}-{i:06d}", "schedule": schedule_of(mode, i), "executor": executor}
    if executor == "shell":
        command = f"bash -c 'echo $DKRON_SCHEDULED_TIME $EPOCHREALTIME >> {ledger}'"
        body["executor_config"] = {"command": command}
    return body


def read_ledger(ledger: Path) -> list[float]:
    lateness = []
    for line in ledger.read_text().splitlines():
        slot_text, started_text = line.split()
        slot = datetime.fromisoformat(slot_text).timestamp()
        lateness.append((float(started_text) - slot) * 1000)
    return lateness


async def measure(executor: str, mode: str, size: int, workdir: Path) -> dict[str, Any]:
    run = f"{executor}-{mode}-{size}"
    ledger_file = workdir / f"ledger-{run}.txt"
    ledger_file.touch()
    node = Node(workdir / f"data-{run}", extra=[*SERVER_FLAGS])
    events = Ledger()
    try:
        node.start().wait_leader()
        nc = await nats.connect(**node.nats_options())
        await nc.subscribe(
            "dkron.events.execution.>", cb=_sync(events.on_event), pending_msgs_limit=2_000_000
        )
        jobs = [job_body(i, executor, mode, ledger_file, run) for i in range(size)]
        paced = mode == "uniform" and size <= PACED_UP_TO
        seconds = await create_jobs(node, jobs, parallel=32, over=58.0 if paced else 0.0)
        if not paced:
            # The fires that fell due while the jobs were being created queue up behind the API's work:
            # let that backlog drain, so the window shows the steady state.
            await asyncio.sleep(SETTLE)
        # Measure a whole period of fires after every job exists (a minute; every-second: 30 s).
        window = 30.0 if mode == "every-second" else 60.0
        ledger_file.write_text("")
        start = time.monotonic()
        await asyncio.sleep(window)
        end = time.monotonic()
        result: dict[str, Any] = {"executor": executor, "mode": mode, "jobs": size}
        result["create_seconds"] = round(seconds, 1)
        result["offered_per_s"] = round(size / (1 if mode == "every-second" else 60), 1)
        result["server_rss_mb"] = round(rss_mb(node.proc.pid if node.proc else 0))
        measured = events.window(start, end)
        result["executions_per_s"] = measured["executions_per_s"]
        result["missed"] = measured.pop("missed")
        if executor == "shell":
            fires = size if mode != "every-second" else int(size * window)
            wait_for(
                lambda: len(ledger_file.read_text().splitlines()) >= fires, timeout=120, what="the fires"
            )
            result |= summary(read_ledger(ledger_file)[:fires])
        else:
            result |= {k: v for k, v in measured.items() if k != "executions_per_s"}
        await nc.close()
        return result
    finally:
        node.stop()


def _merged(out: dict[str, Any]) -> dict[str, Any]:
    """Re-measured rows replace their namesakes in the full run's results; the other rows stay, and so does
    the spawn baseline their ratios were computed against unless a shell row was measured again."""
    path = RESULTS / "lateness.json"
    if not path.exists():
        return out
    stored = json.loads(path.read_text())
    rows = out["lateness"]
    fresh = {(r["executor"], r["mode"], r["jobs"]): r for r in rows}
    merged = [fresh.pop((r["executor"], r["mode"], r["jobs"]), r) for r in stored["lateness"]]
    shell_again = any(r["executor"] == "shell" for r in rows)
    return {
        **out,
        "baseline_spawn": out["baseline_spawn"] if shell_again else stored["baseline_spawn"],
        "lateness": merged + list(fresh.values()),
        "command": f"{stored['command']}, then {out['command']}",
    }


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200 jobs only")
    parser.add_argument("--runs", nargs="*", default=None, help="executor:mode:jobs, e.g. noop:uniform:10000")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else FULL_RUNS)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        baseline = await spawn_baseline(200, workdir / "baseline.txt")
        print(json.dumps({"baseline_bash_spawn": baseline}), flush=True)
        rows = []
        for spec in runs:
            executor, mode, size = spec.split(":")
            row = await measure(executor, mode, int(size), workdir)
            if executor == "shell":
                row["p99_vs_spawn_p99"] = round(row["p99_ms"] / baseline["p99_ms"], 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {"machine": machine(), "baseline_spawn": baseline, "lateness": rows, "command": command_line()}
    if args.runs and not args.quick:
        out = _merged(out)
    write_results("lateness", args.quick, out)
    return out


if __name__ == "__main__":
    run_main(main)
