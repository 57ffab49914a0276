"""A real server schedules and runs jobs: the getting-started job, slot bookkeeping, missed slots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Node, executions, finished, job, wait_for

ZERO = "0001-01-01T00:00:00Z"

SEED_JOB = """{
  "name": "job1",
  "schedule": "@every 2s",
  "timezone": "Europe/Berlin",
  "owner": "Platform Team",
  "owner_email": "platform@example.com",
  "disabled": false,
  "tags": {
    "dkron_server": "true:1"
  },
  "concurrency": "allow",
  "executor": "shell",
  "executor_config": {
    "command": "date"
  }
}"""


def test_getting_started_job_runs_date_on_schedule(server: Node) -> None:
    # The seed's job (its braces closed), posted as-is; only the interval is shortened from 10s to 2s.
    response = server.post("/v1/jobs", content=SEED_JOB)
    assert response.status_code == 201, response.text
    runs = wait_for(lambda: finished(server, "job1", 2), timeout=20, what="two runs of job1")
    for run in runs:
        assert run["success"] is True
        assert run["node_name"] == "n1"
        assert run["output"].strip()  # `date` printed something
        assert run["status"] == "success"
        assert run["scheduled_at"] is not None
    slots = sorted(r["scheduled_at"] for r in runs)
    assert len(set(slots)) == len(slots)
    stored = server.get("/v1/jobs/job1").json()
    assert stored["success_count"] >= 2
    assert stored["status"] == "success"
    assert stored["next"] != ZERO
    single = server.get(f"/v1/jobs/job1/executions/{runs[0]['id']}").json()
    assert single["output"] == runs[0]["output"]
    assert server.request("DELETE", "/v1/jobs/job1").status_code == 200


def test_failed_command_counts_as_error(server: Node) -> None:
    server.post("/v1/jobs", json=job("failing-sched", "@every 1s", "sh -c 'echo boom; exit 3'"))
    runs = wait_for(lambda: finished(server, "failing-sched", 1), timeout=15, what="a failed run")
    server.request("DELETE", "/v1/jobs/failing-sched")
    assert runs[0]["success"] is False
    assert runs[0]["status"] == "failed"
    assert "boom" in runs[0]["output"]
    assert "exit status 3" in runs[0]["output"]


def test_job_with_no_matching_node_records_a_failed_execution(server: Node) -> None:
    server.post("/v1/jobs", json=job("nowhere", "@every 1s", tags={"role": "nosuchrole"}))
    runs = wait_for(lambda: finished(server, "nowhere", 1), timeout=15, what="a failed record")
    server.request("DELETE", "/v1/jobs/nowhere")
    assert runs[0]["success"] is False
    assert "no target nodes found" in runs[0]["output"]
    assert "role=nosuchrole" in runs[0]["output"]


def test_each_slot_runs_once_with_its_scheduled_time(server: Node, tmp_path: Path) -> None:
    ledger = tmp_path / "slots.txt"
    command = f"echo $DKRON_SCHEDULED_TIME >> {ledger}"
    server.post(
        "/v1/jobs",
        json=job("ledger", "@every 1s", command, executor_config={"command": command, "shell": "true"}),
    )
    wait_for(lambda: finished(server, "ledger", 4), timeout=20, what="four runs")
    server.request("DELETE", "/v1/jobs/ledger")
    lines = ledger.read_text().split()
    assert len(lines) >= 4
    assert len(lines) == len(set(lines)), "a slot ran twice"


def test_jobs_due_at_the_same_instant_all_run(server: Node) -> None:
    """Executions of different jobs at the same instant on the same node share an id; both must run."""
    names = [f"same-instant-{i}" for i in range(5)]
    for name in names:
        assert server.post("/v1/jobs", json=job(name, "*/2 * * * * *", "true")).status_code == 201
    for name in names:
        wait_for(_first_run_of(server, name), timeout=15, what=f"a run of {name}")
    ids = {executions(server, name)[0]["id"] for name in names}
    for name in names:
        server.request("DELETE", f"/v1/jobs/{name}")
    assert len(ids) <= len(names)
    assert server.get("/health").json()["status"] == "healthy"


def _first_run_of(server: Node, name: str) -> Callable[[], list[dict[str, Any]] | None]:
    return lambda: finished(server, name, 1)
