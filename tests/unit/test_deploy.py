"""The deployment files are checked without a container engine or systemd running them.

- Compose: every node's command and environment are run through `dkron-nats agent --print-config`, so a
  flag the CLI does not know or a bad combination fails here; routes and NATS URLs must name services of
  the file, and every named volume is declared. Secure by default: API auth with a required bootstrap token,
  NATS credentials for every node (servers share the generated cluster secret, each agent has its own
  credentials), and no NATS port published.
- systemd: `systemd-analyze verify` on each unit (its ExecStart pointed at this checkout's dkron-nats).
- Dockerfile: what it copies exists, and it starts the console script with a health check on /health, which
  is run here against a stand-in listener: healthy on 200 only, on the port of DKRON_NATS_HTTP_ADDR.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dkron_nats import natsroles
from dkron_nats.natsjwt import ClusterKeys, new_secret, read_secret, user_credentials, write_private

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
CLI = Path(sys.executable).with_name("dkron-nats")


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _nodes() -> dict[str, dict[str, Any]]:
    """The services that run a dkron-nats node (not the one-off credentials service)."""
    return {name: s for name, s in _services().items() if s.get("command", [""])[0] == "agent"}


def _container_files(tmp_path: Path, node: str) -> dict[str, str]:
    """Stand-ins for the files the credentials service writes into the volumes, by container path."""
    secret = tmp_path / "nats-secret"
    if not secret.exists():
        new_secret(secret)
    creds = tmp_path / f"{node}.creds"
    keys = ClusterKeys.from_secret(read_secret(secret))
    write_private(creds, user_credentials(keys, node, natsroles.agent(node)))
    return {"/run/dkron-secret/nats-secret": str(secret), "/run/dkron-creds/agent.creds": str(creds)}


def _image_env() -> dict[str, str]:
    """The Dockerfile's `ENV` variables: every container of the image starts with them."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found |= dict(word.split("=", 1) for word in shlex.split(line[4:]))
    return found


def _resolved(service: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The settings `dkron-nats` resolves from the service's command and environment (the image's too)."""
    command = [str(CLI), *service["command"], "--data-dir", str(tmp_path), "--print-config"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_NATS_")} | _image_env()
    files = _container_files(tmp_path.parent, tmp_path.name)
    env |= {k: files.get(str(v), str(v)) for k, v in (service.get("environment") or {}).items()}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{service['command']}: {result.stderr}"
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def test_every_compose_service_starts_with_settings_the_cli_accepts(tmp_path: Path) -> None:
    services = _nodes()
    servers = {name for name, s in services.items() if "--server" in s["command"]}
    assert servers == {"s1", "s2", "s3"}
    assert {name for name in services if name not in servers} == {"agent1", "agent2"}
    for name, service in services.items():
        config = _resolved(service, tmp_path / name)
        assert config["node_name"] == name
        if name in servers:
            routes = {urlsplit(r).hostname for r in config["nats_routes"]}
            assert routes == servers - {name}, f"{name} routes to {routes}"
            assert config["nats_cluster_listen"].endswith(":6222")
            assert config["nats_secret_file"]
            assert config["auth"] is True
        else:
            hosts = {urlsplit(u).hostname for u in config["nats_urls"]}
            assert hosts == servers, f"{name} joins {hosts}"
            assert config["nats_creds"]
            # Its /health and /metrics, for the image's health check (never disabled) and for scraping.
            assert config["http_addr"] == "0.0.0.0:8080"
            assert "healthcheck" not in service


def test_compose_is_secure_by_default_with_no_shared_secret_value() -> None:
    services = _services()
    nodes = _nodes()
    for name, service in nodes.items():
        env = service.get("environment") or {}
        published = [str(p).split(":")[-1] for p in service.get("ports", [])]
        assert not {"4222", "6222"} & set(published), f"{name} publishes a NATS port"
        if "--server" in service["command"]:
            assert env["DKRON_NATS_AUTH"] == "true"
            token = env["DKRON_NATS_BOOTSTRAP_TOKEN"]
            assert token.startswith("${DKRON_BOOTSTRAP_TOKEN:?"), "the bootstrap token must be required"
            assert "cluster-secret:/run/dkron-secret:ro" in service["volumes"]
        else:  # an agent sees its own credentials only, never the cluster secret
            assert [v for v in service["volumes"] if "secret" in v] == []
            assert service["volumes"] == [f"{name}-creds:/run/dkron-creds:ro"]
    script = services["credentials"]["command"][0]
    assert "--new-secret" in script
    for agent in (n for n, s in nodes.items() if "--server" not in s["command"]):
        assert agent in script


def test_compose_volumes_are_declared_and_each_server_keeps_its_own() -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    declared = set(document["volumes"])
    used = [v.split(":")[0] for s in document["services"].values() for v in s.get("volumes", [])]
    assert set(used) <= declared
    data = [v for v in used if v.endswith("-data")]
    assert len(data) == len(set(data)) == 3, "each server needs its own JetStream volume"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/dkron-nats/bin/dkron-nats", str(CLI)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert not problems, result.stderr
    assert "KillMode=control-group" in unit.read_text()


def test_the_dockerfile_copies_what_exists_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copies = [
        line.split()[1:] for line in text.splitlines() if line.startswith("COPY ") and "--from=" not in line
    ]
    sources = [source for words in copies for source in words[:-1]]  # the last word is the destination
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    assert 'ENTRYPOINT ["dkron-nats"]' in text
    assert "HEALTHCHECK" in text
    assert "/health" in text
    assert "USER dkron" in text


def _health_check_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("HEALTHCHECK ")]
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


@contextmanager
def _health_endpoint(status: list[int]) -> Iterator[int]:
    """A loopback listener whose /health answers `status[0]` (others 404); yields its port."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_dockerfile_health_check_follows_http_addr_and_wants_a_200() -> None:
    """The check works for agents as for servers: it asks /health on the port the node listens on, and an
    agent's 503 (NATS disconnected) is unhealthy."""
    command, status = _health_check_command(), [200]

    def healthy(port: int) -> bool:
        env = {**os.environ, "DKRON_NATS_HTTP_ADDR": f"0.0.0.0:{port}"}
        return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode == 0

    with _health_endpoint(status) as port:
        assert healthy(port)
        status[0] = 503
        assert not healthy(port)
    assert not healthy(port), "nothing listens there any more"


def test_nats_secure_conf_grants_each_role_what_dkron_nats_roles_define() -> None:
    """deploy/nats-secure.conf's users have the permissions of dkron_nats/natsroles.py, so an external NATS
    and the embedded one's credentials allow the same (regenerate an agent's block with `conf_user`)."""
    text = (ROOT / "deploy" / "nats-secure.conf").read_text()
    for agent in ("agent1", "agent2"):
        assert natsroles.conf_user(agent, natsroles.agent(agent)) in text
    for name, role in (("SERVER_PERMISSIONS", natsroles.SERVER), ("TRIGGER_PERMISSIONS", natsroles.TRIGGER)):
        block = text.split(f"{name} = {{", 1)[1].split("}", 1)[0]
        lists = {
            key: re.findall(r'"([^"]+)"', value) for key, value in re.findall(r"(\w+): \[([^]]*)\]", block)
        }
        assert lists == {"publish": list(role.publish), "subscribe": list(role.subscribe)}
        assert ("allow_responses: true" in block) == role.responses
