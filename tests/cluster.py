"""A real 3-node NATS JetStream cluster for tests, started from the unchanged `deploy/nats.conf`.

Every node runs `nats-server -c deploy/nats.conf -m <http port>`; only the environment differs per node
(NATS_NAME, NATS_PORT, NATS_CLUSTER_PORT, NATS_STORE, NATS_ROUTES). The `-m` flag adds the monitoring
endpoint (/healthz, /jsz, /varz) without touching the file. Ports are free loopback ports, stores live in
a temporary directory, and every process is stopped by its PID when the cluster (or the `nats_cluster`
fixture) exits, even when a test fails. Each process also gets PR_SET_PDEATHSIG (as in `tests.harness`),
so it dies with the test run if pytest itself is killed.

Start nodes from the main thread: the parent-death signal fires when the *thread* that forked the child
exits, so a node started from a worker thread (e.g. `anyio.to_thread.run_sync`) dies with that thread.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx
import nats.errors
import pytest

from tests.harness import free_port, spawn_nats_server, wait_for

T = TypeVar("T")
NATS_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nats.conf"


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all sockets are held open together, so no port repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


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


@dataclass
class NatsNode:
    """One `nats-server -c deploy/nats.conf` process. `routes` are the route URLs of its peers."""

    name: str
    store_dir: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    routes: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://127.0.0.1:{self.cluster_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir.parent / f"{self.name}.log"

    @property
    def pid(self) -> int:
        """PID of the current (or last) process."""
        if self.proc is None:
            raise RuntimeError(f"nats node {self.name} was never started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def env(self) -> dict[str, str]:
        """The variables `deploy/nats.conf` reads (NATS_ROUTES is a bracketed list: see the file)."""
        return {
            "NATS_NAME": self.name,
            "NATS_PORT": str(self.port),
            "NATS_CLUSTER_PORT": str(self.cluster_port),
            "NATS_STORE": str(self.store_dir),
            "NATS_ROUTES": "[" + ", ".join(self.routes) + "]",
        }

    def start(self) -> NatsNode:
        """Start (or restart, with the same ports and store) the server; does not wait for readiness."""
        if self.alive():
            raise RuntimeError(f"nats node {self.name} is already running (pid {self.pid})")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start nats nodes from the main thread (PR_SET_PDEATHSIG is per thread)")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn_nats_server(NATS_CONF, self.http_port, self.log_path, self.env())
        return self

    def kill(self) -> int | None:
        """SIGKILL (no graceful shutdown), and reap it."""
        return self.stop(sig=signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` (default SIGTERM), then SIGKILL if it has not exited after `timeout` s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self._reap(time.monotonic() + timeout)

    def _reap(self, deadline: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        return proc.returncode

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

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class NatsCluster:
    """Three `NatsNode`s (n1, n2, n3) routed to each other. Use as a context manager or via `nats_cluster`."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        self.base_dir = base_dir
        ports = free_ports(3 * size)
        self.nodes = [
            NatsNode(
                name=f"n{i + 1}",
                store_dir=base_dir / f"n{i + 1}" / "store",
                port=ports[3 * i],
                cluster_port=ports[3 * i + 1],
                http_port=ports[3 * i + 2],
            )
            for i in range(size)
        ]
        for node in self.nodes:
            node.routes = [peer.route_url for peer in self.nodes if peer is not node]

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
            for node in self.nodes:
                node.start()
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

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every running node by PID, then SIGKILL any still running after `timeout` s."""
        for node in self.nodes:
            proc = node.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node._reap(deadline)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started 3-node JetStream cluster; all its processes are stopped after the test, pass or fail."""
    with NatsCluster(tmp_path / "nats-cluster") as cluster:
        yield cluster
