"""History retention per job: by count (`history_limit`) and by age (`history_max_age`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness import Node, executions, job, wait_for


def _runs(server: Node, name: str) -> int:
    count: int = server.get(f"/v1/jobs/{name}").json()["success_count"]
    return count


def _finished(server: Node, name: str) -> list[dict[str, Any]]:
    return [e for e in executions(server, name) if e["status"] != "running"]


def _at_most(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    return records if len(records) <= count else None


def test_history_limit_keeps_the_newest_records(server: Node) -> None:
    server.post("/v1/jobs", json=job("hist-count", "@every 1s", history_limit=3))
    wait_for(lambda: _runs(server, "hist-count") >= 6, timeout=30, what="six runs")
    server.request(
        "PUT", "/v1/jobs/hist-count", json=job("hist-count", "@every 1s", history_limit=3, disabled=True)
    )
    kept = wait_for(lambda: _at_most(_finished(server, "hist-count"), 3), timeout=10, what="the trim")
    assert len(kept) == 3
    assert _runs(server, "hist-count") >= 6, "the counters must not shrink with the history"
    server.request("DELETE", "/v1/jobs/hist-count")


def test_history_max_age_drops_old_records_even_when_the_job_is_idle(server: Node) -> None:
    server.post("/v1/jobs", json=job("hist-age", "@every 1s", history_max_age="3s"))
    wait_for(lambda: _runs(server, "hist-age") >= 8, timeout=30, what="eight runs")
    now = datetime.now(UTC)
    records = _finished(server, "hist-age")
    oldest = min(datetime.fromisoformat(e["finished_at"].replace("Z", "+00:00")) for e in records)
    assert now - oldest <= timedelta(seconds=3 + 0.3 + 1.5), f"a record from {now - oldest} ago was kept"
    assert len(records) < 8
    # Disabled, it records nothing more; its history still ages out.
    server.request(
        "PUT", "/v1/jobs/hist-age", json=job("hist-age", "@every 1s", history_max_age="3s", disabled=True)
    )
    wait_for(lambda: not executions(server, "hist-age"), timeout=15, what="the idle job's history to age out")
    server.request("DELETE", "/v1/jobs/hist-age")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"history_limit": -1}, "history_limit must be between 1 and 100000"),
        ({"history_limit": 100_001}, "history_limit must be between 1 and 100000"),
        ({"history_max_age": "soon"}, "invalid history_max_age"),
        ({"history_max_age": "0s"}, "history_max_age must be at least 1s"),
    ],
)
def test_bad_retention_is_refused(server: Node, fields: dict[str, Any], message: str) -> None:
    response = server.post("/v1/jobs", json=job("hist-bad", **fields))
    assert response.status_code == 400
    assert message in response.text
    assert server.get("/v1/jobs/hist-bad").status_code == 404
