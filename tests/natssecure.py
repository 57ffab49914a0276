"""A real nats-server started from the unchanged `deploy/nats-secure.conf`, with TLS and passwords.

The certificates come from a throwaway `trustme` CA (the server's is valid for 127.0.0.1 and localhost);
ports are free loopback ports, the store and log live in a temporary directory, and the process is stopped
by its PID when the fixture ends, even when the test fails (and dies with pytest through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nkeys
import pytest
import trustme

from tests.harness import free_port, spawn_nats_server, stop_process, wait_for

SECURE_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nats-secure.conf"
USERS = ("server", "agent1", "agent2", "trigger")
TRIGGER_INBOX = "_INBOX_trigger"
"""The inbox prefix the example config gives the trigger user."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA and a server certificate it signed."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, *names: str) -> TlsFiles:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        issued = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        files = cls(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
        ca.cert_pem.write_to_path(str(files.ca))
        issued.cert_chain_pems[0].write_to_path(str(files.cert))
        issued.private_key_pem.write_to_path(str(files.key))
        return files


@dataclass
class SecureNats:
    """One `nats-server -c deploy/nats-secure.conf` process."""

    base_dir: Path
    tls: TlsFiles
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(
        default_factory=lambda: {u: f"{u}-pw-{os.urandom(6).hex()}" for u in USERS}
    )
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "nats-server.log"

    def env(self) -> dict[str, str]:
        """The variables `deploy/nats-secure.conf` reads."""
        return {
            "NATS_NAME": "secure1",
            "NATS_PORT": str(self.port),
            "NATS_STORE": str(self.base_dir / "store"),
            "NATS_TLS_CERT": str(self.tls.cert),
            "NATS_TLS_KEY": str(self.tls.key),
            **{f"DKRON_{user.upper()}_PASSWORD": password for user, password in self.passwords.items()},
        }

    def login_args(self, user: str, password: str | None = None) -> list[str]:
        """dkron-nats options to connect as `user` (with its own password unless another is given)."""
        password = self.passwords[user] if password is None else password
        return [
            *("--nats-url", self.url, "--nats-tls-ca", str(self.tls.ca)),
            *("--nats-user", user, "--nats-password", password),
        ]

    def start(self) -> SecureNats:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start nats-server from the main thread (PR_SET_PDEATHSIG is per thread)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn_nats_server(SECURE_CONF, self.http_port, self.log_path, self.env())
        wait_for(self._healthy, 20, "the secure nats-server to be ready")
        return self

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited:\n{self.logs()[-3000:]}")
        response = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=5)
        return response.status_code == 200

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def violations(self, user: str) -> list[str]:
        """The permission violations the server logged for `user`'s connections."""
        return [line for line in self.logs().splitlines() if "Permissions Violation" in line and user in line]


@pytest.fixture
def secure_nats(tmp_path: Path) -> Iterator[SecureNats]:
    """A started nats-server with the example permissions; stopped after the test, pass or fail."""
    server = SecureNats(tmp_path / "secure-nats", TlsFiles.create(tmp_path / "tls"))
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def nats_server_with(base_dir: Path, settings: str) -> Iterator[str]:
    """A nats-server with JetStream and extra config `settings` on a free port; yields its nats:// URL."""
    base_dir.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    conf = base_dir / "nats-server.conf"
    store = json.dumps(str(base_dir / "store"))
    conf.write_text(f"host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {store} }}\n{settings}\n")
    proc = spawn_nats_server(conf, http_port, base_dir / "nats-server.log")
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200, 20)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def user_nkey_seed() -> bytes:
    """A new NKey user seed (`SU...`)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed
