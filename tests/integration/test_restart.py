"""Stopping and restarting a server on the same data dir loses nothing and runs no slot twice."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Node, executions, finished, job, pid_alive, wait_for


def _ledger_job(ledger: Path) -> dict[str, Any]:
    command = f"echo $DKRON_SCHEDULED_TIME >> {ledger}"
    return job("ticker", "@every 1s", command, executor_config={"command": command, "shell": "true"})


def _slot(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(env_value: str) -> str:
    """DKRON_SCHEDULED_TIME (Python isoformat) in the API's RFC3339 form."""
    return datetime.fromisoformat(env_value).isoformat().replace("+00:00", "Z")


def _assert_every_slot_accounted(records: list[dict[str, Any]], ran: list[str]) -> None:
    """Between the first and the last slot seen, every 1 s slot was run exactly once or recorded missed."""
    by_slot: dict[datetime, list[str]] = {}
    for r in records:
        by_slot.setdefault(_slot(r["scheduled_at"]), []).append(r["status"])
    for slot, statuses in by_slot.items():
        assert len(statuses) == 1, f"slot {slot} has {len(statuses)} records: {statuses}"
    assert len(ran) == len(set(ran)), "a slot ran twice"
    slots = sorted(by_slot)
    expected = slots[0]
    while expected <= slots[-1]:
        assert expected in by_slot, f"slot {expected} is unaccounted for"
        expected += timedelta(seconds=1)


@pytest.mark.parametrize("how", ["graceful", "kill-9"])
def test_restart_loses_nothing_and_runs_no_slot_twice(data_dir: Path, tmp_path: Path, how: str) -> None:
    ledger = tmp_path / "ledger.txt"
    node = Node(data_dir)
    try:
        node.start().wait_leader()
        assert node.post("/v1/jobs", json=_ledger_job(ledger)).status_code == 201
        assert node.post("/v1/jobs", json=job("keepme", "0 0 3 * * *", displayname="kept")).status_code == 201
        wait_for(lambda: finished(node, "ticker", 3), timeout=20, what="three runs before the restart")
        before = node.get("/v1/jobs/ticker").json()
        before_ids = {e["id"] for e in executions(node, "ticker") if e["status"] != "running"}
        pid = node.proc.pid if node.proc else 0
        if how == "graceful":
            assert node.stop() == 0
        else:
            node.kill()
            wait_for(lambda: not pid_alive(pid), timeout=10, what="the killed server to be gone")
        node.start().wait_leader()
        # Slots that passed while the server was down may be recorded as missed (finished, not run):
        # wait for two more successful runs, not just for more finished records.
        wait_for(
            lambda: node.get("/v1/jobs/ticker").json()["success_count"] >= before["success_count"] + 2,
            timeout=30,
            what="two successful runs after the restart",
        )
        assert node.get("/v1/jobs/keepme").json()["displayname"] == "kept"
        records = executions(node, "ticker")
        assert before_ids <= {e["id"] for e in records}, "an execution record was lost"
        node.request("PUT", "/v1/jobs/ticker", json={**_ledger_job(ledger), "disabled": True})
        wait_for(lambda: all(e["status"] != "running" for e in executions(node, "ticker")), timeout=15)
        _assert_every_slot_accounted(executions(node, "ticker"), ledger.read_text().split())
    finally:
        node.stop()


def test_slots_missed_while_down_are_recorded(data_dir: Path, tmp_path: Path) -> None:
    """Downtime longer than the starting deadline: the missed slots appear in history as `missed`."""
    ledger = tmp_path / "ledger.txt"
    node = Node(data_dir, extra=["--starting-deadline", "1s"])
    try:
        node.start().wait_leader()
        node.post("/v1/jobs", json=_ledger_job(ledger))
        wait_for(lambda: finished(node, "ticker", 2), timeout=20)
        node.stop()
        time.sleep(3)  # the scenario itself: three seconds of downtime, longer than the 1 s deadline
        node.start().wait_leader()
        records = wait_for(
            lambda: [e for e in executions(node, "ticker") if e["status"] == "missed"] or None,
            timeout=20,
            what="missed records",
        )
        assert len(records) >= 2
        assert all("starting deadline" in r["output"] for r in records)
        assert all(r["scheduled_at"] and not r["success"] for r in records)
        ran = ledger.read_text().split()
        missed = {r["scheduled_at"] for r in records}
        assert not missed & {_iso(t) for t in ran}, "a slot recorded as missed also ran"
    finally:
        node.stop()
