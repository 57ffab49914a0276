"""Job lifecycle on a real server: history retention, ephemeral, starts_at/expires_at, toggle, children."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.harness import Node, executions, finished, job, pid_alive, running, wait_for

ZERO = "0001-01-01T00:00:00Z"


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _at_most(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]] | None:
    return records if 0 < len(records) <= n else None


def test_history_keeps_the_newest_n_executions(data_dir: Path) -> None:
    with running(Node(data_dir, extra=["--max-executions", "3"])) as node:
        node.post("/v1/jobs", json=job("keep3", "@every 1s"))
        wait_for(lambda: node.get("/v1/jobs/keep3").json()["success_count"] >= 6, timeout=20, what="six runs")
        records = wait_for(lambda: _at_most(executions(node, "keep3"), 3), timeout=10, what="trimmed history")
        state = node.get("/v1/jobs/keep3").json()
        assert state["success_count"] >= 6  # counters keep counting what history no longer holds
        groups = [r["group"] for r in records]
        assert groups == sorted(groups, reverse=True)  # the newest ones are kept


def test_ephemeral_job_is_deleted_after_success(server: Node) -> None:
    server.post("/v1/jobs", json=job("ephemeral-once", "@manually", ephemeral=True))
    assert server.post("/v1/jobs/ephemeral-once/run").status_code == 200
    wait_for(lambda: server.get("/v1/jobs/ephemeral-once").status_code == 404, timeout=15, what="deletion")


def test_ephemeral_job_that_fails_is_kept(server: Node) -> None:
    server.post("/v1/jobs", json=job("ephemeral-fail", "@manually", "false", ephemeral=True))
    server.post("/v1/jobs/ephemeral-fail/run")
    wait_for(lambda: finished(server, "ephemeral-fail", 1), timeout=15)
    assert server.get("/v1/jobs/ephemeral-fail").status_code == 200
    server.request("DELETE", "/v1/jobs/ephemeral-fail")


def test_expired_job_does_not_run_and_has_no_next(server: Node) -> None:
    past = _iso(datetime.now(UTC) - timedelta(minutes=1))
    server.post("/v1/jobs", json=job("expired", "@every 1s", expires_at=past))
    assert server.get("/v1/jobs/expired").json()["next"] == ZERO
    future = _iso(datetime.now(UTC) + timedelta(hours=1))
    server.post("/v1/jobs", json=job("control-runs", "@every 1s", expires_at=future))
    wait_for(lambda: finished(server, "control-runs", 2), timeout=15, what="the control job to run")
    assert executions(server, "expired") == []
    for name in ("expired", "control-runs"):
        server.request("DELETE", f"/v1/jobs/{name}")


def test_job_waits_for_starts_at(server: Node) -> None:
    start = datetime.now(UTC) + timedelta(seconds=3)
    server.post("/v1/jobs", json=job("starts-later", "@every 1s", starts_at=_iso(start)))
    runs = wait_for(lambda: finished(server, "starts-later", 1), timeout=15, what="the first run")
    server.request("DELETE", "/v1/jobs/starts-later")
    first_slot = min(datetime.fromisoformat(r["scheduled_at"]) for r in runs)
    assert first_slot >= start


def test_disabled_job_does_not_run_until_toggled(server: Node) -> None:
    server.post("/v1/jobs", json=job("toggled", "@every 1s", disabled=True))
    server.post("/v1/jobs", json=job("toggle-control", "@every 1s"))
    wait_for(lambda: finished(server, "toggle-control", 2), timeout=15)
    assert executions(server, "toggled") == []
    assert server.get("/v1/jobs/toggled").json()["next"] == ZERO
    assert server.post("/v1/jobs/toggled/toggle").json()["disabled"] is False
    wait_for(lambda: finished(server, "toggled", 1), timeout=15, what="a run after enabling")
    for name in ("toggled", "toggle-control"):
        server.request("DELETE", f"/v1/jobs/{name}")


def test_child_runs_after_parent_success_only(server: Node) -> None:
    server.post("/v1/jobs", json=job("parent-ok", "@manually"))
    server.post("/v1/jobs", json=job("child-ok", "", parent_job="parent-ok"))
    server.post("/v1/jobs", json=job("parent-bad", "@manually", "false"))
    server.post("/v1/jobs", json=job("child-bad", "", parent_job="parent-bad"))
    assert server.get("/v1/jobs/parent-ok").json()["dependent_jobs"] == ["child-ok"]
    server.post("/v1/jobs/parent-ok/run")
    server.post("/v1/jobs/parent-bad/run")
    wait_for(lambda: finished(server, "child-ok", 1), timeout=15, what="the child to run")
    wait_for(lambda: finished(server, "parent-bad", 1), timeout=15)
    wait_for(lambda: finished(server, "child-ok", 1), timeout=5)
    assert executions(server, "child-bad") == []
    for name in ("child-ok", "parent-ok", "child-bad", "parent-bad"):
        server.request("DELETE", f"/v1/jobs/{name}")


def test_leave_stops_the_node_gracefully(data_dir: Path) -> None:
    node = Node(data_dir)
    try:
        node.start().wait_leader()
        pid = node.proc.pid if node.proc else 0
        response = node.post("/v1/leave")
        assert response.status_code == 200
        assert "n1" in response.json()
        wait_for(
            lambda: not pid_alive(pid) or (node.proc is not None and node.proc.poll() is not None), timeout=20
        )
        assert node.proc is not None
        assert node.proc.wait(timeout=5) == 0
    finally:
        node.stop()
