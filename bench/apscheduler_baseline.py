"""The in-process baseline: the same job set as bench/lateness.py, in APScheduler 3 (AsyncIOScheduler).

What a Python user would otherwise pick: one process, no cluster, no durability. Each job runs the same
`bash -c 'echo <slot> $EPOCHREALTIME >> ledger'` as in bench/lateness.py, so both benchmarks measure the same
thing: scheduled instant -> process start. Loads as there: `uniform` (interval 1 minute, start times spread
over the minute) and `per-second` (cron second = i mod 60: N/60 jobs at the same instant every second).

    python -m bench.apscheduler_baseline                 # 1,000 and 10,000 jobs
    python -m bench.apscheduler_baseline --sizes 1000    # one size
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

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from bench.lateness import RESULTS, machine, read_ledger, rss_mb, summary


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


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000])
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for mode in ("uniform", "per-second"):
                row = await measure(size, mode, Path(tmp))
                print(json.dumps(row))
                rows.append(row)
    out = {"machine": machine(), "apscheduler": rows, "command": " ".join(sys.argv)}
    (RESULTS / "apscheduler.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {RESULTS / 'apscheduler.json'}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
