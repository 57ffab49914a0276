"""SIGTERM on an agent: it stops taking work, lets short runs finish, and ends the rest with the reason."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from dkron_nats.natsserver import nats_server_binary
from tests.harness import Node, executions, finished, free_port, job, pid_alive, running, wait_for


def _on_the_agent(name: str, command: str) -> dict[str, Any]:
    body = job(name, "@manually", command, tags={"role": "worker"})
    body["executor_config"]["shell"] = "true"
    return body


def test_sigterm_on_an_agent_drains_within_the_grace_and_leaves_nothing_running(tmp_path: Path) -> None:
    server = Node(tmp_path / "server")
    agent = Node(tmp_path / "agent", name="worker1", server=False, nats_creds_from=server)
    pids = tmp_path / "pids"
    with running(server):
        agent.extra = [
            "--nats-url",
            f"nats://127.0.0.1:{server.nats_port}",
            "--tag",
            "role=worker",
            "--shutdown-grace",
            "3s",
        ]
        with running(agent, leader=False):
            wait_for(lambda: len(server.get("/v1/members").json()) == 2, timeout=20, what="the agent")
            server.post("/v1/jobs", json=_on_the_agent("short", "sleep 1; echo done"))
            server.post("/v1/jobs", json=_on_the_agent("long", f"echo $$ >> {pids}; sleep 120"))
            for name in ("short", "long"):
                server.post(f"/v1/jobs/{name}/run")
            wait_for(
                lambda: all(
                    any(e["status"] == "running" for e in executions(server, n)) for n in ("short", "long")
                ),
                timeout=20,
                what="both runs to start",
            )
            assert agent.proc is not None
            stopped_at = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            code = agent.wait_exit(timeout=30)
            took = time.monotonic() - stopped_at
        assert code == 0
        assert took < 3 + 5, f"the agent took {took:.1f}s to stop with a 3 s grace"
        short = wait_for(lambda: finished(server, "short", 1), timeout=20, what="the short run's record")[0]
        assert short["success"] is True
        assert short["output"] == "done\n"
        long = wait_for(lambda: finished(server, "long", 1), timeout=20, what="the long run's record")[0]
        assert long["success"] is False
        assert "the agent is shutting down" in long["output"]
        assert not [e for n in ("short", "long") for e in executions(server, n) if e["status"] == "running"]
        job_pid = int(pids.read_text().split()[0])
        try:
            wait_for(lambda: not pid_alive(job_pid), timeout=10, what="the long job's process to be killed")
        finally:
            if pid_alive(job_pid):
                os.kill(job_pid, signal.SIGKILL)


def test_sigterm_while_waiting_for_jetstream_stops_the_node(tmp_path: Path) -> None:
    """A node whose NATS has no JetStream (yet) waits for it, and still stops at once when told to."""
    port = free_port()
    plain = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        agent = Node(tmp_path / "agent", name="waiting1", server=False)
        agent.extra = ["--nats-url", f"nats://127.0.0.1:{port}"]
        agent.start()
        try:
            wait_for(
                lambda: "JetStream is not ready" in agent.logs(), timeout=30, what="the wait for JetStream"
            )
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            code = agent.wait_exit(timeout=15)
            assert code == 0, agent.logs()[-2000:]
            assert time.monotonic() - stopped_at < 5
            assert "stopped before JetStream was ready" in agent.logs()
        finally:
            agent.stop()
    finally:
        plain.terminate()
        plain.wait(timeout=10)
