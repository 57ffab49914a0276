"""The API's edge is secure by default (issue 17): where it listens, who may call it from a web page, under
which Host name, how fast, and what slow or stalled clients can hold.

Every check runs against real `dkron-nats agent --server` processes with raw sockets where the exact bytes
matter (curl's request, half-open connections, a client that stops reading).

Slowloris, by hand, once: 3,000 sockets, each sending
`GET /v1/jobs HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Slow: ` and nothing more, against a node with the
defaults (`--http-header-timeout 10s`, `--http-max-connections 1000`): all 3,000 opened in 0.08 s, the
server held 1,009 file descriptors, `GET /health` (a raw socket, timed from connect to close) answered in
274 ms while the 3,000 were still being accepted and in 0.8-2.3 ms after that, and the server had closed
all 3,000 within 10.0 s. The test below does the same with 600 connections and a limit of 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import selectors
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn

from dkron_nats.http.server import HttpLimits, server_config
from dkron_nats.kv.buckets import TOKENS
from tests.harness import DKRON_NATS, Node, executions, finished, free_port, job, running, wait_for

BOOTSTRAP = "bootstrap-" + uuid.uuid4().hex
NATS_USER, NATS_PASSWORD = "dkron", "nats-" + uuid.uuid4().hex
NATS_LOGIN = ["--nats-user", NATS_USER, "--nats-password", NATS_PASSWORD]
UI_ORIGIN = "http://ui.example"
EVIL = "https://evil.example"
TOO_SLOW = b'"error":"client too slow: more than 1 MiB of events were waiting for it; the stream is closed"'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send exactly these bytes and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def agent(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`dkron-nats agent ...` that is expected to stop by itself (a refusal, or --print-config)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_NATS_")}
    return subprocess.run(
        [*DKRON_NATS, "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean | (env or {}),
    )


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """Authentication off (the default), on loopback, with one CORS origin and one extra host name."""
    extra = ["--cors-origin", UI_ORIGIN, "--allowed-host", "dkron.internal"]
    with running(Node(tmp_path_factory.mktemp("open"), extra=extra)) as node:
        yield node


@dataclass
class Secured:
    node: Node
    admin: dict[str, str]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """Authentication on, listening on every interface (so no Host check), a small rate limit."""
    node = Node(tmp_path_factory.mktemp("secured"), env={"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP})
    node.extra = [
        *["--auth", "--http-addr", f"0.0.0.0:{node.http_port}", *NATS_LOGIN],
        *["--rate-limit-runs", "1/m", "--rate-limit-burst", "3"],
    ]
    with running(node):
        yield Secured(node, bearer(BOOTSTRAP))


def make_token(secured: Secured, role: str = "operator", **fields: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    created = secured.node.post(
        "/v1/tokens", json={"name": name, "role": role, **fields}, headers=secured.admin
    )
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


def audit_entries(secured: Secured, action: str) -> list[dict[str, Any]]:
    found = secured.node.get("/v1/audit", params={"_end": "1000"}, headers=secured.admin)
    assert found.status_code == 200, found.text
    return [entry for entry in found.json() if entry["action"] == action]


# ---------------------------------------------------------------------------------------------------------
# 1. Where the API listens


def test_without_auth_the_api_listens_on_loopback_and_with_auth_on_every_interface() -> None:
    assert json.loads(agent("--server", "--print-config").stdout)["http_addr"] == "127.0.0.1:8080"
    assert json.loads(agent("--server", "--auth", "--print-config").stdout)["http_addr"] == ":8080"


@pytest.mark.parametrize("addr", ["0.0.0.0:{port}", ":{port}", "192.0.2.7:{port}"])
def test_an_open_api_beyond_loopback_is_refused_at_start_up(addr: str) -> None:
    refused = agent("--server", "--http-addr", addr.format(port=free_port()))
    assert refused.returncode != 0
    assert "--auth" in refused.stderr
    assert "--insecure-no-auth" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_insecure_no_auth_serves_beyond_loopback_with_a_loud_warning(tmp_path: Path) -> None:
    node = Node(tmp_path / "insecure")
    node.extra = ["--http-addr", f"0.0.0.0:{node.http_port}", "--insecure-no-auth"]
    with running(node):
        assert node.get("/health").status_code == 200
        warning = wait_for(
            lambda: next((ln for ln in node.logs().splitlines() if "SECURITY" in ln), None),
            timeout=5,
            what="the start-up warning",
        )
    assert "WARNING" in warning
    assert "--insecure-no-auth" in warning


def test_a_short_bootstrap_token_is_refused_at_start_up() -> None:
    refused = agent("--server", "--auth", env={"DKRON_NATS_BOOTSTRAP_TOKEN": "hunter2-admin"})
    assert refused.returncode != 0
    assert "DKRON_NATS_BOOTSTRAP_TOKEN is too short (13 characters)" in refused.stderr
    assert "at least 32" in refused.stderr
    assert "hunter2" not in refused.stderr.replace("DKRON_NATS_BOOTSTRAP_TOKEN", "")
    assert "Traceback" not in refused.stderr


# ---------------------------------------------------------------------------------------------------------
# 2-4. Cross-site requests, DNS rebinding, and Dkron's getting-started curl


def test_the_getting_started_curl_works_verbatim(open_node: Node) -> None:
    """`curl localhost:8080/v1/jobs -XPOST -d '{...}'`, byte for byte as curl sends it (a form type)."""
    body = json.dumps(job("curl-job", "@every 10s", "date", timezone="Europe/Berlin"), indent=2).encode()
    request = (
        b"POST /v1/jobs HTTP/1.1\r\n"
        b"Host: localhost:%d\r\n"
        b"User-Agent: curl/8.5.0\r\n"
        b"Accept: */*\r\n"
        b"Content-Length: %d\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Connection: close\r\n"
        b"\r\n" % (open_node.http_port, len(body))
    ) + body
    answer = raw_request(open_node.http_port, request)
    assert status_of(answer) == 201, answer
    assert open_node.get("/v1/jobs/curl-job").json()["schedule"] == "@every 10s"


def test_a_page_of_another_site_can_change_nothing(open_node: Node) -> None:
    """A "simple" cross-site POST (text/plain: no preflight) or any other method is refused, unread."""
    name = f"evil-{uuid.uuid4().hex[:8]}"
    body = json.dumps(job(name)).encode()
    for method, path in [("POST", "/v1/jobs"), ("PUT", f"/v1/jobs/{name}"), ("POST", "/v1/pause")]:
        headers = {"Origin": EVIL, "Content-Type": "text/plain"}
        refused = open_node.request(method, path, content=body, headers=headers)
        assert refused.status_code == 403, (method, path, refused.text)
        assert EVIL in refused.text
        assert "access-control-allow-origin" not in refused.headers
        assert refused.headers["X-Whom"] == "n1"
    for origin in ("null", "http://127.0.0.1.evil.example", f"http://127.0.0.1:{open_node.http_port + 1}"):
        assert open_node.post("/v1/jobs", content=body, headers={"Origin": origin}).status_code == 403
    assert open_node.get(f"/v1/jobs/{name}").status_code == 404
    assert not open_node.get("/v1/pause").json()["paused"]


def test_the_ui_on_its_own_origin_keeps_working(open_node: Node) -> None:
    """Browsers send `Origin` on same-origin POSTs; the UI's own origin is the request's scheme and Host."""
    port = open_node.http_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        name = f"ui-{uuid.uuid4().hex[:8]}"
        saved = open_node.post("/v1/jobs", json=job(name), headers={"Host": host, "Origin": f"http://{host}"})
        assert saved.status_code == 201, saved.text
        assert "access-control-allow-origin" not in saved.headers  # same origin: no CORS needed
        ran = open_node.post(f"/v1/jobs/{name}/run", headers={"Host": host, "Origin": f"http://{host}"})
        assert ran.status_code == 200, ran.text
    # The same page address under the other name is another origin.
    crossed = {"Host": f"localhost:{port}", "Origin": f"http://127.0.0.1:{port}"}
    assert open_node.post("/v1/jobs", json=job("crossed"), headers=crossed).status_code == 403


def test_cors_headers_go_only_to_the_configured_origins(open_node: Node) -> None:
    answered = open_node.get("/v1/jobs", headers={"Origin": UI_ORIGIN})
    assert answered.status_code == 200
    assert answered.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "Origin" in answered.headers["Vary"]
    assert "X-Total-Count" in answered.headers["Access-Control-Expose-Headers"]
    assert "access-control-allow-origin" not in open_node.get("/v1/jobs").headers

    preflight = {"Origin": UI_ORIGIN, "Access-Control-Request-Method": "PUT"}
    allowed = open_node.request("OPTIONS", "/v1/jobs/any", headers=preflight)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "PUT" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]

    foreign = open_node.request("OPTIONS", "/v1/jobs/any", headers={**preflight, "Origin": EVIL})
    assert foreign.status_code == 403
    assert not [h for h in foreign.headers if h.lower().startswith("access-control-")]

    plain = open_node.request("OPTIONS", "/v1/jobs")  # no Origin: not a CORS request at all
    assert plain.status_code == 204
    assert "access-control-allow-origin" not in plain.headers


def test_a_loopback_api_answers_only_to_loopback_and_allowed_host_names(open_node: Node) -> None:
    """DNS rebinding: a page of evil.example, its name rebound to 127.0.0.1, sends `Host: evil.example`."""
    port = open_node.http_port
    refused = open_node.get("/v1/jobs", headers={"Host": f"evil.example:{port}"})
    assert refused.status_code == 403
    assert "--allowed-host" in refused.text
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}  # "same origin"
    assert open_node.post("/v1/jobs", json=job("rebound"), headers=rebound).status_code == 403
    assert open_node.get("/v1/jobs/rebound").status_code == 404
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"127.3.2.1:{port}", f"[::1]:{port}"):
        assert open_node.get("/health", headers={"Host": host}).status_code == 200, host
    assert open_node.get("/health", headers={"Host": "DKRON.internal:443"}).status_code == 200
    no_host = raw_request(port, b"GET /health HTTP/1.0\r\n\r\n")  # HTTP/1.0 may leave Host out
    assert status_of(no_host) == 200


def test_without_a_loopback_listener_host_is_not_checked_but_origin_is(secured: Secured) -> None:
    assert secured.node.get("/health", headers={"Host": "dkron.example.com"}).status_code == 200
    probe = f"origin-probe-{uuid.uuid4().hex[:8]}"
    headers = {"Origin": EVIL, "Authorization": "Bearer dkn_wrong"}
    refused = secured.node.request("PUT", f"/v1/jobs/{probe}", json=job(probe), headers=headers)
    assert refused.status_code == 403  # before authentication: no 401, nothing logged or audited
    assert probe not in secured.node.logs()
    assert not [e for e in audit_entries(secured, "login.failed") if probe in json.dumps(e)]


# ---------------------------------------------------------------------------------------------------------
# 5. Slow clients: half-open connections, and event streams nobody reads


def timed_health(port: int) -> float:
    start = time.monotonic()
    answer = raw_request(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200, answer
    return time.monotonic() - start


def test_half_open_connections_do_not_stop_the_api(tmp_path: Path) -> None:
    half_open, limit, header_timeout = 600, 200, 2.0
    node = Node(tmp_path / "slowloris")
    node.extra = ["--http-header-timeout", f"{header_timeout}s", "--http-max-connections", str(limit)]
    with running(node), selectors.DefaultSelector() as waiting:
        socks = []
        try:
            for _ in range(half_open):
                sock = socket.create_connection(("127.0.0.1", node.http_port))
                sock.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
                socks.append(sock)
            times = [timed_health(node.http_port) for _ in range(10)]
            assert max(times) < 1.0, times
            assert node.proc is not None
            held = len(list(Path(f"/proc/{node.proc.pid}/fd").iterdir()))
            assert held < limit + 50, (
                f"the server holds {held} descriptors with a limit of {limit} connections"
            )
            # Every half-open connection is closed: the oldest to make room, the rest by the header timeout.
            for sock in socks:
                sock.setblocking(False)
                waiting.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + header_timeout + 10
            while waiting.get_map() and time.monotonic() < deadline:
                for key, _ in waiting.select(timeout=0.5):
                    try:
                        data = key.fileobj.recv(1024)  # type: ignore[union-attr]
                    except ConnectionResetError:
                        data = b""
                    assert data == b"", data
                    waiting.unregister(key.fileobj)
            assert not waiting.get_map(), f"{len(waiting.get_map())} half-open connections still open"
            assert timed_health(node.http_port) < 1.0
        finally:
            for sock in socks:
                sock.close()


def stalled_stream(port: int, path: bytes) -> socket.socket:
    """A client with a tiny receive buffer that reads the response head and then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(15)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n" % path)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def read_to_the_end(sock: socket.socket) -> bytes:
    """Read the rest of a chunked response (after the client resumes reading)."""
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def publish_events(port: int, count: int, size: int) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}", user=NATS_USER, password=NATS_PASSWORD)
    try:
        body = json.dumps(
            {"type": "test.big", "time": "2026-01-01T00:00:00Z", "job": "x", "data": "a" * size}
        )
        for _ in range(count):
            await nc.publish("dkron.events.test.big", body.encode())
        await nc.flush()
    finally:
        await nc.close()


