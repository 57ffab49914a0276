"""The in-process baseline: the same job set as bench/lateness.py, in APScheduler 3 (AsyncIOScheduler).

What a Python user would otherwise pick: one process, no cluster, no durability. Each job runs the same
`bash -c 'echo <slot> $EPOCHREALTIME >> ledger'` as in bench/lateness.py, so both benchmarks measure the same
thing: scheduled instant -> process start. Loads as there: `uniform` (interval 1 minute, start times spread
over the minute) and `per-second` (cron second = i mod 60: N/60 jobs at the same instant every second).

It also measures throughput: N one-second interval jobs running a no-op coroutine (what dkron-nats' noop
executor is), offered in steps, with the executions per second achieved and the lateness of each start.

    python -m bench.apscheduler_baseline                 # 1,000 and 10,000 jobs, throughput steps
    python -m bench.apscheduler_baseline --sizes 1000    # one size
    python -m bench.apscheduler_baseline --quick         # 200 uniform jobs, two throughput steps
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from bench.common import command_line, machine, rss_mb, summary, write_results
from bench.lateness import read_ledger


async def run_job(ledger: Path, slot_of: Any) -> None:
    """Start the measured process, as dkron-nats' shell executor does, and wait for it."""
    slot = slot_of(datetime.now(UTC))
    command = f"echo {slot.isoformat()} $EPOCHREALTIME >> {ledger}"
    proc = await asyncio.create_subprocess_exec("bash", "-c", command, start_new_session=True)
    await proc.wait()


def _interval_slot(start: datetime) -> Any:
    """The latest fire instant of a 1-minute interval job started at `start` (the run is late by < 1 min)."""
    return lambda now: start + timedelta(minutes=int((now - start).total_seconds() // 60))


def _second_slot(second: int) -> Any:
    """The latest instant with this second-of-minute (the run is late by less than a minute)."""

    def slot(now: datetime) -> datetime:
        candidate = now.replace(second=second, microsecond=0)
        return candidate if candidate <= now else candidate - timedelta(minutes=1)

    return slot


async def measure(size: int, mode: str, workdir: Path) -> dict[str, Any]:
    ledger = workdir / f"aps-{mode}-{size}.txt"
    ledger.touch()
    scheduler = AsyncIOScheduler(
        timezone="UTC", job_defaults={"max_instances": 1000, "misfire_grace_time": 60}
    )
    scheduler.start()
    created = time.monotonic()
    first = datetime.now(UTC) + timedelta(seconds=2)
    try:
        for i in range(size):
            if mode == "uniform":
                start = (first + timedelta(seconds=58 * i / size)).replace(microsecond=0)
                scheduler.add_job(
                    run_job, "interval", minutes=1, start_date=start, args=[ledger, _interval_slot(start)]
                )
            else:
                second = i % 60
                scheduler.add_job(run_job, "cron", second=second, args=[ledger, _second_slot(second)])
        create_seconds = time.monotonic() - created
        await asyncio.sleep(max(0.0, (first - datetime.now(UTC)).total_seconds()) + 60)  # the first fires
        ledger.write_text("")  # one whole minute of fires from here
        deadline = time.monotonic() + 120
        while len(ledger.read_text().splitlines()) < size and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # the ledger is a file the job processes append to
        result: dict[str, Any] = {
            "jobs": size,
            "mode": mode,
            "create_seconds": round(create_seconds, 1),
            "process_rss_mb": round(rss_mb(os.getpid())),
        }
        return result | summary(read_ledger(ledger)[:size])
    finally:
        scheduler.shutdown(wait=False)


async def _noop() -> None:
    """The trivial job of the throughput measurement (dkron-nats runs its noop executor)."""


async def throughput_step(rate: int, window: float, warmup: float) -> dict[str, Any]:
    """`rate` one-second interval jobs running a no-op coroutine: executions/s achieved, missed, lateness."""
    scheduler = AsyncIOScheduler(
        timezone="UTC", job_defaults={"max_instances": 1000, "misfire_grace_time": 60}
    )
    submitted: list[tuple[float, float]] = []
    executed: list[float] = []
    missed: list[float] = []

    def on_event(event: Any) -> None:
        now = time.monotonic()
        if event.code == EVENT_JOB_SUBMITTED:
            submitted.append((now, (time.time() - event.scheduled_run_times[-1].timestamp()) * 1000))
        elif event.code == EVENT_JOB_EXECUTED:
            executed.append(now)
        else:
            missed.append(now)

    scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
    scheduler.start()
    first = datetime.now(UTC) + timedelta(seconds=1)
    try:
        for i in range(rate):  # start times spread over the second, as dkron-nats' jobs are
            scheduler.add_job(_noop, "interval", seconds=1, start_date=first + timedelta(seconds=i / rate))
        await asyncio.sleep(warmup)
        start = time.monotonic()
        await asyncio.sleep(window)
        end = time.monotonic()
    finally:
        scheduler.shutdown(wait=False)
    done = sum(1 for t in executed if start <= t < end)
    late = [ms for t, ms in submitted if start <= t < end]
    step = {"offered_per_s": rate, "executions_per_s": round(done / (end - start), 1)}
    step["missed"] = sum(1 for t in missed if start <= t < end)
    step |= summary(late)
    step["sustained"] = step["executions_per_s"] >= 0.97 * rate and step["missed"] == 0
    return step


async def throughput(rates: list[int], window: float, warmup: float) -> dict[str, Any]:
    steps = []
    for rate in rates:
        step = await throughput_step(rate, window, warmup)
        print(json.dumps({"apscheduler_throughput": step}), flush=True)
        steps.append(step)
        if not step["sustained"] and step["executions_per_s"] < 0.8 * rate:
            break
    best = max((s["executions_per_s"] for s in steps if s["sustained"]), default=0.0)
    return {"sustained_per_s": best, "steps": steps}


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--rates", type=int, nargs="*", default=None)
    parser.add_argument("--modes", nargs="*", default=None, choices=["uniform", "per-second"])
    parser.add_argument(
        "--quick", action="store_true", help="200 uniform jobs; throughput at 250 and 1,000/s"
    )
    args = parser.parse_args(argv)
    sizes = args.sizes if args.sizes is not None else ([200] if args.quick else [1_000, 10_000])
    modes = args.modes or (["uniform"] if args.quick else ["uniform", "per-second"])
    rates = args.rates or ([250, 1000] if args.quick else [250, 500, 1000, 2000, 4000])
    window, warmup = (8.0, 3.0) if args.quick else (10.0, 3.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for mode in modes:
                row = await measure(size, mode, Path(tmp))
                print(json.dumps(row), flush=True)
                rows.append(row)
    out = {
        "machine": machine(),
        "apscheduler": rows,
        "throughput": await throughput(rates, window, warmup),
        "command": command_line(),
    }
    write_results("apscheduler", args.quick, out)
    return out


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
