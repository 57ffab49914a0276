"""Executor plugins on a real server: the out-of-tree `tcpcheck` package, the built-in `nats` executor, and
a job whose executor no node has.

The server is the shared session node (`server` fixture); each test uses its own job names and subjects.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats
import pytest

from tests.cluster import wait_for_async
from tests.harness import Node, finished, free_port, wait_for
from tests.natssecure import nats_server_with

ZERO = "0001-01-01T00:00:00Z"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def plugin_job(name: str, executor: str, config: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "schedule": "@manually", "executor": executor, "executor_config": config}


def run_once(server: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Save the job, run it, and return its finished execution."""
    saved = server.post("/v1/jobs", json=body)
    assert saved.status_code == 201, saved.text
    assert server.post(f"/v1/jobs/{body['name']}").status_code == 200
    [execution] = wait_for(lambda: finished(server, body["name"], 1), 20, f"{body['name']} to finish")
    return execution


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port with a listening socket: the kernel completes TCP handshakes into its backlog."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


# --------------------------------------------------------------------------- tcpcheck (out-of-tree)


def test_tcpcheck_job_passes_against_a_listening_socket(server: Node, listening_port: int) -> None:
    name = unique("tcp-open")
    execution = run_once(
        server, plugin_job(name, "tcpcheck", {"host": "127.0.0.1", "port": str(listening_port)})
    )
    assert execution["success"] is True
    assert f"connected to 127.0.0.1:{listening_port} in " in execution["output"]


def test_tcpcheck_job_fails_against_a_closed_port(server: Node) -> None:
    name, port = unique("tcp-closed"), free_port()
    execution = run_once(server, plugin_job(name, "tcpcheck", {"host": "127.0.0.1", "port": str(port)}))
    assert execution["success"] is False
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in execution["output"]


def test_tcpcheck_config_is_checked_when_the_job_is_saved(server: Node) -> None:
    name = unique("tcp-bad")
    response = server.post("/v1/jobs", json=plugin_job(name, "tcpcheck", {"host": "db", "port": "http"}))
    assert response.status_code == 400
    assert 'invalid "port" "http"' in response.text
    assert server.get(f"/v1/jobs/{name}").status_code == 404


# --------------------------------------------------------------------------- an executor no node has


def test_job_with_a_missing_executor_fails_naming_it(server: Node) -> None:
    execution = run_once(server, plugin_job(unique("nosuch"), "nosuch", {"anything": "x"}))
    assert execution["success"] is False
    assert execution["finished_at"] != ZERO
    assert "nosuch" in execution["output"]


# --------------------------------------------------------------------------- nats (built-in)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_nats_job_publishes_on_the_nats_its_url_names(server: Node, tmp_path: Path) -> None:
    """Not the node's own NATS (its credentials allow dkron's subjects only): a NATS of the job's."""
    name, subject = unique("nats-pub"), f"reports.{uuid.uuid4().hex}"
    with nats_server_with(tmp_path / "target", "") as url:
        await _publish_and_check(server, name, subject, url)


async def _publish_and_check(server: Node, name: str, subject: str, url: str) -> None:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        sub = await nc.subscribe(subject)
        await nc.flush()
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as api:
            config = {"url": url, "subject": subject, "message": "daily report ready"}
            body = plugin_job(name, "nats", config)
            assert (await api.post("/v1/jobs", json=body)).status_code == 201
            assert (await api.post(f"/v1/jobs/{name}")).status_code == 200
            with anyio.fail_after(20):
                msg = await anext(sub.messages)

            async def finished_execution() -> dict[str, Any] | None:
                records: list[dict[str, Any]] = (await api.get(f"/v1/jobs/{name}/executions")).json()
                done = [r for r in records if r["finished_at"] != ZERO]
                return done[0] if done else None

            execution = await wait_for_async(finished_execution, 20, f"{name} to finish")
    finally:
        await nc.close()
    assert msg.data == b"daily report ready"
    assert msg.headers is not None
    assert msg.headers["Dkron-Job"] == name
    assert msg.headers["Dkron-Execution-Id"] == execution["id"]
    assert execution["success"] is True
    assert f'published 18 bytes on subject "{subject}"' in execution["output"]


def test_nats_config_is_checked_when_the_job_is_saved(server: Node) -> None:
    name = unique("nats-bad")
    response = server.post("/v1/jobs", json=plugin_job(name, "nats", {"subject": "reports.*"}))
    assert response.status_code == 400
    assert 'invalid "subject" "reports.*"' in response.text
