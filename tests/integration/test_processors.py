"""Processors on a real server: the agent that ran the job applies them before the result is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import Node, finished, job, wait_for


def _run_once(server: Node, name: str, command: str, processors: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Create the job, run it, and return its finished execution (the job is deleted afterwards)."""
    response = server.post("/v1/jobs", json=job(name, "@manually", command, processors=processors))
    assert response.status_code == 201, response.text
    try:
        assert server.post(f"/v1/jobs/{name}/run").status_code == 200
        [execution] = wait_for(lambda: finished(server, name, 1), timeout=20, what=f"{name} to finish")
        return execution
    finally:
        server.request("DELETE", f"/v1/jobs/{name}")


def test_files_without_forward_stores_the_path(server: Node, tmp_path: Path) -> None:
    execution = _run_once(
        server, "files-path", "echo written to a file", {"files": {"log_dir": str(tmp_path)}}
    )
    path = tmp_path / f"{execution['id']}.log"
    assert execution["success"] is True
    assert execution["output"] == str(path)
    assert path.read_text() == "written to a file\n"


def test_files_with_forward_keeps_the_output_too(server: Node, tmp_path: Path) -> None:
    processors = {"files": {"log_dir": str(tmp_path / "new"), "forward": "true"}}
    execution = _run_once(server, "files-forward", "echo kept twice", processors)
    assert execution["output"] == "kept twice\n"
    assert (tmp_path / "new" / f"{execution['id']}.log").read_text() == "kept twice\n"


def test_unknown_processor_is_noted_and_the_run_succeeds(server: Node) -> None:
    execution = _run_once(server, "unknown-processor", "echo ran", {"no-such-processor": {}})
    assert execution["success"] is True
    assert execution["output"] == (
        f"ran\nprocessor no-such-processor is not installed on node {server.name}; skipped\n"
    )


def test_log_prints_the_output_in_the_agents_log(server: Node) -> None:
    execution = _run_once(server, "log-processor", "echo seen-in-the-agent-log", {"log": {}})
    assert execution["output"] == "Output in dkron log"
    block = (
        f"----- BEGIN OUTPUT job=log-processor execution={execution['id']} -----\n"
        "seen-in-the-agent-log\n"
        "----- END OUTPUT -----\n"
    )
    wait_for(lambda: block in server.logs(), timeout=10, what="the output block in the server log")


def test_a_bad_processor_config_is_refused_when_the_job_is_saved(server: Node) -> None:
    body = job("bad-processor", "@manually", "true", processors={"fluent": {"port": "x"}})
    response = server.post("/v1/jobs", json=body)
    assert response.status_code == 400
    assert "processors.fluent.port" in response.text
    assert server.get("/v1/jobs/bad-processor").status_code == 404