def test_an_event_stream_client_that_stops_reading_is_cut_off_and_costs_at_most_a_mebibyte(
    tmp_path: Path,
) -> None:
    with running(Node(tmp_path / "sse", extra=NATS_LOGIN)) as node:
        assert node.proc is not None
        sock = stalled_stream(node.http_port, b"/v1/events")
        try:
            wait_for(lambda: b"event: ready" in sock.recv(4096, socket.MSG_PEEK), what="the ready event")
            before = rss_mib(node.proc.pid)
            asyncio.run(publish_events(node.nats_port, count=256, size=256 * 1024))  # 64 MiB of events
            wait_for(lambda: "cut off a slow event-stream client" in node.logs(), what="the cut-off")
            grown = rss_mib(node.proc.pid) - before
            assert grown < 32, f"the server grew by {grown:.0f} MiB for one stalled client"
            assert timed_health(node.http_port) < 1.0
            rest = read_to_the_end(sock)  # the client reads again: what it had in flight, then the reason
        finally:
            sock.close()
    assert rest.endswith(b"\r\n0\r\n\r\n"), rest[-200:]  # the stream was ended by the server
    assert b"event: error\r\ndata: {" + TOO_SLOW + b"}" in rest
    assert rest.count(b"event: test.big") < 24, "more than the socket buffers and 1 MiB reached the client"


