"""Chaos run: kill -9 the leader again and again; measure each takeover and audit every slot.

Three servers (embedded NATS clustered, R3) and two agents. A job ticks every second on one web agent and
writes its slot to a ledger. Each round kills the current leader (its embedded NATS node dies with it),
measures the time from the kill to the first fire launched afterwards, restarts the killed server and waits
for a healthy cluster. Then it stops the leader gracefully five times and measures the hand-over. At the end
every slot must have exactly one record and none may have run twice.

    python -m bench.chaos --kills 20      # the acceptance run (about 10 minutes)
    python -m bench.chaos --quick         # 3 kills, 2 hand-overs (about 2 minutes)
    python -m bench.chaos --keep-logs     # keep every node's log, to read a slow takeover by its kill time
    python -m bench.chaos --jobs 200      # 200 more jobs due every second: a takeover waits for all to fire
    python -m bench.chaos --partitions 1  # one partition: a cluster made before partitions existed

The cluster has the product's 16 partitions unless told otherwise, and a ledger job in each. Each round kills
the owner of the next partition in turn; its takeover is the latest first fire of the ledger jobs of every
partition that server owned. Before the next round the partitions must be spread again as the assignment says
(a restarted server gets its share back after 10 s).
"""

from __future__ import annotations

import argparse
import functools
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
from dkron_nats.kv.buckets import DEFAULT_PARTITIONS
from tests.harness import Node, finished, job, spread_as_assigned, wait_for
from tests.integration.test_cluster import leaders, three_servers_two_agents
from tests.integration.test_failover import (
    LEASE_TTL,
    _audit,
    _first_fire_after,
    _healthy,
    _leader,
    _ledger_job,
)
from tests.integration.test_partitions import _named_in


def chaos(
    kills: int, workdir: Path, handover_rounds: int = 5, jobs: int = 0, partitions: int = 1
) -> dict[str, Any]:
    """`jobs`: as many more jobs due every second (noop), each of which must fire again after a kill: the
    takeover of a kill is then the latest of their first fires."""
    ledgers = {name: workdir / f"{name}.txt" for name in _ledger_names(partitions)}
    takeovers: list[float] = []
    every_job: list[float] = []
    load = [f"load-{i}" for i in range(jobs)]
    # Keep every record: the audit needs the whole history, and the default keeps the newest 100.
    args = ("--max-executions", "100000", "--partitions", str(partitions))
    with three_servers_two_agents(workdir / "cluster", args) as nodes:
        first = _leader(nodes)
        for name, ledger in ledgers.items():
            first.post("/v1/jobs", json=_ledger_job(name, ledger)).raise_for_status()
        for name in load:
            body = job(name, "@every 1s", executor="noop", executor_config={}, tags={"role": "web:1"})
            first.post("/v1/jobs", json=body).raise_for_status()
        _spread_as_assigned(nodes)
        _wait_runs(first, list(ledgers), 3)
        for round_no in range(1, kills + 1):
            leader, watched = _victim(nodes, partitions, round_no)
            killed_at = time.time()
            leader.kill()
            try:
                observer = next(s for s in nodes.values() if s.server and s is not leader)
                takeovers.append(_latest_first_fire(observer, watched, killed_at))
                if load:
                    every_job.append(max(takeovers[-1], _latest_first_fire(observer, load, killed_at)))
            finally:
                leader.start()
            at = datetime.fromtimestamp(killed_at, UTC).strftime("%H:%M:%S.%f")[:-3]
            all_fired = f", every job's after {every_job[-1]:.2f}s" if load else ""
            print(
                f"kill {round_no}: {leader.name} (owner of {', '.join(watched)}) killed at {at} UTC, "
                f"next fire after {takeovers[-1]:.2f}s{all_fired}",
                flush=True,
            )
            _healthy(nodes)
            _spread_as_assigned(nodes)
        handovers = [_graceful_handover(nodes, partitions) for _ in range(handover_rounds)]
        survivor = _leader(nodes)
        slots = sum(len(ledger.read_text().split()) for ledger in ledgers.values())
        for name, ledger in ledgers.items():
            _audit(survivor, name, ledger)
    return {
        "kills": kills,
        "partitions": partitions,
        "lease_ttl_s": LEASE_TTL,
        "slots_run": slots,
        "audit": "passed: every slot exactly one record, none ran twice",
        "takeover_s": _spread(takeovers),
        "within_ttl_plus_1s": sum(t <= LEASE_TTL + 1 for t in takeovers),
        **({"jobs_due_every_second": jobs + 1, "every_job_fired_s": _spread(every_job)} if load else {}),
        "graceful_handover_s": {
            "rounds": len(handovers),
            "p50": round(statistics.median(handovers), 3),
            "max": round(max(handovers), 3),
            "all": [round(t, 3) for t in handovers],
        },
    }


