"""Processors on a real server: the agent that ran the job applies them before the result is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import Node, finished, job, running, wait_for


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


def files_root(node: Node) -> Path:
    """Where the files processor writes without --files-processor-root: <data-dir>/processor-files."""
    return node.data_dir / "processor-files"


def test_files_without_forward_stores_the_path(server: Node) -> None:
    execution = _run_once(
        server, "files-path", "echo written to a file", {"files": {"log_dir": "files-path"}}
    )
    path = files_root(server) / "files-path" / f"{execution['id']}.log"
    assert execution["success"] is True
    assert execution["output"] == str(path)
    assert path.read_text() == "written to a file\n"


def test_files_with_forward_keeps_the_output_too(server: Node) -> None:
    processors = {"files": {"log_dir": "files-forward/new", "forward": "true"}}
    execution = _run_once(server, "files-forward", "echo kept twice", processors)
    assert execution["output"] == "kept twice\n"
    path = files_root(server) / "files-forward" / "new" / f"{execution['id']}.log"
    assert path.read_text() == "kept twice\n"


def test_a_log_dir_outside_the_files_root_is_refused_when_the_job_is_saved(
    server: Node, tmp_path: Path
) -> None:
    body = job("files-anywhere", "@manually", "echo x", processors={"files": {"log_dir": str(tmp_path)}})
    response = server.post("/v1/jobs", json=body)
    assert response.status_code == 400, response.text
    assert "processors.files.log_dir" in response.text
    assert "--files-processor-root" in response.text
    assert server.get("/v1/jobs/files-anywhere").status_code == 404
    assert list(tmp_path.iterdir()) == []


def test_files_processor_root_is_where_files_go(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    node = Node(tmp_path / "data", extra=["--files-processor-root", str(logs)])
    with running(node):
        absolute = _run_once(node, "files-abs", "echo absolute", {"files": {"log_dir": str(logs / "abs")}})
        relative = _run_once(node, "files-rel", "echo relative", {"files": {"log_dir": "rel"}})
    assert (logs / "abs" / f"{absolute['id']}.log").read_text() == "absolute\n"
    assert (logs / "rel" / f"{relative['id']}.log").read_text() == "relative\n"
    assert not (tmp_path / "data" / "processor-files").exists()


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
