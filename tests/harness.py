"""Real processes for tests: dkron-nats nodes on free ports with temporary data dirs.

Every process started here is stopped by its PID when the test ends, even when the test fails.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dkron_nats import natsroles
from dkron_nats.natsjwt import (
    SECRET_FILE_NAME,
    ClusterKeys,
    new_secret,
    read_secret,
    user_credentials,
    write_private,
)
from dkron_nats.natsserver import nats_server_binary

T = TypeVar("T")
DKRON_NATS = [sys.executable, "-m", "dkron_nats"]


STARTED: list[Node] = []
"""Every node started in this process, newest last: a failing test's logs come from here even when
its nodes were local variables, not fixtures (tests/conftest.py attaches them to the report)."""


PORT_SPAN = 5_500
"""Ports per pytest worker (up to 5), all below the kernel's ephemeral range (32768-60999 by default)."""


def _ports_of_this_worker() -> Iterator[int]:
    """This worker's ports in a random order, over and over (a port is handed out again only after all the
    others: whatever had it is long gone)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = 4_000 + (index % 5) * PORT_SPAN
    ports = list(range(start, start + PORT_SPAN))
    shuffle = random.Random(os.getpid()).shuffle
    while True:
        shuffle(ports)
        yield from ports


_NEXT_PORT = _ports_of_this_worker()


def free_port() -> int:
    """A port nothing listens on now, from this worker's own range below the ephemeral ports, and not one
    handed out recently: the OS offers an ephemeral port again as soon as the probe closes it, and a node
    binds its ports only when it starts (a node was given the same port for its API and its NATS server);
    and an outgoing connection of another test can take an ephemeral port while a node restarts on it (its
    nats-server then could not listen)."""
    for port in _NEXT_PORT:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("unreachable: the ports cycle")


def wait_for(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def embedded_nats_pid(node: Node) -> int | None:
    """The pid of the nats-server that `node` embeds (found by its config file), if one runs."""
    return pid_with_argument(str(node.data_dir / "nats-server.conf"), "nats-server")


def pid_with_argument(argument: str, program: str) -> int | None:
    """The pid of a running `program` given `argument` (a nats-server by its config file), if any."""
    wanted = argument.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv and Path(argv[0].decode(errors="replace")).name == program:
            return int(entry.name)
    return None


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s; returns once it is gone."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _stop_with_parent() -> None:
    """If the test run itself dies, its nodes get SIGTERM instead of running on as orphans."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn_nats_server(
    conf: Path, http_port: int, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A nats-server for a test (monitoring on `http_port`, output in `log_path`); the caller stops it."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [nats_server_binary(), "-c", str(conf), "-m", str(http_port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_stop_with_parent,
        )


@dataclass
class Node:
    """One `dkron-nats agent` process."""

    data_dir: Path
    name: str = "n1"
    server: bool = True
    http_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    nats_creds_from: Node | Path | None = None
    """Log in to NATS with credentials minted from this server's (or this file's) cluster secret: a
    server's own, or an agent's for this node's name. For nodes given `--nats-url` of an embedded NATS."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def args(self) -> list[str]:
        args = [*DKRON_NATS, "agent", "--node-name", self.name, "--data-dir", str(self.data_dir)]
        args += ["--http-addr", f"127.0.0.1:{self.http_port}", "--nats-listen", f"127.0.0.1:{self.nats_port}"]
        if self.server:
            args.append("--server")
        if self.nats_creds_from is not None:
            role = "server" if self.server else "agent"
            args += ["--nats-creds", str(credentials_for(self.nats_creds_from, role, self.name))]
        return [*args, "--lease-ttl", "4", *self.extra]

    @property
    def secret_file(self) -> Path:
        """The cluster secret of this node's embedded NATS (its --nats-secret-file, or the default)."""
        if "--nats-secret-file" in self.extra:
            return Path(self.extra[self.extra.index("--nats-secret-file") + 1])
        return self.data_dir / SECRET_FILE_NAME

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def nats_options(self, role: str = "server", name: str = "") -> dict[str, Any]:
        """`nats.connect` keyword arguments for this node's embedded NATS, logged in as `role` (server
        by default: every subject; `agent` as node `name`, with its inbox; `trigger` with its inbox)."""
        options: dict[str, Any] = {
            "servers": [self.nats_url],
            "user_credentials": str(credentials_for(self, role, name or role)),
        }
        if role == "agent":
            options["inbox_prefix"] = natsroles.agent_inbox(name)
        elif role == "trigger":
            options["inbox_prefix"] = natsroles.TRIGGER_INBOX
        return options

    def start(self) -> Node:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            self.args(), stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_stop_with_parent
        )
        log.close()
        STARTED.append(self)
        return self

    def wait_leader(self, timeout: float = 30.0) -> Node:
        wait_for(lambda: self.get("/health").json().get("leader"), timeout, f"{self.name} to lead")
        return self

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=15, **kw)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=15, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        """Stop the process (SIGTERM: gracefully); SIGKILL it if it does not exit in time."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        return proc.returncode

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit on its own (after a signal sent elsewhere); its exit code."""
        proc = self.proc
        if proc is None:
            return None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def credentials_for(source: Node | Path, role: str, name: str = "") -> Path:
    """A `.creds` file for `role` (an agent: node `name`) made from the cluster secret of `source`: a
    node whose embedded NATS created or was given it (waited for), or a secret file."""
    secret = source.secret_file if isinstance(source, Node) else source
    wait_for(secret.exists, 30, f"the cluster secret {secret}")
    keys = ClusterKeys.from_secret(read_secret(secret))
    creds = secret.parent / "creds" / f"{role}-{name or role}.creds"
    write_private(creds, user_credentials(keys, name or role, natsroles.for_role(role, name)))
    return creds


def shared_secret(directory: Path) -> Path:
    """A new cluster secret file for embedded servers that cluster together (`--nats-secret-file`)."""
    path = directory / SECRET_FILE_NAME
    directory.mkdir(parents=True, exist_ok=True)
    new_secret(path)
    return path


@contextmanager
def running(node: Node, leader: bool = True) -> Iterator[Node]:
    node.start()
    try:
        if leader:
            node.wait_leader()
        yield node
    finally:
        node.stop()


def job(name: str, schedule: str = "@manually", command: str = "true", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "schedule": schedule,
        "executor": "shell",
        "executor_config": {"command": command},
    }
    body.update(fields)
    return body


def executions(node: Node, name: str) -> list[dict[str, Any]]:
    response = node.get(f"/v1/jobs/{name}/executions")
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def finished(node: Node, name: str, count: int) -> list[dict[str, Any]] | None:
    """The job's executions once at least `count` have finished, else None."""
    done = [e for e in executions(node, name) if e["finished_at"] != "0001-01-01T00:00:00Z"]
    return done if len(done) >= count else None


def spread_as_assigned(servers: list[Node]) -> None:
    """Wait until every partition is owned by its assignee among `servers` (hand-overs done), as the first
    of them says: every one of them owns partitions (it sees them all live) and every partition's owner is its
    assignee. One partition has no assignee: any server may hold it."""
    names = {server.name for server in servers}

    def settled() -> bool:
        response = servers[0].get("/v1/partitions")
        if response.status_code != 200:  # 503: JetStream re-electing after a kill
            return False
        rows = response.json()
        if len(rows) == 1:
            return True
        owners = {row["owner"] for row in rows}
        return owners == names and all(row["owner"] == row["assignee"] for row in rows)

    wait_for(settled, timeout=60, what="the partitions spread as assigned")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's series in `text` that carry all `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total
