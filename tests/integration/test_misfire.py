"""Misfire policies after real downtime: which overdue slots run; every other one is recorded missed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Node, executions, finished, job, wait_for

ONE_SECOND = timedelta(seconds=1)


POLICIES: dict[str, dict[str, Any]] = {
    "skip": {"misfire_policy": "skip"},
    "run_once": {},  # the default
    "run_all": {"misfire_policy": "run_all", "misfire_max": 3},
}


def _ledger_job(name: str, ledger: Path, **fields: Any) -> dict[str, Any]:
    command = f"echo $DKRON_SCHEDULED_TIME >> {ledger}"
    return job(name, "@every 1s", command, executor_config={"command": command, "shell": "true"}, **fields)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Outage:
    """One job per policy, after the same five-second downtime: its settled history and its ledger."""

    histories: dict[str, list[dict[str, Any]]]
    ledgers: dict[str, Path]


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Outage:
    """Run a ticker per policy, stop the server for five seconds, restart it; the settled histories."""
    base = tmp_path_factory.mktemp("outage")
    ledgers = {policy: base / f"{policy}.txt" for policy in POLICIES}
    bodies = {p: _ledger_job(f"ticker-{p.replace('_', '-')}", ledgers[p], **f) for p, f in POLICIES.items()}
    node = Node(base / "data")
    try:
        node.start().wait_leader()
        for body in bodies.values():
            assert node.post("/v1/jobs", json=body).status_code == 201
        for body in bodies.values():
            wait_for(partial(finished, node, body["name"], 2), timeout=20, what="two runs")
        assert node.stop() == 0
        time.sleep(5)  # the scenario itself: five slots fall due while the server is down
        node.start().wait_leader()
        seen = {policy: _lines(ledger) for policy, ledger in ledgers.items()}
        for policy, ledger in ledgers.items():
            wait_for(partial(_has_lines, ledger, seen[policy] + 5), 30, f"{policy} runs after the restart")
        for body in bodies.values():
            node.request("PUT", f"/v1/jobs/{body['name']}", json={**body, "disabled": True})
        histories = {
            policy: wait_for(partial(_settled, node, body["name"]), 15, "the history to settle")
            for policy, body in bodies.items()
        }
        return Outage(histories, ledgers)
    finally:
        node.stop()


def _lines(ledger: Path) -> int:
    return len(ledger.read_text().split())


def _has_lines(ledger: Path, count: int) -> bool:
    return _lines(ledger) >= count


def _settled(node: Node, name: str) -> list[dict[str, Any]] | None:
    found = executions(node, name)
    return found if found and all(e["status"] != "running" for e in found) else None


def _ran(ledger: Path) -> set[datetime]:
    return {datetime.fromisoformat(t) for t in ledger.read_text().split()}


def _missed(history: list[dict[str, Any]], reason: str) -> list[datetime]:
    return sorted(
        _at(e["scheduled_at"]) for e in history if e["status"] == "missed" and reason in e["output"]
    )


def _runs_by_slot(history: list[dict[str, Any]]) -> dict[datetime, dict[str, Any]]:
    return {_at(e["scheduled_at"]): e for e in history if e["status"] in ("success", "failed")}


def test_skip_runs_no_overdue_slot(outage: Outage) -> None:
    history, ledger = outage.histories["skip"], outage.ledgers["skip"]
    missed = _missed(history, "misfire_policy is skip")
    assert len(missed) >= 3, history
    assert not set(missed) & _ran(ledger), "a slot recorded as missed also ran"
    runs = _runs_by_slot(history)
    resumed = min(slot for slot in runs if slot > missed[-1])
    late = _at(runs[resumed]["started_at"]) - resumed
    assert late < 2 * ONE_SECOND, f"the first slot after the downtime ran {late} late: a catch-up run"


def test_run_once_runs_the_latest_overdue_slot_once(outage: Outage) -> None:
    history, ledger = outage.histories["run_once"], outage.ledgers["run_once"]  # run_once is the default
    missed = _missed(history, "misfire_policy is run_once")
    assert len(missed) >= 3, history
    assert not set(missed) & _ran(ledger), "a slot recorded as missed also ran"
    runs = _runs_by_slot(history)
    latest_overdue = missed[-1] + ONE_SECOND
    assert latest_overdue in runs, "the latest overdue slot did not run"
    assert sorted(missed) == [missed[0] + i * ONE_SECOND for i in range(len(missed))], (
        "a gap in the missed slots"
    )


def test_run_all_runs_every_overdue_slot_up_to_the_cap(outage: Outage) -> None:
    history, ledger, misfire_max = outage.histories["run_all"], outage.ledgers["run_all"], 3
    missed = _missed(history, f"misfire_max of {misfire_max}")
    assert len(missed) >= 1, history
    runs = _runs_by_slot(history)
    catch_up = [missed[-1] + i * ONE_SECOND for i in range(1, misfire_max + 1)]
    assert all(slot in runs for slot in catch_up), f"not every capped overdue slot ran: {sorted(runs)}"
    starts = [_at(runs[slot]["started_at"]) for slot in catch_up]
    assert starts == sorted(starts), "the overdue slots did not run oldest first"
    assert _at(runs[catch_up[0]]["started_at"]) - catch_up[0] > 2 * ONE_SECOND, (
        "the first one was not overdue"
    )
    assert not set(missed) & _ran(ledger), "a slot recorded as missed also ran"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"misfire_policy": "sometimes"}, 'invalid misfire_policy "sometimes"'),
        ({"starting_deadline": "soon"}, "invalid starting_deadline"),
        ({"starting_deadline": "-5m"}, "starting_deadline must be a positive duration"),
        ({"misfire_max": 0}, "misfire_max must be between 1 and 100"),
        ({"misfire_max": -3}, "misfire_max must be between 1 and 100"),
    ],
)
def test_bad_misfire_fields_are_refused(server: Node, fields: dict[str, Any], message: str) -> None:
    response = server.post("/v1/jobs", json=job("misfire-bad", "@every 1m", **fields))
    assert response.status_code == 400
    assert message in response.text
    assert server.get("/v1/jobs/misfire-bad").status_code == 404


def test_misfire_fields_round_trip(server: Node) -> None:
    body = job("misfire-ok", "@every 1m", misfire_policy="run_all", starting_deadline="5m", misfire_max=4)
    created = server.post("/v1/jobs", json=body).json()
    stored = server.get("/v1/jobs/misfire-ok").json()
    for answer in (created, stored):
        assert answer["misfire_policy"] == "run_all"
        assert answer["starting_deadline"] == "5m"
        assert answer["misfire_max"] == 4
    default = server.post("/v1/jobs", json=job("misfire-default", "@every 1m")).json()
    assert (default["misfire_policy"], default["starting_deadline"], default["misfire_max"]) == (
        "run_once",
        "",
        10,
    )
    server.request("DELETE", "/v1/jobs/misfire-ok")
    server.request("DELETE", "/v1/jobs/misfire-default")


def test_scheduling_pause_persists_and_resume_follows_the_misfire_policy(
    data_dir: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    node = Node(data_dir)
    try:
        node.start().wait_leader()
        node.post("/v1/jobs", json=_ledger_job("ticker", ledger))
        wait_for(lambda: finished(node, "ticker", 2), timeout=20, what="two runs")
        paused = node.post("/v1/pause", params={"scheduling": "true"})
        assert paused.json() == {"paused": False, "scheduling_paused": True}
        assert node.post("/v1/jobs", json=job("still-accepted")).status_code == 201  # submissions go on
        assert node.stop() == 0  # the pause is persisted, not held in memory
        node.start().wait_leader()
        assert node.get("/v1/pause").json()["scheduling_paused"] is True
        before = len(ledger.read_text().split())
        time.sleep(4)  # the scenario itself: slots fall due while scheduling is paused
        assert len(ledger.read_text().split()) == before, "a slot ran while scheduling was paused"
        assert node.post("/v1/unpause", params={"scheduling": "true"}).json()["scheduling_paused"] is False
        wait_for(lambda: len(ledger.read_text().split()) >= before + 3, timeout=20, what="runs after resume")
        history = executions(node, "ticker")
    finally:
        node.stop()
    missed = _missed(history, "misfire_policy is run_once")
    assert len(missed) >= 3, history
    assert missed[-1] + ONE_SECOND in _runs_by_slot(history), "the latest overdue slot did not run on resume"
    assert not set(missed) & _ran(ledger)


def test_pause_refuses_a_bad_scheduling_value(server: Node) -> None:
    response = server.post("/v1/pause", params={"scheduling": "maybe"})
    assert response.status_code == 400
    assert "scheduling must be true or false" in response.text
    assert server.get("/v1/pause").json() == {"paused": False, "scheduling_paused": False}
