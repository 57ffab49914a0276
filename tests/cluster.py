"""A real 3-node NATS JetStream cluster of `nats-server` processes, from the unchanged `deploy/nats.conf`.

The default backend of the `nats_cluster` fixture (`tests.natsbackend` says what a backend is;
DKRON_NATS_TEST_BACKEND=containers runs the same tests on `nats` containers instead: `tests.containers`).

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

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import free_port, spawn_nats_server
from tests.natsbackend import NatsCluster, NatsNode, new_nats_cluster, wait_for_async

__all__ = [
    "NatsCluster",
    "NatsNode",
    "ProcessNatsCluster",
    "ProcessNatsNode",
    "nats_cluster",
    "wait_for_async",
]

NATS_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nats.conf"


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (harness.free_port: below the ephemeral range)."""
    return [free_port() for _ in range(count)]


@dataclass
class ProcessNatsNode(NatsNode):
    """One `nats-server -c deploy/nats.conf` process. `routes` are the route URLs of its peers."""

    name: str
    store_dir: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    routes: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def route_address(self) -> str:
        return f"127.0.0.1:{self.cluster_port}"

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

    def start(self) -> ProcessNatsNode:
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

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ProcessNatsCluster(NatsCluster):
    """`size` `ProcessNatsNode`s (n1, n2, ...) routed to each other, on free loopback ports."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        self.base_dir = base_dir
        ports = free_ports(3 * size)
        self.nodes: list[ProcessNatsNode] = [
            ProcessNatsNode(
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

    def _start_nodes(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every running node by PID, then SIGKILL any still running after `timeout` s."""
        for node in self.nodes:
            proc = node.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node._reap(deadline)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started 3-node JetStream cluster of the selected backend (`tests.natsbackend`: nats-server processes
    unless DKRON_NATS_TEST_BACKEND=containers); all of it is stopped after the test, pass or fail."""
    with new_nats_cluster(tmp_path / "nats-cluster") as cluster:
        yield cluster
