"""The container image: the `Dockerfile` builds, and a server and an agent run from it become healthy by the
image's own HEALTHCHECK, the agent joined to the server with credentials the server made.

Needs a Docker engine (and its registry for the Dockerfile's base images). Without an engine the test is
skipped with the reason; with DKRON_NATS_TEST_BACKEND=containers it fails instead (see docs/testing.md).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.image import DockerImage
from testcontainers.core.network import Network

from tests.cluster import free_ports
from tests.containers import ensure_images_for, publish, published_host, require_engine
from tests.harness import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the build runs npm ci and pip wheel

REPO = Path(__file__).resolve().parents[2]
API_PORT = 8080  # the image's DKRON_NATS_HTTP_ADDR, which its HEALTHCHECK probes
# HEALTHCHECK --interval=10s --start-period=30s: "healthy" comes with the first probe that passes.
HEALTHY_WITHIN = 90.0


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_engine("the image test")
    ensure_images_for(nats=False)
    with DockerImage(path=REPO, tag=f"dkron-nats-test:{uuid.uuid4().hex[:12]}", clean_up=True) as built:
        yield str(built)


def health(container: DockerContainer) -> dict[str, Any]:
    """The engine's record of the HEALTHCHECK: {"Status": starting|healthy|unhealthy, "Log": [...]}."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    state: dict[str, Any] = wrapped.attrs["State"]
    if not state["Running"]:
        logs = wrapped.logs().decode(errors="replace")[-3000:]
        raise AssertionError(f"container {wrapped.name} exited ({state['ExitCode']}):\n{logs}")
    found: dict[str, Any] = state.get("Health") or {}
    return found


def wait_healthy(container: DockerContainer, what: str) -> None:
    def healthy() -> bool:
        record = health(container)
        if record.get("Status") == "unhealthy":
            raise AssertionError(f"{what} is unhealthy: {record.get('Log', [])[-3:]}")
        return record.get("Status") == "healthy"

    assert health(container), f"the image of {what} has no HEALTHCHECK"
    wait_for(healthy, HEALTHY_WITHIN, f"{what} to be healthy by the image's HEALTHCHECK")


def agent_credentials(server: DockerContainer, node: str) -> bytes:
    """Agent credentials made in the server container from its cluster secret, as deploy/README.md says."""
    command = ["dkron-nats", "nats-credentials", "--role", "agent", "--node", node]
    code, output = server.get_wrapped_container().exec_run(command, stderr=False)
    assert code == 0, output
    assert isinstance(output, bytes)
    assert b"NATS USER JWT" in output, output
    return output


def test_server_and_agent_containers_become_healthy_and_the_agent_joins(image: str) -> None:
    token = secrets.token_hex(24)
    host, (api_port,) = published_host(), free_ports(1)
    with Network() as network:
        server = (
            DockerContainer(image)
            .with_network(network)
            .with_network_aliases("server")
            .with_env("DKRON_NATS_BOOTSTRAP_TOKEN", token)
            .with_command(["agent", "--server", "--node-name", "server", "--nats-listen", "0.0.0.0:4222"])
        )
        api = httpx.Client(base_url=f"http://{host}:{api_port}", timeout=10)
        with publish(server, API_PORT, host, api_port), api:
            wait_healthy(server, "the server container")
            assert api.get("/health").status_code == 200
            assert api.get("/v1/members").status_code == 401  # the image turns authentication on

            agent = (
                DockerContainer(image)
                .with_network(network)
                .with_copy_into_container(agent_credentials(server, "agent1"), "/tmp/agent1.creds")
                .with_command(
                    [
                        *("agent", "--node-name", "agent1", "--nats-url", "nats://server:4222"),
                        *("--nats-creds", "/tmp/agent1.creds", "--tag", "role=image"),
                    ]
                )
            )
            with agent:
                wait_healthy(agent, "the agent container")

                def agent_listed() -> dict[str, Any] | None:
                    response = api.get("/v1/members", headers={"Authorization": f"Bearer {token}"})
                    members = {m["Name"]: m for m in response.json()}
                    return (
                        members.get("agent1")
                        if members.get("agent1", {}).get("statusText") == "alive"
                        else None
                    )

                member = wait_for(agent_listed, 30, "agent1 among the server's members")
                assert member["Tags"]["role"] == "image"
