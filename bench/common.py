"""What every benchmark shares: where results go, the machine they ran on, percentiles, process RSS."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SERVER_FLAGS = ["--log-level", "warn", "--rate-limit-runs", "0"]
"""Flags of a benchmarked server: a benchmark measures capacity, not the API's per-caller rate limit."""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(ms: list[float]) -> dict[str, float]:
    """Count, p50, p99, max and mean of a list of milliseconds (zeros when it is empty)."""
    if not ms:
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far, in seconds (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def command_line() -> str:
    """How this benchmark was started, as a command to run from the repository's root."""
    return " ".join([f"python -m bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])


def results_path(stem: str, quick: bool) -> Path:
    """bench/results/<stem>.json (<stem>-quick.json for a quick run, so it never replaces the full run's)."""
    return RESULTS / f"{stem}{'-quick' if quick else ''}.json"


def read_results(stem: str, quick: bool) -> dict[str, Any] | None:
    path = results_path(stem, quick)
    return json.loads(path.read_text()) if path.exists() else None


def write_results(stem: str, quick: bool, out: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = results_path(stem, quick)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {path}")
    return path


def run_main(main: Callable[[list[str]], Coroutine[Any, Any, Any]]) -> None:
    """Run a benchmark's async main with the command line's arguments."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    asyncio.run(main(sys.argv[1:]))


def exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, so every node a benchmark started is stopped