def test_a_live_output_client_that_stops_reading_is_cut_off(open_node: Node) -> None:
    name = f"loud-{uuid.uuid4().hex[:8]}"
    command = "head -c 8000000 /dev/zero | tr '\\0' a"
    assert open_node.post("/v1/jobs", json=job(name, command=command)).status_code == 201
    assert open_node.post(f"/v1/jobs/{name}/run").status_code == 200
    execution = wait_for(lambda: finished(open_node, name, 1), timeout=60, what="the loud run")[0]
    sock = stalled_stream(
        open_node.http_port, f"/v1/jobs/{name}/executions/{execution['id']}/output".encode()
    )
    try:
        wait_for(lambda: "cut off a slow event-stream client" in open_node.logs(), what="the cut-off")
        rest = read_to_the_end(sock)
    finally:
        sock.close()
    assert b"event: error\r\ndata: {" + TOO_SLOW + b"}" in rest
    assert b"event: end" not in rest
    assert open_node.get(f"/v1/jobs/{name}").status_code == 200


def test_a_client_that_reads_nothing_is_cut_off_after_the_write_timeout() -> None:
    """The server's write deadline, in process: a response nobody takes ends the connection."""
    gone = threading.Event()

    async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the request (no body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        left = asyncio.ensure_future(receive())  # the disconnect
        while not left.done():
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        gone.set()

    port = free_port()
    server = uvicorn.Server(server_config(endless, "127.0.0.1", port, HttpLimits(write_timeout=1.0)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the server")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            started = time.monotonic()
            assert gone.wait(10), "the stalled client was never cut off"
            assert time.monotonic() - started < 6
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------------------------------------------
# 7. Rate limits on runs and job changes


def test_runs_and_job_changes_are_limited_per_token(secured: Secured) -> None:
    node = secured.node
    name = f"limited-{uuid.uuid4().hex[:8]}"
    first, second = make_token(secured, "admin"), make_token(secured, "admin")
    assert node.post("/v1/jobs", json=job(name, displayname="v1"), headers=bearer(first)).status_code == 201
    assert node.post(f"/v1/jobs/{name}/run", headers=bearer(first)).status_code == 200
    assert node.post(f"/v1/jobs/{name}/toggle", headers=bearer(first)).status_code == 200
    wait_for(lambda: executions_of(secured, name), what="the run's record")

    for method, path, body in [
        ("POST", f"/v1/jobs/{name}/run", None),
        ("PUT", f"/v1/jobs/{name}", job(name, displayname="v2")),
        ("DELETE", f"/v1/jobs/{name}", None),
    ]:
        refused = node.request(method, path, json=body, headers=bearer(first))
        assert refused.status_code == 429, (method, path, refused.text)
        assert int(refused.headers["Retry-After"]) >= 1
        assert "--rate-limit-runs" in refused.text
    assert len(executions_of(secured, name)) == 1, "the refused run happened"
    assert node.get(f"/v1/jobs/{name}", headers=secured.admin).json()["displayname"] == "v1"
    assert node.get("/v1/jobs", headers=bearer(first)).status_code == 200, "reads are not limited"
    # Another token from the same address has its own allowance.
    assert node.post(f"/v1/jobs/{name}/toggle", headers=bearer(second)).status_code == 200


def executions_of(secured: Secured, name: str) -> list[dict[str, Any]]:
    listed = secured.node.get(f"/v1/jobs/{name}/executions", headers=secured.admin)
    found: list[dict[str, Any]] = listed.json() if listed.status_code == 200 else []
    return found


def test_without_auth_the_limit_is_per_client_address(tmp_path: Path) -> None:
    extra = ["--rate-limit-runs", "1/h", "--rate-limit-burst", "2"]
    with running(Node(tmp_path / "by-address", extra=extra)) as node:
        assert node.post("/v1/jobs", json=job("one")).status_code == 201
        assert node.post("/v1/jobs/one/run").status_code == 200
        refused = node.post("/v1/jobs", json=job("two"))
        assert refused.status_code == 429
        assert "address 127.0.0.1" in refused.text
        assert int(refused.headers["Retry-After"]) > 60
        assert node.get("/v1/jobs/two").status_code == 404
        assert len(executions(node, "one")) <= 1


# ---------------------------------------------------------------------------------------------------------
# 8. Tokens: refused ones logged and audited, lifetimes, the bootstrap token, records of older versions


def test_a_refused_token_is_logged_and_audited_without_the_token(secured: Secured) -> None:
    wrong = "dkn_" + uuid.uuid4().hex
    refused = secured.node.get("/v1/jobs", headers=bearer(wrong))
    assert refused.status_code == 401
    line = wait_for(
        lambda: next((ln for ln in secured.node.logs().splitlines() if "refused an API token" in ln), None),
        what="the log line",
    )
    assert "WARNING" in line
    assert "127.0.0.1" in line
    assert "GET /v1/jobs" in line
    assert wrong not in secured.node.logs()
    entries = wait_for(lambda: audit_entries(secured, "login.failed"), what="the audit entry")
    assert entries[0]["target"] == "127.0.0.1"
    assert entries[0]["who"] == "(unauthenticated)"
    assert entries[0]["after"]["reason"] == "an unknown or revoked token"
    assert wrong not in json.dumps(entries)
    assert secured.node.get("/v1/jobs").status_code == 401  # no token at all: not a failed login


def test_a_flood_of_refused_tokens_does_not_flood_the_audit_log(secured: Secured) -> None:
    before = len(audit_entries(secured, "login.failed"))
    start = time.monotonic()
    with httpx.Client(base_url=secured.node.url, timeout=10) as client:
        for i in range(300):
            assert client.get("/v1/jobs", headers=bearer(f"dkn_flood{i}")).status_code == 401
    allowed = 20 + (time.monotonic() - start) * 1.0 + 1
    entries = audit_entries(secured, "login.failed")
    assert len(entries) - before <= allowed, f"{len(entries) - before} entries for 300 refusals"

    def says_how_many_were_left_out() -> bool:
        secured.node.get("/v1/jobs", headers=bearer("dkn_one-more"))
        return any(
            entry["after"]["not_logged_before"] > 0 for entry in audit_entries(secured, "login.failed")
        )

    wait_for(says_how_many_were_left_out, what="an entry counting the refusals left out")


def test_a_token_can_have_a_lifetime_and_an_expired_one_answers_401(secured: Secured) -> None:
    token = make_token(secured, "read", ttl="3s")
    assert secured.node.get("/v1/jobs", headers=bearer(token)).status_code == 200
    listed = secured.node.get("/v1/tokens", headers=secured.admin).json()
    assert all("expires_at" in t for t in listed)
    assert any(t["expires_at"] for t in listed)
    wait_for(
        lambda: secured.node.get("/v1/jobs", headers=bearer(token)).status_code == 401,
        timeout=15,
        what="the token to expire",
    )
    expired = secured.node.get("/v1/jobs", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.headers["WWW-Authenticate"] == "Bearer"
    assert "expired" in expired.text
    for ttl in ("forever", "0s", "-5m", "87601h"):
        bad = secured.node.post(
            "/v1/tokens", json={"name": "bad-ttl", "role": "read", "ttl": ttl}, headers=secured.admin
        )
        assert bad.status_code == 400, ttl
        assert "ttl" in bad.text


def test_the_cli_creates_a_token_with_a_lifetime(secured: Secured) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKRON_NATS_")}
    env |= {"DKRON_NATS_TOKEN": BOOTSTRAP, "DKRON_NATS_API_URL": secured.node.url}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(
        [*DKRON_NATS, "token", "create", name, "--role", "read", "--ttl", "720h", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    lifetime = datetime.fromisoformat(json.loads(made.stdout)["expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=719) < lifetime <= timedelta(hours=720)


def test_a_token_record_of_an_older_version_still_works(secured: Secured) -> None:
    """Records written before tokens could expire have no `expires_at` (nor `revoked`)."""
    token = "dkn_" + uuid.uuid4().hex
    legacy = {
        "name": "legacy",
        "role": "read",
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "created_at": "2025-01-02T03:04:05+00:00",
        "created_by": "bootstrap",
    }

    async def store() -> None:
        nc = await nats.connect(
            f"nats://127.0.0.1:{secured.node.nats_port}", user=NATS_USER, password=NATS_PASSWORD
        )
        try:
            await (await nc.jetstream().key_value(TOKENS)).put("legacy", json.dumps(legacy).encode())
        finally:
            await nc.close()

    asyncio.run(store())
    wait_for(
        lambda: secured.node.get("/v1/jobs", headers=bearer(token)).status_code == 200, what="the old token"
    )
    listed = secured.node.get("/v1/tokens", headers=secured.admin).json()
    assert next(t for t in listed if t["name"] == "legacy")["expires_at"] is None


def test_the_bootstrap_token_can_be_revoked_and_stays_revoked(tmp_path: Path) -> None:
    env = {"DKRON_NATS_BOOTSTRAP_TOKEN": BOOTSTRAP}
    node = Node(tmp_path / "revoke", extra=["--auth"], env=env)
    with running(node):
        admin = node.post("/v1/tokens", json={"name": "keeper", "role": "admin"}, headers=bearer(BOOTSTRAP))
        keeper = bearer(admin.json()["token"])
        revoked = node.request("DELETE", "/v1/tokens/bootstrap", headers=bearer(BOOTSTRAP))
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["name"] == "bootstrap"
        assert node.get("/v1/jobs", headers=bearer(BOOTSTRAP)).status_code == 401
        assert node.get("/v1/jobs", headers=keeper).status_code == 200
        again = node.request("DELETE", "/v1/tokens/bootstrap", headers=keeper)
        assert again.status_code == 404
        assert "bootstrap" not in [t["name"] for t in node.get("/v1/tokens", headers=keeper).json()]
        revocations = [
            e for e in node.get("/v1/audit", headers=keeper).json() if e["action"] == "token.revoke"
        ]
        assert revocations[0]["target"] == "bootstrap"
        assert BOOTSTRAP not in node.logs()
    with running(node):  # the same value after a restart: still revoked
        assert node.get("/v1/jobs", headers=bearer(BOOTSTRAP)).status_code == 401
    fresh = "bootstrap-" + uuid.uuid4().hex
    node.env = {"DKRON_NATS_BOOTSTRAP_TOKEN": fresh}
    with running(node):  # a new value is a new token
        assert node.get("/v1/jobs", headers=bearer(fresh)).status_code == 200
