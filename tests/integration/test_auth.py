"""API authentication (`--auth`): who may call which route, the bootstrap token, token management.

The table test walks every route the Litestar app serves (`ROUTE_HANDLERS`) for every caller (no token, and
a `read`, `operator` and `admin` token) against one real server, so a route added later without an entry in
`ROUTES` below fails here. The role each route needs is written out independently of the code's own `opt`.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dkron_nats.http.app import ROUTE_HANDLERS
from tests.harness import DKRON_NATS, Node, job, running, wait_for

BOOTSTRAP = "bootstrap-" + uuid.uuid4().hex
AUTH_ENV = {"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP}
JOB = "authjob"
RANK = {"read": 0, "operator": 1, "admin": 2}
CALLERS = ["nobody", "read", "operator", "admin"]


@dataclass(frozen=True)
class Route:
    """How to call a route in the table, and the least role that may call it (None: anyone)."""

    needs: str | None
    path: str
    body: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    stops_server: bool = False
    streams: bool = False
    """Answers a stream that does not end (SSE): only its status and headers are read."""


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): Route(None, "/health"),
    ("GET", "/"): Route("read", "/"),
    ("GET", "/metrics"): Route("read", "/metrics"),
    ("GET", "/debug/vars"): Route("read", "/debug/vars"),
    ("GET", "/openapi.json"): Route("read", "/openapi.json"),
    ("GET", "/v1"): Route("read", "/v1"),
    ("GET", "/v1/members"): Route("read", "/v1/members"),
    ("GET", "/v1/leader"): Route("read", "/v1/leader"),
    ("GET", "/v1/isleader"): Route("read", "/v1/isleader"),
    ("GET", "/v1/partitions"): Route("read", "/v1/partitions"),
    ("GET", "/v1/busy"): Route("read", "/v1/busy"),
    ("GET", "/v1/stats"): Route("read", "/v1/stats"),
    ("GET", "/v1/pause"): Route("read", "/v1/pause"),
    ("POST", "/v1/pause"): Route("admin", "/v1/pause?scheduling=true"),
    ("POST", "/v1/unpause"): Route("admin", "/v1/unpause?scheduling=true"),
    ("POST", "/v1/leave"): Route("admin", "/v1/leave", stops_server=True),
    ("GET", "/v1/jobs"): Route("read", "/v1/jobs"),
    ("POST", "/v1/jobs"): Route("admin", "/v1/jobs", body=job(JOB)),
    ("PATCH", "/v1/jobs"): Route("admin", "/v1/jobs", body=job(JOB)),
    ("PUT", "/v1/jobs/{job:str}"): Route("admin", f"/v1/jobs/{JOB}", body=job(JOB)),
    ("GET", "/v1/jobs/{job:str}"): Route("read", f"/v1/jobs/{JOB}"),
    ("GET", "/v1/jobs/{job:str}/next"): Route("read", f"/v1/jobs/{JOB}/next?schedule=@daily"),
    ("DELETE", "/v1/jobs/{job:str}"): Route("admin", f"/v1/jobs/{JOB}"),
    ("POST", "/v1/jobs/{job:str}"): Route("operator", f"/v1/jobs/{JOB}"),
    ("POST", "/v1/jobs/{job:str}/run"): Route("operator", f"/v1/jobs/{JOB}/run"),
    ("POST", "/v1/jobs/{job:str}/toggle"): Route("operator", f"/v1/jobs/{JOB}/toggle"),
    ("POST", "/v1/restore"): Route("admin", "/v1/restore", files={"file": ("jobs.json", b"[]")}),
    ("GET", "/v1/jobs/{job:str}/executions"): Route("read", f"/v1/jobs/{JOB}/executions"),
    ("DELETE", "/v1/jobs/{job:str}/executions"): Route("admin", f"/v1/jobs/{JOB}/executions"),
    ("GET", "/v1/jobs/{job:str}/executions/{execution:str}"): Route(
        "read", f"/v1/jobs/{JOB}/executions/nosuch"
    ),
    ("GET", "/v1/jobs/{job:str}/executions/{execution:str}/output"): Route(
        "read", f"/v1/jobs/{JOB}/executions/nosuch/output"
    ),
    ("POST", "/v1/jobs/{job:str}/executions/{execution:str}/cancel"): Route(
        "operator", f"/v1/jobs/{JOB}/executions/nosuch/cancel"
    ),
    ("GET", "/v1/tokens"): Route("admin", "/v1/tokens"),
    ("POST", "/v1/tokens"): Route("admin", "/v1/tokens", body={"name": "", "role": "read"}),
    ("DELETE", "/v1/tokens/{name:str}"): Route("admin", "/v1/tokens/nosuch"),
    ("GET", "/v1/audit"): Route("admin", "/v1/audit"),
    ("GET", "/v1/me"): Route("read", "/v1/me"),
    ("GET", "/v1/events"): Route("read", "/v1/events", streams=True),
    ("GET", "/ui"): Route(None, "/ui"),
    ("GET", "/ui/{path:path}"): Route(None, "/ui/jobs"),
}


def served_routes() -> list[tuple[str, str]]:
    return sorted((method, path) for h in ROUTE_HANDLERS for path in h.paths for method in h.http_methods)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Secured:
    node: Node
    tokens: dict[str, str]

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.node.request(method, path, headers=bearer(BOOTSTRAP), **kw)


def create_token(node: Node, admin_token: str, name: str, role: str) -> str:
    response = node.post("/v1/tokens", json={"name": name, "role": role}, headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


UI_ORIGIN = "http://ui.example"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    node = Node(tmp_path_factory.mktemp("auth"), extra=["--auth", "--cors-origin", UI_ORIGIN], env=AUTH_ENV)
    with running(node):
        tokens = {role: create_token(node, BOOTSTRAP, f"table-{role}", role) for role in RANK}
        yield Secured(node, tokens)


def test_the_table_covers_every_route_the_app_serves() -> None:
    assert set(ROUTES) == set(served_routes())


def _reset(secured: Secured) -> None:
    """Undo what earlier cases changed: nothing paused, the example job present."""
    for query in ("", "?scheduling=true"):
        assert secured.admin("POST", "/v1/unpause" + query).status_code == 200
    assert secured.admin("PUT", f"/v1/jobs/{JOB}", json=job(JOB)).status_code == 201


def _call(node: Node, method: str, route: Route, token: str | None) -> httpx.Response:
    body = route.body
    if body is not None and "name" in body and not body["name"]:
        body = {**body, "name": "t-" + uuid.uuid4().hex[:12]}  # a new token name each time
    headers = bearer(token) if token else {}
    if route.streams:
        with httpx.stream(method, node.url + route.path, headers=headers, timeout=15) as streamed:
            if streamed.status_code in (401, 403):
                streamed.read()  # a refusal is short, and its text is checked
            return streamed
    return node.request(method, route.path, headers=headers, json=body, files=route.files)


def _call_on_a_server_of_its_own(tmp_path: Path, method: str, route: Route, role: str) -> httpx.Response:
    with running(Node(tmp_path / "own", extra=["--auth"], env=AUTH_ENV)) as node:
        return _call(node, method, route, create_token(node, BOOTSTRAP, f"own-{role}", role))


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("served", served_routes(), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_role_may_do_exactly_what_it_should(
    secured: Secured, served: tuple[str, str], caller: str, tmp_path: Path
) -> None:
    route = ROUTES.get(served)
    if route is None:
        pytest.fail(f"{served} has no entry in ROUTES: say which role it needs and how to call it")
    _reset(secured)
    allowed = route.needs is None or (caller != "nobody" and RANK[caller] >= RANK[route.needs])
    if allowed and route.stops_server:
        response = _call_on_a_server_of_its_own(tmp_path, served[0], route, caller)
    else:
        response = _call(secured.node, served[0], route, secured.tokens.get(caller))
    if allowed:
        assert response.status_code not in (401, 403), response.text
    elif caller == "nobody":
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.text
    else:
        assert response.status_code == 403, response.text
        assert f"needs the {route.needs} role" in response.text


def test_a_wrong_or_malformed_token_gets_401(secured: Secured) -> None:
    for header in (f"Bearer {secured.tokens['admin']}x", f"Basic {secured.tokens['admin']}", "Bearer"):
        response = secured.node.get("/v1/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "not valid" in response.text


def test_health_and_cors_preflight_need_no_token(secured: Secured) -> None:
    assert secured.node.get("/health").status_code == 200
    asked = {"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight = secured.node.request("OPTIONS", "/v1/jobs", headers=asked)
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


def test_the_bootstrap_token_administers_a_fresh_cluster(secured: Secured) -> None:
    listed = secured.admin("GET", "/v1/tokens")
    assert listed.status_code == 200
    made_by_bootstrap = [t for t in listed.json() if t["name"].startswith("table-")]
    assert {t["created_by"] for t in made_by_bootstrap} == {"bootstrap"}
    assert "SECURITY" not in secured.node.logs()  # auth is on: no warning about an open API


def test_tokens_are_random_shown_once_and_listed_without_secrets(secured: Secured) -> None:
    created = secured.admin("POST", "/v1/tokens", json={"name": "shown-once", "role": "read"})
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"name", "role", "token", "expires_at"}
    assert body["expires_at"] is None  # no ttl: until revoked
    token = body["token"]
    assert token.startswith("dkn_")
    assert len(token) == len("dkn_") + 43  # 32 random bytes, URL-safe base64 without padding
    listed = secured.admin("GET", "/v1/tokens")
    assert int(listed.headers["X-Total-Count"]) == len(listed.json())
    mine = next(t for t in listed.json() if t["name"] == "shown-once")
    assert set(mine) == {"name", "role", "created_at", "created_by", "expires_at"}
    assert token not in listed.text
    assert token not in secured.node.logs()


def test_a_revoked_token_is_refused(secured: Secured) -> None:
    token = create_token(secured.node, BOOTSTRAP, "short-lived", "operator")
    assert secured.node.get("/v1/jobs", headers=bearer(token)).status_code == 200
    revoked = secured.admin("DELETE", "/v1/tokens/short-lived")
    assert revoked.status_code == 200
    assert revoked.json()["name"] == "short-lived"
    wait_for(
        lambda: secured.node.get("/v1/jobs", headers=bearer(token)).status_code == 401,
        timeout=5,
        what="the revoked token to be refused",
    )
    again = secured.admin("DELETE", "/v1/tokens/short-lived")
    assert again.status_code == 404
    assert "short-lived" in again.text


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"name": "Bad Name", "role": "read"}, 400, "name"),
        ({"name": "x" * 65, "role": "read"}, 400, "name"),
        ({"name": "bootstrap", "role": "admin"}, 400, "DKRON_NATS_BOOTSTRAP_TOKEN"),
        ({"name": "fine", "role": "root"}, 400, "role"),
        ({"name": "fine"}, 400, "role"),
        ({"name": "fine", "role": "read", "extra": 1}, 400, "extra"),
        ({"name": "table-read", "role": "read"}, 409, "exists already"),
    ],
)
def test_bad_token_requests_are_refused_naming_the_field(
    secured: Secured, body: dict[str, Any], status: int, named: str
) -> None:
    response = secured.admin("POST", "/v1/tokens", json=body)
    assert response.status_code == status, response.text
    assert named in response.text


def test_the_auth_setting_comes_from_a_flag_the_environment_or_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "dkron.yml"
    conf.write_text("auth: true\n")
    env = {k: v for k, v in os.environ.items() if k != "DKRON_NATS_AUTH"}
    for args, extra_env in [
        (["--auth"], {}),
        ([], {"DKRON_NATS_AUTH": "true"}),
        (["--config", str(conf)], {}),
    ]:
        result = subprocess.run(
            [*DKRON_NATS, "agent", *args, "--print-config"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, **extra_env},
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["auth"] is True, args


def test_without_auth_the_api_is_open_and_start_up_warns_when_it_listens_beyond_loopback(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path / "open")
    # the last --http-addr wins; without --insecure-no-auth start-up refuses (test_api_security.py)
    node.extra = ["--http-addr", f"0.0.0.0:{node.http_port}", "--insecure-no-auth"]
    with running(node):
        assert node.post("/v1/jobs", json=job("open-job")).status_code == 201
        warning = wait_for(
            lambda: next((ln for ln in node.logs().splitlines() if "SECURITY" in ln), None),
            timeout=5,
            what="the open-API warning",
        )
    assert "WARNING" in warning
    assert "anyone who can reach this port" in warning
    assert "--auth" in warning


def test_read_role_sees_secret_config_values_masked(secured: Secured) -> None:
    body = job("secretive", "@manually", "true")
    body["executor_config"]["env"] = "PASSWORD=hunter2"
    body["processors"] = {"fluent": {"token": "abc123secret", "forward": "true"}}
    assert secured.admin("POST", "/v1/jobs", json=body).status_code == 201
    reader = bearer(secured.tokens["read"])
    seen = secured.node.get("/v1/jobs/secretive", headers=reader).text
    listed = secured.node.get("/v1/jobs", headers=reader).text
    for text in (seen, listed):
        assert "hunter2" not in text
        assert "abc123secret" not in text
    full = secured.admin("GET", "/v1/jobs/secretive").json()
    assert full["executor_config"]["env"] == "PASSWORD=hunter2"
    secured.admin("DELETE", "/v1/jobs/secretive")