def _spread(seconds: list[float]) -> dict[str, Any]:
    return {
        "min": round(min(seconds), 2),
        "p50": round(statistics.median(seconds), 2),
        "max": round(max(seconds), 2),
        "all": [round(t, 2) for t in seconds],
    }


def _latest_first_fire(server: Node, names: list[str], moment: float) -> float:
    """Seconds from `moment` until every job of `names` had started a run after it (the latest first fire)."""
    return max(_first_fire_after(server, name, moment) for name in names) - moment


def _ledger_names(partitions: int) -> list[str]:
    """One ledger job (`chaos`), or one in each partition."""
    if partitions == 1:
        return ["chaos"]
    return [_named_in(p, partitions, "chaos") for p in range(partitions)]


def _owners(server: Node) -> dict[int, str]:
    """Who owns each partition ({} while the API answers 503: JetStream re-electing after a kill)."""
    response = server.get("/v1/partitions")
    if response.status_code != 200:
        return {}
    return {row["partition"]: row["owner"] for row in response.json()}


def _victim(nodes: dict[str, Node], partitions: int, round_no: int) -> tuple[Node, list[str]]:
    """Whom this round kills (the leader; or the owner of partition `round_no` mod N), and the ledger
    jobs whose first fires measure its takeover (those of every partition it owns)."""
    if partitions == 1:
        return _leader(nodes), ["chaos"]
    names = _ledger_names(partitions)
    owners = _owners(_leader(nodes))
    victim = owners[round_no % partitions]
    return nodes[victim], [names[p] for p, owner in owners.items() if owner == victim]


def _spread_as_assigned(nodes: dict[str, Node]) -> None:
    """Every partition owned by its assignee among the servers (hand-overs done): no kill lands mid-way."""
    spread_as_assigned([s for s in nodes.values() if s.server])


def _graceful_handover(nodes: dict[str, Node], partitions: int = 1) -> float:
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
    _spread_as_assigned(nodes)
    return took


def _wait_runs(node: Node, names: list[str], count: int) -> None:
    for name in names:
        wait_for(functools.partial(finished, node, name, count), timeout=60, what=f"{count} runs of {name}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 kills and 2 graceful hand-overs")
    parser.add_argument("--keep-logs", action="store_true", help="keep the nodes' logs and stores")
    parser.add_argument(
        "--jobs", type=int, default=0, help="more jobs due every second; a takeover waits for all to fire"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help="the cluster's partitions (the product's default); each round kills one partition's owner",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        kills, rounds = (3, 2) if args.quick else (args.kills, 5)
        result = chaos(kills, workdir, handover_rounds=rounds, jobs=args.jobs, partitions=args.partitions)
    except BaseException:
        print(f"chaos run failed; logs and stores kept in {workdir}", file=sys.stderr)
        raise
    if args.keep_logs:
        print(f"logs and stores kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir)
    result["command"] = command_line()
    print(json.dumps(result, indent=2))
    # With more jobs it is another measure: its own results file, the plain run's figures stay.
    name = (
        "chaos-jobs"
        if args.jobs
        else "chaos"
        if args.partitions == DEFAULT_PARTITIONS
        else "chaos-partitions"
    )
    write_results(name, args.quick, result)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    main(sys.argv[1:])
