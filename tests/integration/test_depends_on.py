"""Fan-in (`depends_on`): a child runs once all its parents finished as required since its last run."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Node, executions, finished, job, wait_for


def _job(name: str, command: str = "true", **fields: Any) -> dict[str, Any]:
    return job(name, "@manually", command, **fields)


def _run_and_finish(server: Node, name: str, count: int) -> None:
    assert server.post(f"/v1/jobs/{name}/run").status_code == 200
    wait_for(lambda: finished(server, name, count), timeout=20, what=f"run {count} of {name}")


def test_a_child_runs_once_per_completed_pair_of_parents(server: Node) -> None:
    server.post("/v1/jobs", json=_job("fan-a"))
    server.post("/v1/jobs", json=_job("fan-b"))
    deps = [{"job": "fan-a", "on": "success"}, {"job": "fan-b", "on": "success"}]
    created = server.post("/v1/jobs", json=job("fan-child", "", "true", depends_on=deps))
    assert created.status_code == 201, created.text
    assert created.json()["depends_on"] == deps
    _run_and_finish(server, "fan-a", 1)
    _run_and_finish(server, "fan-a", 2)  # the same parent twice still needs the other one
    assert executions(server, "fan-child") == []
    _run_and_finish(server, "fan-b", 1)
    wait_for(lambda: finished(server, "fan-child", 1), timeout=20, what="the child after both parents")
    _run_and_finish(server, "fan-b", 2)
    _run_and_finish(server, "fan-a", 3)
    wait_for(lambda: finished(server, "fan-child", 2), timeout=20, what="the child after the second pair")
    _run_and_finish(server, "fan-a", 4)
    # A beat for a wrong extra run to show up: the lone parent run must not launch the child.
    _run_and_finish(server, "fan-a", 5)
    assert len(executions(server, "fan-child")) == 2
    for name in ("fan-child", "fan-a", "fan-b"):
        server.request("DELETE", f"/v1/jobs/{name}")


@pytest.mark.parametrize(
    ("parent_command", "on", "runs"),
    [
        ("exit 1", "failure", 1),
        ("exit 1", "success", 0),
        ("exit 1", "always", 1),
        ("true", "failure", 0),
        ("true", "always", 1),
    ],
)
def test_on_failure_and_always(server: Node, parent_command: str, on: str, runs: int) -> None:
    parent, child, witness = f"cond-p-{on}-{runs}", f"cond-c-{on}-{runs}", f"cond-w-{on}-{runs}"
    server.post("/v1/jobs", json=_job(parent, parent_command))
    server.post("/v1/jobs", json=job(child, "", "true", depends_on=[{"job": parent, "on": on}]))
    # A witness that always follows the parent proves the parent's completion was processed.
    server.post("/v1/jobs", json=job(witness, "", "true", depends_on=[{"job": parent, "on": "always"}]))
    _run_and_finish(server, parent, 1)
    wait_for(lambda: finished(server, witness, 1), timeout=20, what="the witness")
    wait_for(lambda: finished(server, child, runs) if runs else True, timeout=20, what="the child")
    assert len(executions(server, child)) == runs
    for name in (child, witness, parent):
        server.request("DELETE", f"/v1/jobs/{name}")


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([_job("cyc-self", depends_on=[{"job": "cyc-self"}])], "cannot depend on itself"),
        ([_job("cyc-x", depends_on=[{"job": "no-such-job"}])], "no-such-job, which does not exist"),
        (
            [_job("cyc-y", depends_on=[{"job": "cyc-base", "on": "sometimes"}])],
            'invalid depends_on[0].on "sometimes"',
        ),
        (
            [_job("cyc-y", depends_on=[{"job": "cyc-base"}, {"job": "cyc-base"}])],
            "depends_on names cyc-base twice",
        ),
    ],
)
def test_bad_dependencies_are_refused(server: Node, jobs: list[dict[str, Any]], message: str) -> None:
    server.post("/v1/jobs", json=_job("cyc-base"))
    for body in jobs:
        response = server.post("/v1/jobs", json=body)
        assert response.status_code == 400, response.text
        assert message in response.text
        assert server.get(f"/v1/jobs/{body['name']}").status_code == 404
    server.request("DELETE", "/v1/jobs/cyc-base")


def test_a_cycle_is_refused_at_save_time(server: Node) -> None:
    server.post("/v1/jobs", json=_job("loop-a"))
    server.post("/v1/jobs", json=_job("loop-b", depends_on=[{"job": "loop-a"}]))
    server.post("/v1/jobs", json=_job("loop-c", depends_on=[{"job": "loop-b"}]))
    response = server.post("/v1/jobs", json=_job("loop-a", depends_on=[{"job": "loop-c"}]))
    assert response.status_code == 400
    assert "cycle" in response.text
    assert "loop-a -> loop-c -> loop-b -> loop-a" in response.text
    assert server.get("/v1/jobs/loop-a").json()["depends_on"] is None, "the refused update was stored"
    refused = server.request("DELETE", "/v1/jobs/loop-a")
    assert refused.status_code == 400
    assert "loop-b depend on it" in refused.text
    assert server.get("/v1/jobs/loop-a").status_code == 200
    for name in ("loop-c", "loop-b", "loop-a"):
        server.request("DELETE", f"/v1/jobs/{name}")
