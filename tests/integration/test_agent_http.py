"""What an operator probes and scrapes beyond the API: `/debug/vars` on servers, and the small HTTP listener
of an agent (`--http-addr` on a node without `--server`: `/health`, `/metrics`, `/debug/vars`, nothing else).

One server and one agent serve the module; the last test stops the server (the agent's NATS goes away).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Node, finished, job, running, wait_for

SECRET = "hunter2-very-secret"
URL_SECRET = "pw-in-a-url-0123"
WORKER = {"role": "worker"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    base = tmp_path_factory.mktemp("agent-http")
    server = Node(base / "server", extra=["--mail-password", SECRET])
    agent = Node(base / "agent", name="a1", server=False, nats_creds_from=server)
    agent.extra = [
        *["--nats-url", server.nats_url, "--tag", "role=worker", "--mail-password", SECRET],
        f"--nats-executor-url=nats://user:{URL_SECRET}@127.0.0.1:1",
    ]
    with running(server), running(agent, leader=False):
        wait_for(lambda: len(server.get("/v1/members").json()) == 2, timeout=30, what="the agent to join")
        yield server, agent


def _series(text: str) -> dict[str, float]:
    """`name{label="v",...}` -> value, for every sample of a Prometheus exposition."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


def _assert_debug_vars(response: httpx.Response, *expected_args: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    cmdline = body["cmdline"]
    assert isinstance(cmdline, list)
    assert "agent" in cmdline
    for arg in expected_args:
        assert arg in cmdline, cmdline
    assert SECRET not in response.text, "a secret of the command line"
    assert URL_SECRET not in response.text, "a URL's password on the command line"
    assert "***" in cmdline, cmdline
    memstats = body["memstats"]
    for key in ("Alloc", "HeapAlloc", "Sys", "HeapObjects"):
        assert isinstance(memstats[key], int), (key, memstats)
        assert memstats[key] > 0, (key, memstats)
    assert isinstance(memstats["NumGC"], int)


def test_a_server_answers_debug_vars_with_its_masked_command_line_and_memory(
    cluster: tuple[Node, Node],
) -> None:
    server, _ = cluster
    _assert_debug_vars(server.get("/debug/vars"), "--server", "--mail-password")


def test_an_agent_serves_health_metrics_and_debug_vars_on_its_http_addr(cluster: tuple[Node, Node]) -> None:
    server, agent = cluster
    health = wait_for(lambda: agent.get("/health"), timeout=10, what="the agent's /health")
    assert health.status_code == 200
    assert health.json() == {"status": "healthy", "nats": "connected"}
    metrics = agent.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert _series(metrics.text)["dkron_executions_running{}"] == 0.0

    server.post("/v1/jobs", json=job("on-agent", command="true", tags=WORKER)).raise_for_status()
    assert server.post("/v1/jobs/on-agent/run").status_code in (200, 202)
    ran = wait_for(lambda: finished(server, "on-agent", 1), timeout=20, what="the run on the agent")
    assert ran[0]["node_name"] == "a1"
    assert ran[0]["success"] is True
    count = 'dkron_execution_seconds_count{executor="shell",result="success"}'
    scraped = wait_for(lambda: _series(agent.get("/metrics").text).get(count), timeout=10, what=count)
    assert scraped == 1.0

    _assert_debug_vars(agent.get("/debug/vars"), "--nats-url", "--mail-password")
    assert agent.proc is not None
    assert _listening_sockets(agent.proc.pid) == [f"0100007F:{agent.http_port:04X}"], "only --http-addr"
    assert agent.get("/v1/jobs").status_code == 404, "an agent's listener serves no API"


def _listening_sockets(pid: int) -> list[str]:
    """`address:port` (hex, as /proc shows it) of every TCP socket process `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1])
    return found


class _NoHttpAddr(Node):
    def args(self) -> list[str]:
        args = super().args()
        at = args.index("--http-addr")
        return args[:at] + args[at + 2 :]


def test_an_agent_without_http_addr_listens_on_no_port(
    cluster: tuple[Node, Node], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = cluster
    monkeypatch.delenv("DKRON_NATS_HTTP_ADDR", raising=False)
    quiet = _NoHttpAddr(tmp_path, name="a2", server=False, nats_creds_from=server)
    quiet.extra = ["--nats-url", server.nats_url]
    with running(quiet, leader=False):
        wait_for(lambda: len(server.get("/v1/members").json()) == 3, timeout=30, what="the second agent")
        assert quiet.proc is not None
        assert _listening_sockets(quiet.proc.pid) == []


def test_an_agent_answers_503_while_its_nats_is_gone(cluster: tuple[Node, Node]) -> None:
    """Last in the module: stops the server, whose embedded NATS the agent uses."""
    server, agent = cluster
    assert agent.get("/health").status_code == 200
    server.stop()

    def refused() -> httpx.Response | None:
        response = agent.get("/health")
        return response if response.status_code == 503 else None

    gone = wait_for(refused, timeout=20, what="a 503 from the agent")
    assert gone.json() == {"status": "unhealthy", "nats": "disconnected"}
    assert agent.get("/metrics").status_code == 200, "the process still answers: liveness holds"
