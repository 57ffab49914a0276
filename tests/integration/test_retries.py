"""Retries with a backoff on a real server: the attempts follow it; a success on a retry is a success."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.harness import Node, finished, job, wait_for


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _shell_job(name: str, command: str, **fields: Any) -> dict[str, Any]:
    return job(name, "@manually", command, executor_config={"command": command, "shell": "true"}, **fields)


def test_attempts_follow_the_backoff(server: Node) -> None:
    backoff = {"initial": "1s", "max": "1m", "multiplier": 2, "jitter": False}
    server.post("/v1/jobs", json=_shell_job("retry-backoff", "exit 3", retries=3, retry_backoff=backoff))
    server.post("/v1/jobs/retry-backoff/run")
    attempts = wait_for(lambda: finished(server, "retry-backoff", 4), timeout=40, what="four attempts")
    attempts.sort(key=lambda e: e["attempt"])
    assert [e["attempt"] for e in attempts] == [1, 2, 3, 4]
    assert not any(e["success"] for e in attempts)
    for previous, current, expected in zip(attempts, attempts[1:], (1.0, 2.0, 4.0), strict=False):
        gap = (_at(current["started_at"]) - _at(previous["finished_at"])).total_seconds()
        assert expected - 0.1 <= gap <= expected + 3.0, f"attempt {current['attempt']} came {gap:.2f}s later"
    assert server.get("/v1/jobs/retry-backoff").json()["status"] == "failed"
    server.request("DELETE", "/v1/jobs/retry-backoff")


def test_success_on_a_retry_is_success(server: Node) -> None:
    command = 'test "$DKRON_ATTEMPT" -ge 2'
    body = _shell_job("retry-then-ok", command, retries=2, retry_backoff={"initial": "1s", "jitter": False})
    server.post("/v1/jobs", json=body)
    server.post("/v1/jobs/retry-then-ok/run")
    attempts = wait_for(lambda: finished(server, "retry-then-ok", 2), timeout=30, what="two attempts")
    by_attempt = {e["attempt"]: e["success"] for e in attempts}
    assert by_attempt == {1: False, 2: True}
    stored = wait_for(
        lambda: (j := server.get("/v1/jobs/retry-then-ok").json())["status"] == "success" and j,
        timeout=10,
        what="the job's status",
    )
    assert (stored["success_count"], stored["error_count"]) == (1, 1)
    server.request("DELETE", "/v1/jobs/retry-then-ok")


def test_retry_fields_round_trip(server: Node) -> None:
    body = job(
        "retry-fields", retries=2, retry_backoff={"initial": "2s", "max": "1m"}, retry_on_other_node=True
    )
    created = server.post("/v1/jobs", json=body).json()
    stored = server.get("/v1/jobs/retry-fields").json()
    for answer in (created, stored):
        assert answer["retry_backoff"] == {"initial": "2s", "max": "1m", "multiplier": 2.0, "jitter": True}
        assert answer["retry_on_other_node"] is True
    plain = server.post("/v1/jobs", json=job("retry-plain")).json()
    assert (plain["retry_backoff"], plain["retry_on_other_node"]) == (None, False)
    server.request("DELETE", "/v1/jobs/retry-fields")
    server.request("DELETE", "/v1/jobs/retry-plain")


@pytest.mark.parametrize(
    ("backoff", "message"),
    [
        ({"initial": "soon"}, "invalid retry_backoff.initial"),
        ({"max": "0s"}, "retry_backoff.max must be a positive duration"),
        ({"initial": "10m", "max": "1m"}, "retry_backoff.initial must not be longer than retry_backoff.max"),
        ({"multiplier": 0.5}, "retry_backoff.multiplier must be between 1"),
        ({"multiplier": "double"}, "retry_backoff.multiplier"),
        ({"jitter": "yes"}, "retry_backoff.jitter"),
    ],
)
def test_bad_backoffs_are_refused(server: Node, backoff: dict[str, Any], message: str) -> None:
    response = server.post("/v1/jobs", json=job("retry-bad", retries=1, retry_backoff=backoff))
    assert response.status_code == 400
    assert message in response.text
    assert server.get("/v1/jobs/retry-bad").status_code == 404
