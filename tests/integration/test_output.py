"""Live and full output: an execution's output read while it runs (SSE) and after, beyond the record's cap."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from tests.harness import Node, executions, finished, job, pid_alive, wait_for
from tests.sse import Event, events, output_of

TICKER = "for i in $(seq 1 30); do echo line-$i; sleep 0.1; done"
LINES = "".join(f"line-{i}\n" for i in range(1, 31))


def _shell(name: str, command: str) -> dict[str, Any]:
    return job(name, "@manually", command, executor_config={"command": command, "shell": "true"})


def _running_id(server: Node, name: str) -> str:
    found = wait_for(
        lambda: [e for e in executions(server, name) if e["status"] == "running"] or None,
        timeout=20,
        what=f"{name} to start",
    )
    return str(found[0]["id"])


def _follow(url: str, into: list[Event]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(events(url)), daemon=True)
    thread.start()
    return thread


def test_output_arrives_live_in_order_and_late_readers_get_all_of_it(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("live-ticker", TICKER))
    server.post("/v1/jobs/live-ticker/run")
    exec_id = _running_id(server, "live-ticker")
    url = f"{server.url}/v1/jobs/live-ticker/executions/{exec_id}/output"
    first: list[Event] = []
    second: list[Event] = []
    readers = [_follow(url, first)]
    wait_for(lambda: "line-10\n" in output_of(first), timeout=10, what="ten lines, live")
    readers.append(_follow(url, second))  # joins in the middle
    for reader in readers:
        reader.join(timeout=30)
        assert not reader.is_alive(), "the stream did not close at the end of the execution"
    record = finished(server, "live-ticker", 1)
    assert record is not None
    for stream in (first, second):
        assert output_of(stream) == LINES
        assert stream[-1].kind == "end"
        assert stream[-1].data["status"] == "success"
    # Live: the first lines came while the job still had seconds to go.
    arrivals = [e.at for e in first if e.kind == "output"]
    assert first[-1].at - arrivals[0] > 1.5, "the output came all at once at the end"
    late = list(events(url))  # after the end
    assert output_of(late) == LINES
    assert late[-1].kind == "end"
    text = server.get(f"/v1/jobs/live-ticker/executions/{exec_id}/output")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"  # one charset, not two
    assert text.text == LINES
    server.request("DELETE", "/v1/jobs/live-ticker")


def test_full_output_goes_beyond_the_record_cap(server: Node) -> None:
    command = (
        "for i in $(seq 1 20000); do printf 'row-%05d-0123456789012345678901234567890123456789\\n' $i; done"
    )
    server.post("/v1/jobs", json=_shell("big-output", command))
    server.post("/v1/jobs/big-output/run")
    record = wait_for(lambda: finished(server, "big-output", 1), timeout=30, what="the run")[0]
    stored = server.get(f"/v1/jobs/big-output/executions/{record['id']}").json()["output"]
    assert len(stored) <= 256_000
    assert stored.startswith("[output truncated")
    full = server.get(f"/v1/jobs/big-output/executions/{record['id']}/output").text
    rows = full.splitlines()
    assert len(rows) == 20000
    assert rows[0].startswith("row-00001-")
    assert rows[-1].startswith("row-20000-")
    server.request("DELETE", "/v1/jobs/big-output")


def test_output_of_unknown_executions_is_404(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("no-such-run", "true"))
    for execution in ("1-nobody", "not-an-id", "1.2", "*"):
        response = server.get(f"/v1/jobs/no-such-run/executions/{execution}/output")
        assert response.status_code == 404, execution
    assert server.get("/v1/jobs/ghost/executions/1-n1/output").status_code == 404
    server.request("DELETE", "/v1/jobs/no-such-run")


def test_cancel_stops_a_long_job_and_its_children(server: Node, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 300 & echo $! >> {pids}; echo started; sleep 300"
    server.post("/v1/jobs", json=_shell("to-cancel", command))
    server.post("/v1/jobs/to-cancel/run")
    exec_id = _running_id(server, "to-cancel")
    wait_for(lambda: pids.exists() and pids.read_text().strip(), timeout=10, what="the child's pid")
    child = int(pids.read_text().split()[0])
    url = f"/v1/jobs/to-cancel/executions/{exec_id}/cancel"
    accepted = server.post(url)
    assert accepted.status_code == 202
    assert accepted.json()["id"] == exec_id
    record = wait_for(lambda: finished(server, "to-cancel", 1), timeout=20, what="the cancelled run")[0]
    assert record["success"] is False
    assert "cancelled" in server.get(f"/v1/jobs/to-cancel/executions/{exec_id}").json()["output"]
    try:
        wait_for(lambda: not pid_alive(child), timeout=10, what="the child to be killed")
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)
    again = server.post(url)
    assert again.status_code == 409
    assert "has already finished" in again.text
    assert server.post("/v1/jobs/to-cancel/executions/1-nobody/cancel").status_code == 404
    server.request("DELETE", "/v1/jobs/to-cancel")


def test_busy_shows_the_latest_output_of_a_running_execution(server: Node) -> None:
    server.post("/v1/jobs", json=_shell("busy-output", "echo first-line; sleep 30"))
    server.post("/v1/jobs/busy-output/run")
    exec_id = _running_id(server, "busy-output")

    def shown() -> dict[str, Any] | None:
        mine = [e for e in server.get("/v1/busy").json() if e["id"] == exec_id]
        return mine[0] if mine and mine[0].get("output") == "first-line\n" else None

    wait_for(shown, timeout=10, what="the running output in /v1/busy")
    server.post(f"/v1/jobs/busy-output/executions/{exec_id}/cancel")
    wait_for(lambda: finished(server, "busy-output", 1), timeout=20, what="the cancelled run")
    server.request("DELETE", "/v1/jobs/busy-output")
