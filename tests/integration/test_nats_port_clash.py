"""A port the embedded nats-server needs is taken by someone else: the node stops with a clear message.

Before, the node took "something accepts connections on the port" for "my nats-server is up", so it
joined the stranger (another dkron-nats, a developer's own nats-server) while restarting its own server
every second.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import (
    Node,
    embedded_nats_pid,
    free_port,
    shared_secret,
    spawn_nats_server,
    stop_process,
    wait_for,
)

RESPAWN_POINT = "before-embedded-nats-respawn"


@contextmanager
def stranger_nats(base_dir: Path, port: int, jetstream: bool) -> Iterator[str]:
    """Someone else's nats-server on `port` (no credentials); yields its monitoring URL."""
    base_dir.mkdir(parents=True, exist_ok=True)
    conf = base_dir / "stranger.conf"
    store = f'jetstream {{ store_dir: "{base_dir / "store"}" }}\n' if jetstream else ""
    conf.write_text(f'listen: "127.0.0.1:{port}"\nserver_name: "stranger"\n{store}')
    http_port = free_port()
    proc = spawn_nats_server(conf, http_port, base_dir / "stranger.log")
    monitor = f"http://127.0.0.1:{http_port}"
    try:
        wait_for(lambda: httpx.get(f"{monitor}/healthz", timeout=5).status_code == 200, 20, "the stranger")
        yield monitor
    finally:
        stop_process(proc)


def connections_of(monitor: str) -> list[dict[str, Any]]:
    """Every client connection the stranger has seen, open or closed."""
    found: list[dict[str, Any]] = httpx.get(f"{monitor}/connz?state=all", timeout=5).json()["connections"]
    return found


def streams_of(monitor: str) -> int:
    count: int = httpx.get(f"{monitor}/jsz", timeout=5).json().get("streams", 0)
    return count


def exit_code(node: Node, timeout: float = 30) -> int | None:
    """The node's exit code once it stopped on its own; stops it (and fails) if it keeps running."""
    try:
        return node.wait_exit(timeout)
    finally:
        node.stop(signal.SIGKILL)


def assert_refused(node: Node, code: int | None, address: str, option: str) -> None:
    """The node stopped with exit code 1 and one readable line naming the address and the option."""
    logs = node.logs()
    assert code == 1, f"the node kept running (exit {code}):\n{logs[-3000:]}"
    assert "Traceback" not in logs, logs[-3000:]
    error = logs.rstrip().splitlines()[-1]
    assert error.startswith("Error: "), logs[-3000:]
    assert address in error, error
    assert option in error, error


@pytest.mark.parametrize("jetstream", [True, False], ids=["jetstream", "plain"])
def test_a_taken_nats_listen_port_stops_the_node_without_joining_the_stranger(
    tmp_path: Path, jetstream: bool
) -> None:
    port = free_port()
    with stranger_nats(tmp_path / "stranger", port, jetstream) as monitor:
        node = Node(tmp_path / "node", nats_port=port).start()
        assert_refused(node, exit_code(node), f"127.0.0.1:{port}", "--nats-listen")
        assert [c for c in connections_of(monitor) if "dkron" in c.get("name", "")] == []
        if jetstream:
            assert streams_of(monitor) == 0  # no dkron KV buckets on the stranger


def test_a_taken_cluster_port_stops_the_node(tmp_path: Path) -> None:
    """The route port is listened on after the client port: a clash there must not pass for "ready"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cluster_port = taken.getsockname()[1]
        node = Node(tmp_path / "node", extra=["--nats-cluster-listen", f"127.0.0.1:{cluster_port}"])
        node.extra += ["--nats-routes", f"nats-route://127.0.0.1:{free_port()}"]
        node.extra += ["--nats-secret-file", str(shared_secret(tmp_path / "secret"))]
        node.start()
        code = exit_code(node)
    assert_refused(node, code, f"127.0.0.1:{cluster_port}", "--nats-cluster-listen")


def _stopped(pid: int) -> bool:
    """Whether process `pid` is stopped by a signal (state T in /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def test_a_stranger_on_the_port_after_a_crash_stops_the_node(tmp_path: Path) -> None:
    """kill -9 of the embedded server, and a stranger takes its port before the node restarts it."""
    failpoints = tmp_path / "failpoints"
    failpoints.mkdir()
    node = Node(tmp_path / "node", env={"DKRON_NATS_FAILPOINTS_DIR": str(failpoints)})
    node.start()
    assert node.proc is not None
    try:
        node.wait_leader()
        child = embedded_nats_pid(node)
        assert child is not None
        (failpoints / RESPAWN_POINT).touch()
        os.kill(child, signal.SIGKILL)
        wait_for(
            lambda: _stopped(node.proc.pid) if node.proc else None, 20, "the node to pause before respawn"
        )
        with stranger_nats(tmp_path / "stranger", node.nats_port, jetstream=True):
            os.kill(node.proc.pid, signal.SIGCONT)
            code = exit_code(node)
    finally:
        if node.proc is not None:
            os.kill(node.proc.pid, signal.SIGCONT)
        node.stop(signal.SIGKILL)
    assert_refused(node, code, f"127.0.0.1:{node.nats_port}", "--nats-listen")
