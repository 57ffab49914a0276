"""Shell jobs at their limits on a real server: a flood of output, and children that outlive a timeout."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.harness import Node, finished, job, pid_alive, running, wait_for

OUTPUT_LIMIT = 256_000


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _shell(name: str, command: str, **config: str) -> dict[str, object]:
    return job(name, "@manually", command, executor_config={"command": command, "shell": "true", **config})


def test_fifty_megabytes_of_output_end_in_a_bounded_record(data_dir: Path) -> None:
    command = "yes 0123456789abcdef | head -c 50000000; echo; echo THE-END"
    with running(Node(data_dir)) as node:
        assert node.proc is not None
        node.post("/v1/jobs", json=_shell("flood", command))
        node.post("/v1/jobs", json=_shell("warm-up", "echo hi"))
        node.post("/v1/jobs/warm-up/run")
        wait_for(lambda: finished(node, "warm-up", 1), timeout=20, what="a warm-up run")
        pid = node.proc.pid
        before = _rss_kib(pid)
        peak = before

        def done() -> list[dict[str, object]] | None:
            nonlocal peak
            peak = max(peak, _rss_kib(pid))
            return finished(node, "flood", 1)

        node.post("/v1/jobs/flood/run")
        record = wait_for(done, timeout=90, what="the 50 MB job to finish")[0]
        output = str(node.get(f"/v1/jobs/flood/executions/{record['id']}").json()["output"])
    assert record["success"] is True
    assert len(output.encode()) <= OUTPUT_LIMIT
    assert output.startswith("[output truncated: the first 49,")
    assert output.endswith("\nTHE-END\n")
    grew_mib = (peak - before) / 1024
    assert grew_mib < 40, f"the server grew by {grew_mib:.0f} MiB while a job printed 50 MB"


def test_children_outliving_a_timeout_are_killed(server: Node, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 300 & echo $! >> {pids}; (sleep 300 & echo $! >> {pids}; wait) & wait"
    server.post("/v1/jobs", json=_shell("outlive", command, timeout="1s"))
    server.post("/v1/jobs/outlive/run")
    record = wait_for(lambda: finished(server, "outlive", 1), timeout=30, what="the timed-out run")[0]
    assert record["success"] is False
    assert "execution time exceeding defined timeout 1s" in str(record["output"])
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    try:
        wait_for(lambda: not any(pid_alive(p) for p in children), timeout=10, what="no process left")
    finally:
        for pid in children:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    server.request("DELETE", "/v1/jobs/outlive")
