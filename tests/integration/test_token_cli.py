"""`dkron-nats token create|list|revoke` against a real server with `--auth`: output, `--json`, exit codes.

Exit codes (the same for every API command, `docs/cli.md`): 0 done, 1 the API refused (its message on stderr),
2 a usage error (click's), 3 not found, 4 the server cannot be reached, 5 a conflict.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import DKRON_NATS, Node, free_port, running

BOOTSTRAP = "bootstrap-" + uuid.uuid4().hex


def cli(*args: str, token: str | None = None, server: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `dkron-nats token ...` with only the environment given here (none inherited by accident)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DKRON_NATS_TOKEN", "DKRON_NATS_API_URL")}
    if token is not None:
        env["DKRON_NATS_TOKEN"] = token
    if server is not None:
        env["DKRON_NATS_API_URL"] = server
    return subprocess.run([*DKRON_NATS, "token", *args], capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    env = {"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP}
    with running(Node(tmp_path_factory.mktemp("token-cli"), extra=["--auth"], env=env)) as started:
        yield started


def _status(node: Node, token: str, method: str = "GET", path: str = "/v1/jobs") -> int:
    return node.request(method, path, headers={"Authorization": f"Bearer {token}"}).status_code


def test_create_list_and_revoke_for_people(node: Node) -> None:
    created = cli("create", "ci", "--role", "operator", "--server", node.url, token=BOOTSTRAP)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("dkn_")
    assert "not shown again" in created.stderr
    assert _status(node, token) == 200
    assert _status(node, token, "POST", "/v1/pause") == 403  # an operator may not pause

    table = cli("list", "--server", node.url, token=BOOTSTRAP)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED_AT", "CREATED_BY", "EXPIRES_AT"]
    ci_row = next(row.split() for row in rows if row.startswith("ci "))
    assert [ci_row[i] for i in (0, 1, 3)] == ["ci", "operator", "bootstrap"]
    assert token not in table.stdout

    revoked = cli("revoke", "ci", "--server", node.url, token=BOOTSTRAP)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "revoked token ci"
    assert _status(node, token) == 401


def test_json_output_and_the_server_from_the_environment(node: Node) -> None:
    created = cli("create", "script", "--role", "read", "--json", token=BOOTSTRAP, server=node.url)
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    assert made["name"] == "script"
    assert made["role"] == "read"
    assert _status(node, made["token"]) == 200

    listed = cli("list", "--json", token=BOOTSTRAP, server=node.url)
    assert listed.returncode == 0, listed.stderr
    mine = [t for t in json.loads(listed.stdout) if t["name"] == "script"]
    assert mine == [
        {
            "name": "script",
            "role": "read",
            "created_at": mine[0]["created_at"],
            "created_by": "bootstrap",
            "expires_at": None,
        }
    ]

    revoked = cli("revoke", "script", "--json", token=BOOTSTRAP, server=node.url)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["name"] == "script"


def test_refusals_exit_1_with_the_servers_message(node: Node) -> None:
    no_token = cli("list", "--server", node.url)
    assert no_token.returncode == 1
    assert "401" in no_token.stderr
    assert "DKRON_NATS_TOKEN" in no_token.stderr

    made = cli("create", "reader", "--role", "read", "--json", token=BOOTSTRAP, server=node.url)
    reader = json.loads(made.stdout)
    forbidden = cli("create", "sneaky", "--role", "admin", token=reader["token"], server=node.url)
    assert forbidden.returncode == 1
    assert "403" in forbidden.stderr
    assert "admin role" in forbidden.stderr

    twice = cli("create", "reader", "--role", "read", token=BOOTSTRAP, server=node.url)
    assert twice.returncode == 5
    assert "exists already" in twice.stderr

    unknown = cli("revoke", "nobody-has-this", token=BOOTSTRAP, server=node.url)
    assert unknown.returncode == 3
    assert "nobody-has-this" in unknown.stderr

    bad_name = cli("create", "Not Valid", "--role", "read", token=BOOTSTRAP, server=node.url)
    assert bad_name.returncode == 1
    assert "name" in bad_name.stderr


def test_an_unreachable_server_exits_4_naming_the_setting() -> None:
    result = cli("list", "--server", f"http://127.0.0.1:{free_port()}", token=BOOTSTRAP)
    assert result.returncode == 4
    assert "cannot reach" in result.stderr
    assert "--server" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["create", "x", "--role", "root"],
        ["create", "x"],
        ["create", "--role", "read"],
        ["revoke"],
        ["list", "--no-such-flag"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = cli(*args, token=BOOTSTRAP, server="http://127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stderr
