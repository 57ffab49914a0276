"""Concurrency policies with the job's lease: forbid (scheduled and manual, and force), and replace."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.harness import Node, executions, job, wait_for


def _shell_job(name: str, schedule: str, command: str, **fields: Any) -> dict[str, Any]:
    return job(name, schedule, command, executor_config={"command": command, "shell": "true"}, **fields)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _running(server: Node, name: str) -> list[dict[str, Any]]:
    return [e for e in executions(server, name) if e["status"] == "running"]


def _settled(server: Node, name: str) -> list[dict[str, Any]] | None:
    history = executions(server, name)
    return None if any(e["status"] == "running" for e in history) else history


def test_forbid_skips_slots_while_the_previous_run_goes_on(server: Node) -> None:
    server.post("/v1/jobs", json=_shell_job("forbid-tick", "@every 1s", "sleep 2.5", concurrency="forbid"))
    wait_for(
        lambda: len([e for e in executions(server, "forbid-tick") if e["status"] == "success"]) >= 2 or None,
        timeout=30,
        what="two complete runs",
    )
    server.request(
        "PUT",
        "/v1/jobs/forbid-tick",
        json={**_shell_job("forbid-tick", "@every 1s", "sleep 2.5", concurrency="forbid"), "disabled": True},
    )
    history = wait_for(lambda: _settled(server, "forbid-tick"), timeout=15, what="the job to settle")
    runs = sorted(
        ((_at(e["started_at"]), _at(e["finished_at"])) for e in history if e["status"] == "success"),
    )
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, f"two runs overlapped: one ended {end}, the next started {start}"
        # run_once: the latest slot that fell due during the block runs as soon as the block ends.
        assert (start - end).total_seconds() < 2.5, f"the next run waited {start - end} after the block"
    skipped = [e for e in history if e["status"] == "skipped"]
    assert skipped, "no slot was skipped although every run outlasts the 1 s period"
    assert all("concurrency is forbid" in e["output"] for e in skipped)
    server.request("DELETE", "/v1/jobs/forbid-tick")


def test_a_manual_run_obeys_forbid_unless_forced(server: Node, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    command = f"while [ ! -f {stop} ]; do sleep 0.1; done"
    server.post("/v1/jobs", json=_shell_job("forbid-manual", "@manually", command, concurrency="forbid"))
    try:
        assert server.post("/v1/jobs/forbid-manual/run").status_code == 200
        wait_for(lambda: _running(server, "forbid-manual") or None, timeout=15, what="the first run")
        refused = server.post("/v1/jobs/forbid-manual/run")
        assert refused.status_code == 409
        assert "concurrency is forbid" in refused.text
        assert "?force=true" in refused.text
        assert server.post("/v1/jobs/forbid-manual/run", params={"force": "true"}).status_code == 200
        wait_for(lambda: len(_running(server, "forbid-manual")) == 2, timeout=15, what="the forced run")
        assert server.post("/v1/jobs/forbid-manual/run", params={"force": "perhaps"}).status_code == 400
    finally:
        stop.touch()
    wait_for(lambda: not _running(server, "forbid-manual"), timeout=15, what="both runs to end")
    # The lease is released with the launch: a new run is accepted again.
    wait_for(
        lambda: server.post("/v1/jobs/forbid-manual/run").status_code == 200, timeout=15, what="a new run"
    )
    wait_for(lambda: len(executions(server, "forbid-manual")) == 3, timeout=15)
    wait_for(lambda: not _running(server, "forbid-manual"), timeout=15, what="the last run to end")
    server.request("DELETE", "/v1/jobs/forbid-manual")


def test_replace_cancels_the_running_execution(server: Node, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    command = f"while [ ! -f {stop} ]; do sleep 0.1; done"
    server.post("/v1/jobs", json=_shell_job("replace-me", "@manually", command, concurrency="replace"))
    try:
        server.post("/v1/jobs/replace-me/run")
        first = wait_for(lambda: _running(server, "replace-me") or None, timeout=15, what="the first run")[0]
        assert server.post("/v1/jobs/replace-me/run").status_code == 200
        cancelled = wait_for(
            lambda: next(
                (
                    e
                    for e in executions(server, "replace-me")
                    if e["id"] == first["id"] and e["status"] != "running"
                ),
                None,
            ),
            timeout=15,
            what="the first run to be cancelled",
        )
        assert cancelled["status"] == "failed"
        assert "replaced by a newer run" in cancelled["output"]
        second = wait_for(lambda: _running(server, "replace-me") or None, timeout=15, what="the new run")
        assert second[0]["id"] != first["id"]
    finally:
        stop.touch()
    wait_for(lambda: not _running(server, "replace-me"), timeout=15, what="the new run to end")
    server.request("DELETE", "/v1/jobs/replace-me")


def test_a_pending_retry_keeps_a_forbid_job_busy_past_the_lease_ttl(server: Node) -> None:
    """Between attempts no agent renews the lease; the leader holds it until the retry is due."""
    command = 'test "$DKRON_ATTEMPT" -ge 2'
    body = _shell_job(
        "forbid-retry",
        "@manually",
        command,
        concurrency="forbid",
        retries=1,
        retry_backoff={"initial": "16s", "jitter": False},
    )
    server.post("/v1/jobs", json=body)
    assert server.post("/v1/jobs/forbid-retry/run").status_code == 200
    first = wait_for(
        lambda: [e for e in executions(server, "forbid-retry") if e["status"] == "failed"] or None,
        timeout=20,
        what="the first attempt to fail",
    )
    failed_at = _at(first[0]["finished_at"])
    answers: list[tuple[float, int]] = []

    def retried() -> bool:
        if any(e["attempt"] == 2 for e in executions(server, "forbid-retry")):
            return True
        since = (datetime.now(failed_at.tzinfo) - failed_at).total_seconds()
        # Not near the due time (16 s): a run accepted just after the retry ended would be a new launch.
        if since < 15.0:
            answers.append((since, server.post("/v1/jobs/forbid-retry/run").status_code))
        return False

    wait_for(retried, timeout=40, what="the second attempt")
    assert max((since for since, _ in answers), default=0) > 12, "never asked past the 10 s lease TTL"
    assert {code for _, code in answers} == {409}, f"a run got through while a retry was pending: {answers}"
    second = wait_for(
        lambda: [e for e in executions(server, "forbid-retry") if e["attempt"] == 2 and e["success"]] or None,
        timeout=20,
        what="the second attempt to succeed",
    )
    assert (_at(second[0]["started_at"]) - failed_at).total_seconds() >= 15
    wait_for(
        lambda: server.post("/v1/jobs/forbid-retry/run").status_code == 200,
        timeout=15,
        what="the job to be free once the launch is over",
    )
    server.request("DELETE", "/v1/jobs/forbid-retry")
