"""Chaos run: kill -9 the leader again and again; measure each takeover and audit every slot.

Three servers (embedded NATS clustered, R3) and two agents. A job ticks every second on one web agent and
writes its slot to a ledger. Each round kills the current leader (its embedded NATS node dies with it),
measures the time from the kill to the first fire launched afterwards, restarts the killed server and waits
for a healthy cluster. Then it stops the leader gracefully five times and measures the hand-over. At the end
every slot must have exactly one record and none may have run twice.

    python -m bench.chaos --kills 20      # the acceptance run (about 10 minutes)
    python -m bench.chaos --quick         # 3 kills, 2 hand-overs (about 2 minutes)
    python -m bench.chaos --keep-logs     # keep every node's log, to read a slow takeover by its kill time
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import command_line, exit_on_sigterm, write_results
from tests.harness import Node, finished, wait_for
from tests.integration.test_cluster import leaders, three_servers_two_agents
from tests.integration.test_failover import (
    LEASE_TTL,
    _audit,
    _first_fire_after,
    _healthy,
    _leader,
    _ledger_job,
)


def chaos(kills: int, workdir: Path, handover_rounds: int = 5) -> dict[str, Any]:
    ledger = workdir / "ledger.txt"
    takeovers: list[float] = []
    # Keep every record: the audit needs the whole history, and the default keeps the newest 100.
    with three_servers_two_agents(workdir / "cluster", ("--max-executions", "100000")) as nodes:
        first = _leader(nodes)
        first.post("/v1/jobs", json=_ledger_job("chaos", ledger))
        _wait_runs(first, 3)
        for round_no in range(1, kills + 1):
            leader = _leader(nodes)
            killed_at = time.time()
            leader.kill()
            try:
                observer = next(s for s in nodes.values() if s.server and s is not leader)
                takeovers.append(_first_fire_after(observer, "chaos", killed_at) - killed_at)
            finally:
                leader.start()
            at = datetime.fromtimestamp(killed_at, UTC).strftime("%H:%M:%S.%f")[:-3]
            print(
                f"kill {round_no}: {leader.name} killed at {at} UTC, next fire after {takeovers[-1]:.2f}s",
                flush=True,
            )
            _healthy(nodes)
        handovers = [_graceful_handover(nodes) for _ in range(handover_rounds)]
        survivor = _leader(nodes)
        slots = len(ledger.read_text().split())
        _audit(survivor, "chaos", ledger)
    return {
        "kills": kills,
        "lease_ttl_s": LEASE_TTL,
        "slots_run": slots,
        "audit": "passed: every slot exactly one record, none ran twice",
        "takeover_s": {
            "min": round(min(takeovers), 2),
            "p50": round(statistics.median(takeovers), 2),
            "max": round(max(takeovers), 2),
            "all": [round(t, 2) for t in takeovers],
        },
        "within_ttl_plus_1s": sum(t <= LEASE_TTL + 1 for t in takeovers),
        "graceful_handover_s": {
            "rounds": len(handovers),
            "p50": round(statistics.median(handovers), 3),
            "max": round(max(handovers), 3),
            "all": [round(t, 3) for t in handovers],
        },
    }


def _graceful_handover(nodes: dict[str, Node]) -> float:
    """SIGTERM the leader; seconds until another server says it leads (the stop itself included)."""
    leader = _leader(nodes)
    others = [s for s in nodes.values() if s.server and s is not leader]
    stopped_at = time.monotonic()
    try:
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: leaders(others), timeout=15, what="a new leader after a graceful stop")
        took = time.monotonic() - stopped_at
        leader.stop()
    finally:
        leader.start()
    print(f"graceful stop of {leader.name}: a new leader after {took:.3f}s", flush=True)
    _healthy(nodes)
    return took


def _wait_runs(node: Node, count: int) -> None:
    wait_for(lambda: finished(node, "chaos", count), timeout=60, what=f"{count} runs")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 kills and 2 graceful hand-overs")
    parser.add_argument("--keep-logs", action="store_true", help="keep the nodes' logs and stores")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        kills, rounds = (3, 2) if args.quick else (args.kills, 5)
        result = chaos(kills, workdir, handover_rounds=rounds)
    except BaseException:
        print(f"chaos run failed; logs and stores kept in {workdir}", file=sys.stderr)
        raise
    if args.keep_logs:
        print(f"logs and stores kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir)
    result["command"] = command_line()
    print(json.dumps(result, indent=2))
    write_results("chaos", args.quick, result)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    main(sys.argv[1:])
