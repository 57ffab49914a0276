"""The http executor, against real HTTP and HTTPS servers started by each test (tests/httpserver.py).

Certificates are made by the test (trustme); connection reuse and leaks are observed from the server side
(accepted and open connections) and from this process's open file descriptors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import trustme

from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult
from dkron_nats.agent.http_executor import HttpExecutor
from dkron_nats.agent.registry import discover_executors
from dkron_nats.config import Settings
from dkron_nats.version import VERSION
from tests.harness import free_port
from tests.httpserver import GATE_TIMEOUT, Exchange, HttpTestServer, serving
from tests.sinks import Collector

pytestmark = pytest.mark.anyio

CTX = ExecutionContext(job_name="billing", execution_id="1714567800000000000-node-a", node_name="node-a")
SETTLE = 10.0
"""Deadline for the server side to notice closed connections (its threads run on their own)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, the client side in files."""

    ca: trustme.CA
    server_cert: trustme.LeafCert
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    client_combined_file: Path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        if require_client_cert:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    client = ca.issue_cert("client.example", common_name="dkron-client")
    pki = Pki(
        ca=ca,
        server_cert=ca.issue_cert("127.0.0.1", "localhost"),
        ca_file=tmp_path / "ca.pem",
        client_cert_file=tmp_path / "client.pem",
        client_key_file=tmp_path / "client.key",
        client_combined_file=tmp_path / "client-with-key.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert_file))
    client.private_key_pem.write_to_path(str(pki.client_key_file))
    client.private_key_and_cert_chain_pem.write_to_path(str(pki.client_combined_file))
    return pki


@pytest.fixture
def web() -> Iterator[HttpTestServer]:
    with serving() as server:
        yield server


@pytest.fixture
def tls_web(pki: Pki) -> Iterator[HttpTestServer]:
    with serving(pki.server_context()) as server:
        yield server


@pytest.fixture
def mtls_web(pki: Pki) -> Iterator[HttpTestServer]:
    with serving(pki.server_context(require_client_cert=True)) as server:
        yield server


@pytest.fixture
async def executor() -> AsyncIterator[HttpExecutor]:
    ex = HttpExecutor()
    try:
        yield ex
    finally:
        await ex.aclose()


async def run(
    executor: HttpExecutor, config: dict[str, str], ctx: ExecutionContext = CTX, within: float = 10.0
) -> tuple[ExecutorResult, str]:
    sink = Collector()
    with anyio.fail_after(within):
        result = await executor.execute(config, ctx, sink)
    return result, sink.text


def get(url: str, **extra: str) -> dict[str, str]:
    return {"method": "GET", "url": url, **extra}


async def thread_wait(event: Callable[[float], bool], within: float = 5.0) -> bool:
    """Wait on a server-side threading.Event without blocking the event loop."""
    return await anyio.to_thread.run_sync(event, within)


async def settle(condition: Callable[[], bool], within: float = SETTLE, what: str = "condition") -> None:
    with anyio.move_on_after(within):
        while not condition():
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------- routes


def status_from_query(exchange: Exchange) -> None:
    code = int(exchange.query["code"][0])
    exchange.reply(code, f"status {code}".encode())


def json_health(exchange: Exchange) -> None:
    exchange.reply(200, b'{"status": "healthy", "checks": 3}', {"Content-Type": "application/json"})


def hang(exchange: Exchange) -> None:
    """Never answers; returns when the client gives up."""
    exchange.wait_for_client_to_leave()


def gated(exchange: Exchange) -> None:
    exchange.server.release.wait(GATE_TIMEOUT)
    exchange.reply(200, b"gated ok")


def two_parts(exchange: Exchange) -> None:
    """Sends the first part, then the rest only once the test has released it."""
    first, rest = b"first part\n", b"second part\n"
    exchange.send_response(200)
    exchange.send_header("Content-Length", str(len(first) + len(rest)))
    exchange.end_headers()
    exchange.wfile.write(first)
    exchange.wfile.flush()
    exchange.server.release.wait(GATE_TIMEOUT)
    exchange.wfile.write(rest)


def redirect_to_ok(exchange: Exchange) -> None:
    exchange.reply(302, b"", {"Location": "/ok"})


# --------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"url": "http://127.0.0.1/"}, "method"),
        ({"method": "GE T", "url": "http://127.0.0.1/"}, "method"),
        ({"method": "GET"}, "url"),
        ({"method": "GET", "url": "ftp://127.0.0.1/file"}, "url"),
        ({"method": "GET", "url": "/relative/path"}, "url"),
        (get("http://127.0.0.1/", headers='["NoColonHere"]'), "headers"),
        (get("http://127.0.0.1/", headers='[": value without a name"]'), "headers"),
        (get("http://127.0.0.1/", headers='["Bad Name: v"]'), "headers"),
        (get("http://127.0.0.1/", headers='{"X-A": "b"}'), "headers"),
        (get("http://127.0.0.1/", headers="X-A: b"), "headers"),
        (get("http://127.0.0.1/", headers="[1]"), "headers"),
        (get("http://127.0.0.1/", timeout="soon"), "timeout"),
        (get("http://127.0.0.1/", timeout="1.5"), "timeout"),
        (get("http://127.0.0.1/", timeout="-5"), "timeout"),
        (get("http://127.0.0.1/", expectCode="200,ok"), "expectCode"),
        (get("http://127.0.0.1/", expectCode="2000"), "expectCode"),
        (get("http://127.0.0.1/", expectBody="(unclosed"), "expectBody"),
        (get("http://127.0.0.1/", tlsCertificateKeyFile="/k.pem"), "tlsCertificateKeyFile"),
    ],
)
async def test_invalid_config_is_refused_naming_the_key(config: dict[str, str], key: str) -> None:
    executor = HttpExecutor()
    with pytest.raises(ConfigError, match=key):
        executor.validate(config)
    # A job stored before validation existed fails its run with the same message instead of raising.
    result, _ = await run(executor, config)
    assert not result.success
    assert key in result.error


@pytest.mark.parametrize(
    "config",
    [
        get("http://127.0.0.1/", timeout="45"),
        get("http://127.0.0.1/", timeout="1m30s"),
        get("http://127.0.0.1/", timeout="0"),
        get("http://127.0.0.1/", expectCode="200, 201"),
        get("https://127.0.0.1/", headers='["A: b", "C:d", "Url: http://x:1/y"]', expectBody=r"^ok\b"),
        {"method": "post", "url": "http://127.0.0.1/", "body": "x", "debug": "1", "tlsNoVerifyPeer": "1"},
    ],
)
def test_valid_config_is_accepted(config: dict[str, str]) -> None:
    HttpExecutor().validate(config)


def test_the_http_executor_is_registered() -> None:
    assert isinstance(discover_executors().get("http"), HttpExecutor)


# --------------------------------------------------------------------------- requests and output


async def test_get_outputs_the_body(web: HttpTestServer, executor: HttpExecutor) -> None:
    result, out = await run(executor, get(f"{web.url}/ok"))
    assert result == ExecutorResult(True)
    assert out == "ok"
    [seen] = web.requests
    assert (seen.method, seen.path) == ("GET", "/ok")
    assert seen.header("User-Agent") == [f"dkron-nats/{VERSION}"]


async def test_post_sends_body_and_headers_with_colons(web: HttpTestServer, executor: HttpExecutor) -> None:
    headers = [
        "Content-Type: application/json",
        "X-Callback: http://hooks.example:8080/done?at=12:30",
        "X-Tight:v",
        "X-Team: Café ☕",
    ]
    config = {
        "method": "POST",
        "url": f"{web.url}/ok",
        "body": '{"amount": 3}',
        "headers": json.dumps(headers),
    }
    result, _ = await run(executor, config)
    assert result.success
    [seen] = web.requests
    assert seen.method == "POST"
    assert seen.body == b'{"amount": 3}'
    assert seen.header("Content-Type") == ["application/json"]
    assert seen.header("X-Callback") == ["http://hooks.example:8080/done?at=12:30"]
    assert seen.header("X-Tight") == ["v"]
    # Sent as UTF-8 bytes, as Go does; the stdlib server reads header bytes as latin-1.
    assert seen.header("X-Team") == ["Café ☕".encode().decode("latin-1")]


async def test_redirects_are_followed(web: HttpTestServer, executor: HttpExecutor) -> None:
    web.routes["/old"] = redirect_to_ok
    result, out = await run(executor, get(f"{web.url}/old"))
    assert result.success
    assert out == "ok"
    assert [seen.path for seen in web.requests] == ["/old", "/ok"]


async def test_idempotency_key_is_per_launch_not_per_attempt(
    web: HttpTestServer, executor: HttpExecutor
) -> None:
    first = dataclasses.replace(CTX, execution_id="1714567800000000000-node-a", attempt=1)
    retry = dataclasses.replace(CTX, execution_id="1714567800000000000-node-a=2", attempt=2)
    next_launch = dataclasses.replace(CTX, execution_id="1714567860000000000-node-a", attempt=1)
    for ctx in (first, retry, next_launch):
        result, _ = await run(executor, get(f"{web.url}/ok"), ctx)
        assert result.success
    keys = [seen.header("Idempotency-Key") for seen in web.requests]
    assert keys[0] == keys[1] == ["billing:1714567800000000000-node-a"]
    assert keys[2] == ["billing:1714567860000000000-node-a"]


async def test_job_headers_win_over_the_default_ones(web: HttpTestServer, executor: HttpExecutor) -> None:
    headers = json.dumps(["idempotency-key: order-77", "User-Agent: my-agent/2"])
    result, _ = await run(executor, get(f"{web.url}/ok", headers=headers))
    assert result.success
    [seen] = web.requests
    assert seen.header("Idempotency-Key") == ["order-77"]
    assert seen.header("User-Agent") == ["my-agent/2"]


@pytest.mark.parametrize(
    ("status", "expect_code", "error"),
    [
        (200, "", ""),
        (201, "", ""),
        (404, "", "http: server answered 404 Not Found (set expectCode to accept other statuses)"),
        (
            500,
            "",
            "http: server answered 500 Internal Server Error (set expectCode to accept other statuses)",
        ),
        (500, "500", ""),
        (201, "200, 201", ""),
        (500, "200", "http: expected status in [200], got 500"),
        (200, "201,202", "http: expected status in [201, 202], got 200"),
    ],
)
async def test_status_decides_success(
    web: HttpTestServer, executor: HttpExecutor, status: int, expect_code: str, error: str
) -> None:
    web.routes["/status"] = status_from_query
    result, out = await run(executor, get(f"{web.url}/status?code={status}", expectCode=expect_code))
    assert result == ExecutorResult(not error, error)
    assert out == f"status {status}"  # the body is the output, failed or not


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        (r'"status":\s*"healthy"', ""),
        (r"checks\": [0-9]+\}$", ""),
        ("degraded", 'http: body does not match expectBody "degraded"'),
    ],
)
async def test_expect_body(web: HttpTestServer, executor: HttpExecutor, pattern: str, error: str) -> None:
    web.routes["/health"] = json_health
    result, out = await run(executor, get(f"{web.url}/health", expectBody=pattern))
    assert result == ExecutorResult(not error, error)
    assert out == '{"status": "healthy", "checks": 3}'


async def test_expect_body_searches_a_bounded_start_of_the_body(web: HttpTestServer) -> None:
    web.routes["/health"] = json_health
    executor = HttpExecutor(expect_body_limit=10)
    try:
        result, out = await run(executor, get(f"{web.url}/health", expectBody="checks"))
    finally:
        await executor.aclose()
    assert result == ExecutorResult(
        False, 'http: body does not match expectBody "checks" (only the first 10 of 34 bytes were searched)'
    )
    assert out == '{"status": "healthy", "checks": 3}'  # the output is not cut by the search bound


async def test_status_failure_is_reported_before_body_failure(
    web: HttpTestServer, executor: HttpExecutor
) -> None:
    web.routes["/status"] = status_from_query
    result, _ = await run(executor, get(f"{web.url}/status?code=503", expectBody="nothing like this"))
    assert result.error.startswith("http: server answered 503")


async def test_output_is_streamed_as_it_arrives(web: HttpTestServer, executor: HttpExecutor) -> None:
    web.routes["/stream"] = two_parts
    sink = Collector()
    results: list[ExecutorResult] = []

    async def execute() -> None:
        results.append(await executor.execute(get(f"{web.url}/stream"), CTX, sink))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        # The server holds back the second part until released: the first must already be in the sink.
        await sink.wait_for(lambda text: text == "first part\n")
        web.release.set()
    assert results == [ExecutorResult(True)]
    assert sink.text == "first part\nsecond part\n"


# --------------------------------------------------------------------------- failures of the exchange


@pytest.mark.parametrize(("configured", "shown", "seconds"), [("1", "1s", 1.0), ("300ms", "300ms", 0.3)])
async def test_timeout_aborts_the_request(
    web: HttpTestServer, executor: HttpExecutor, configured: str, shown: str, seconds: float
) -> None:
    web.routes["/hang"] = hang
    started = time.monotonic()
    result, _ = await run(executor, get(f"{web.url}/hang", timeout=configured))
    elapsed = time.monotonic() - started
    assert result == ExecutorResult(False, f"http: request timed out after {shown}")
    assert seconds <= elapsed < seconds + 3
    assert await thread_wait(web.client_disconnected.wait), "the timed-out connection was left open"


async def test_cancellation_aborts_the_request_promptly(web: HttpTestServer, executor: HttpExecutor) -> None:
    web.routes["/hang"] = hang
    results: list[ExecutorResult] = []

    async def execute() -> None:
        results.append(await executor.execute(get(f"{web.url}/hang", timeout="0"), CTX, Collector()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        assert await thread_wait(web.request_arrived.wait)
        cancelled_at = time.monotonic()
        tg.cancel_scope.cancel()
    assert time.monotonic() - cancelled_at < 1.0
    assert results == []
    assert await thread_wait(web.client_disconnected.wait), "the cancelled request's connection stayed open"


async def test_connection_refused(executor: HttpExecutor) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    result, out = await run(executor, {"method": "POST", "url": url})
    assert not result.success
    assert result.error.startswith(f"http: cannot connect to {url}: ")
    assert "refused" in result.error.lower()
    assert out == ""


async def test_debug_shows_the_request_with_secrets_masked(
    web: HttpTestServer, executor: HttpExecutor
) -> None:
    headers = [
        "Authorization: Bearer s3cr3t-a",
        "Proxy-Authorization: Basic s3cr3t-b",
        "X-Api-Key: s3cr3t-c",
        "X-Auth-Token: s3cr3t-d",
        "Client-Secret: s3cr3t-e",
        "X-Password: s3cr3t-f",
        "X-Trace: visible-1",
    ]
    port = web.server_address[1]
    config = {
        "method": "POST",
        "url": f"http://deploy:s3cr3t-g@127.0.0.1:{port}/ok?token=s3cr3t-h&page=2",
        "headers": json.dumps(headers),
        "body": "hello",
        "debug": "true",
    }
    result, out = await run(executor, config)
    assert result.success
    assert "s3cr3t" not in out
    lines = out.splitlines()
    assert lines[0] == f"> POST http://deploy:***@127.0.0.1:{port}/ok?token=***&page=2"
    for name in ("Authorization", "Proxy-Authorization", "X-Api-Key", "X-Auth-Token", "Client-Secret"):
        assert f"> {name}: ***" in lines
    assert "> X-Trace: visible-1" in lines
    assert "> (5 bytes of body)" in lines
    assert lines[-2:] == ["< 200 OK", "ok"]
    # Masking is for the output only; the job's own Authorization wins over the url's credentials (as in Go).
    [seen] = web.requests
    assert seen.header("Authorization") == ["Bearer s3cr3t-a"]
    assert seen.header("X-Api-Key") == ["s3cr3t-c"]


async def test_url_credentials_become_basic_auth(web: HttpTestServer, executor: HttpExecutor) -> None:
    port = web.server_address[1]
    result, out = await run(executor, get(f"http://deploy:pw@127.0.0.1:{port}/ok"))
    assert result.success
    assert not out.startswith(">")  # no debug, no request description
    [seen] = web.requests
    assert seen.header("Authorization") == ["Basic ZGVwbG95OnB3"]


# --------------------------------------------------------------------------- TLS


async def test_https_with_tls_root_cas_file(
    tls_web: HttpTestServer, executor: HttpExecutor, pki: Pki
) -> None:
    result, out = await run(executor, get(f"{tls_web.url}/ok", tlsRootCAsFile=str(pki.ca_file)))
    assert result == ExecutorResult(True)
    assert out == "ok"


async def test_https_with_an_unknown_ca_fails_with_a_hint(
    tls_web: HttpTestServer, executor: HttpExecutor
) -> None:
    result, _ = await run(executor, get(f"{tls_web.url}/ok"))
    assert not result.success
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert "tlsRootCAsFile" in result.error
    assert "tlsNoVerifyPeer" in result.error
    assert tls_web.requests == []


async def test_tls_root_cas_file_of_another_ca_fails(
    tls_web: HttpTestServer, executor: HttpExecutor, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    result, _ = await run(executor, get(f"{tls_web.url}/ok", tlsRootCAsFile=str(other)))
    assert not result.success
    assert "CERTIFICATE_VERIFY_FAILED" in result.error


@pytest.mark.parametrize(
    ("value", "success"), [("true", True), ("1", True), ("T", True), ("false", False), ("", False)]
)
async def test_tls_no_verify_peer(
    tls_web: HttpTestServer, executor: HttpExecutor, value: str, success: bool
) -> None:
    result, _ = await run(executor, get(f"{tls_web.url}/ok", tlsNoVerifyPeer=value))
    assert result.success is success


async def test_mutual_tls_with_a_client_certificate(
    mtls_web: HttpTestServer, executor: HttpExecutor, pki: Pki
) -> None:
    config = get(
        f"{mtls_web.url}/ok",
        tlsRootCAsFile=str(pki.ca_file),
        tlsCertificateFile=str(pki.client_cert_file),
        tlsCertificateKeyFile=str(pki.client_key_file),
    )
    result, out = await run(executor, config)
    assert result == ExecutorResult(True)
    assert out == "ok"
    assert [seen.client_cn for seen in mtls_web.requests] == ["dkron-client"]


async def test_mutual_tls_with_certificate_and_key_in_one_file(
    mtls_web: HttpTestServer, executor: HttpExecutor, pki: Pki
) -> None:
    config = get(
        f"{mtls_web.url}/ok",
        tlsRootCAsFile=str(pki.ca_file),
        tlsCertificateFile=str(pki.client_combined_file),
    )
    result, _ = await run(executor, config)
    assert result.success
    assert [seen.client_cn for seen in mtls_web.requests] == ["dkron-client"]


async def test_mutual_tls_without_a_client_certificate_fails(
    mtls_web: HttpTestServer, executor: HttpExecutor, pki: Pki
) -> None:
    result, _ = await run(executor, get(f"{mtls_web.url}/ok", tlsRootCAsFile=str(pki.ca_file)))
    assert not result.success
    assert result.error.startswith("http: ")
    assert mtls_web.requests == []


@pytest.mark.parametrize("key", ["tlsCertificateFile", "tlsCertificateKeyFile", "tlsRootCAsFile"])
async def test_missing_tls_file_fails_the_run_naming_key_and_path(
    tls_web: HttpTestServer, executor: HttpExecutor, pki: Pki, tmp_path: Path, key: str
) -> None:
    files = {
        "tlsCertificateFile": str(pki.client_cert_file),
        "tlsCertificateKeyFile": str(pki.client_key_file),
        "tlsRootCAsFile": str(pki.ca_file),
    }
    missing = str(tmp_path / "gone" / "file.pem")
    files[key] = missing
    result, _ = await run(executor, get(f"{tls_web.url}/ok", **files))
    assert result == ExecutorResult(
        False, f'http: {key} "{missing}" does not exist: fix the path or remove {key}'
    )
    assert tls_web.requests == []


async def test_unreadable_ca_bundle_fails_naming_the_key(
    tls_web: HttpTestServer, executor: HttpExecutor, tmp_path: Path
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("this is not a certificate\n")
    result, _ = await run(executor, get(f"{tls_web.url}/ok", tlsRootCAsFile=str(garbage)))
    assert not result.success
    assert result.error.startswith(f'http: cannot load tlsRootCAsFile "{garbage}": ')


# --------------------------------------------------------------------------- connections


async def test_runs_reuse_one_keep_alive_connection(web: HttpTestServer, executor: HttpExecutor) -> None:
    for _ in range(20):
        result, _ = await run(executor, get(f"{web.url}/ok"))
        assert result.success
    assert len(web.requests) == 20
    assert web.accepted == 1
    await executor.aclose()
    await settle(lambda: web.open_connections == 0, what="aclose to close the kept-alive connection")


async def test_tls_runs_reuse_one_connection(
    tls_web: HttpTestServer, executor: HttpExecutor, pki: Pki
) -> None:
    for _ in range(20):
        result, _ = await run(executor, get(f"{tls_web.url}/ok", tlsRootCAsFile=str(pki.ca_file)))
        assert result.success
    assert tls_web.accepted == 1


@pytest.mark.parametrize("route", ["/ok", "/close"])
async def test_200_runs_do_not_grow_open_fds(web: HttpTestServer, executor: HttpExecutor, route: str) -> None:
    await run(executor, get(f"{web.url}{route}"))
    await settle(lambda: web.open_connections <= 1)
    baseline = open_fds()
    for _ in range(200):
        result, _ = await run(executor, get(f"{web.url}{route}"))
        assert result.success
    await settle(lambda: open_fds() <= baseline, what=f"open fds to come back to {baseline}")


async def test_evicted_clients_are_closed(tls_web: HttpTestServer, pki: Pki, tmp_path: Path) -> None:
    # 40 distinct TLS settings cycled through an LRU of 32: every run makes a client and evicts one.
    bundles = [tmp_path / f"ca-{i}.pem" for i in range(40)]
    for bundle in bundles:
        shutil.copy(pki.ca_file, bundle)
    executor = HttpExecutor(client_cache_size=32)
    try:
        for bundle in bundles:
            assert (await run(executor, get(f"{tls_web.url}/ok", tlsRootCAsFile=str(bundle))))[0].success
        await settle(lambda: tls_web.open_connections <= 32)
        baseline = open_fds()
        for i in range(200):
            config = get(f"{tls_web.url}/ok", tlsRootCAsFile=str(bundles[i % len(bundles)]))
            assert (await run(executor, config))[0].success
        assert tls_web.accepted == 240  # the setting cycle defeats the cache: each run was a new client
        await settle(lambda: tls_web.open_connections <= 32, what="evicted clients' connections to close")
        await settle(lambda: open_fds() <= baseline, what=f"open fds to come back to {baseline}")
    finally:
        await executor.aclose()
    await settle(lambda: tls_web.open_connections == 0, what="aclose to close every cached client")


async def test_a_client_evicted_while_in_use_finishes_its_run(
    tls_web: HttpTestServer, pki: Pki, tmp_path: Path
) -> None:
    other_bundle = tmp_path / "same-ca-other-file.pem"
    shutil.copy(pki.ca_file, other_bundle)
    tls_web.routes["/gated"] = gated
    executor = HttpExecutor(client_cache_size=1)
    results: list[tuple[ExecutorResult, str]] = []

    async def slow_run() -> None:
        results.append(await run(executor, get(f"{tls_web.url}/gated", tlsRootCAsFile=str(pki.ca_file))))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_run)
            assert await thread_wait(tls_web.request_arrived.wait)
            # Another TLS setting evicts the first client while its request is still waiting for an answer.
            assert (await run(executor, get(f"{tls_web.url}/ok", tlsRootCAsFile=str(other_bundle))))[
                0
            ].success
            tls_web.release.set()
        assert results == [(ExecutorResult(True), "gated ok")]
        # Once its run ended, the evicted client was closed: only the cached client's connection is left.
        await settle(lambda: tls_web.open_connections == 1, what="the evicted client to close")
    finally:
        await executor.aclose()


async def test_a_rotated_certificate_file_gets_a_new_client(
    mtls_web: HttpTestServer, executor: HttpExecutor, pki: Pki, tmp_path: Path
) -> None:
    cert, key = tmp_path / "rotating.pem", tmp_path / "rotating.key"
    config = get(
        f"{mtls_web.url}/ok",
        tlsRootCAsFile=str(pki.ca_file),
        tlsCertificateFile=str(cert),
        tlsCertificateKeyFile=str(key),
    )
    for cn in ("first-client", "second-client"):
        leaf = pki.ca.issue_cert("client.example", common_name=cn)
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        assert (await run(executor, config))[0].success
    assert [seen.client_cn for seen in mtls_web.requests] == ["first-client", "second-client"]


# --------------------------------------------------------------------------- egress (--http-allow/deny)


def redirect_to_metadata(exchange: Exchange) -> None:
    exchange.reply(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/iam/"})


def configured(deny: tuple[str, ...] = (), allow: tuple[str, ...] = ()) -> HttpExecutor:
    """An executor as a node started with `--http-deny`/`--http-allow` has it."""
    executor = HttpExecutor()
    executor.configure(Settings(http_deny=deny, http_allow=allow))
    return executor


async def test_a_redirect_to_the_metadata_address_is_refused_not_followed(
    web: HttpTestServer, executor: HttpExecutor
) -> None:
    web.routes["/innocent"] = redirect_to_metadata
    started = time.monotonic()
    result, _ = await run(executor, get(f"{web.url}/innocent"))
    assert not result.success
    # Refused by the policy at once: not a connect timeout or an unreachable network.
    assert result.error == (
        "http: refused to connect to 169.254.169.254: it is in 169.254.0.0/16, refused by default "
        "(cloud metadata services answer there); to allow it, start the node with "
        "--http-allow 169.254.169.254/32"
    )
    assert time.monotonic() - started < 5
    assert [seen.path for seen in web.requests] == ["/innocent"]


async def test_the_metadata_address_itself_is_refused(executor: HttpExecutor) -> None:
    result, _ = await run(executor, get("http://169.254.169.254/latest/meta-data/"))
    assert "refused to connect to 169.254.169.254" in result.error
    result, _ = await run(executor, get("http://[::ffff:169.254.169.254]/latest/meta-data/"))
    assert "refused to connect to ::ffff:169.254.169.254: it is in 169.254.0.0/16" in result.error


async def test_http_deny_refuses_a_local_server(web: HttpTestServer) -> None:
    executor = configured(deny=("127.0.0.0/8",))
    try:
        result, out = await run(executor, get(f"{web.url}/ok"))
    finally:
        await executor.aclose()
    assert result == ExecutorResult(
        False,
        "http: refused to connect to 127.0.0.1: it is in 127.0.0.0/8, which --http-deny refuses; "
        "to allow it, start the node with --http-allow 127.0.0.1/32",
    )
    assert out == ""
    assert web.requests == []
    assert web.accepted == 0


async def test_a_host_name_is_judged_by_every_address_it_resolves_to(web: HttpTestServer) -> None:
    executor = configured(deny=("127.0.0.0/8",))
    try:
        result, _ = await run(executor, get(f"http://localhost:{web.server_address[1]}/ok"))
    finally:
        await executor.aclose()
    assert not result.success
    assert "refused to connect to localhost (127.0.0.1): it is in 127.0.0.0/8" in result.error
    assert web.accepted == 0


async def test_http_allow_reopens_a_denied_network(web: HttpTestServer) -> None:
    executor = configured(deny=("127.0.0.0/8",), allow=("127.0.0.1/32",))
    try:
        result, out = await run(executor, get(f"{web.url}/ok"))
    finally:
        await executor.aclose()
    assert result == ExecutorResult(True)
    assert out == "ok"


async def test_tls_is_verified_against_the_host_name_not_the_checked_address(
    pki: Pki,
) -> None:
    """The connection goes to the resolved address, yet the certificate must still carry the URL's name."""
    only_ip = pki.ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    only_ip.configure_cert(ctx)
    executor = HttpExecutor()
    try:
        with serving(pki.server_context()) as named:
            url = f"https://localhost:{named.server_address[1]}/ok"
            result, out = await run(executor, get(url, tlsRootCAsFile=str(pki.ca_file)))
            assert result == ExecutorResult(True)
            assert out == "ok"
        with serving(ctx) as unnamed:
            url = f"https://localhost:{unnamed.server_address[1]}/ok"
            result, _ = await run(executor, get(url, tlsRootCAsFile=str(pki.ca_file)))
            assert not result.success
            assert "CERTIFICATE_VERIFY_FAILED" in result.error
            assert "localhost" in result.error
    finally:
        await executor.aclose()


# --------------------------------------------------------------------------- expectBody on hostile patterns


def a_run_of_as(exchange: Exchange) -> None:
    exchange.reply(200, b"a" * 40 + b"!")


async def _run_while_ticking(executor: HttpExecutor, config: dict[str, str]) -> tuple[ExecutorResult, float]:
    """Run while another task ticks every 10 ms; returns the result and the longest gap between ticks."""
    gaps: list[float] = []
    result: list[ExecutorResult] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        result.append((await run(executor, config, within=15.0))[0])
        tg.cancel_scope.cancel()
    return result[0], max(gaps, default=0.0)


async def test_a_nested_quantifier_expect_body_fails_quickly(
    web: HttpTestServer, executor: HttpExecutor
) -> None:
    web.routes["/as"] = a_run_of_as
    result, gap = await _run_while_ticking(executor, get(f"{web.url}/as", expectBody="^(a+)+$"))
    assert result == ExecutorResult(False, 'http: body does not match expectBody "^(a+)+$"')
    assert gap < 0.9


async def test_a_backtracking_expect_body_is_cut_off_and_the_loop_runs_on(
    web: HttpTestServer, executor: HttpExecutor
) -> None:
    web.routes["/as"] = a_run_of_as
    started = time.monotonic()
    result, gap = await _run_while_ticking(executor, get(f"{web.url}/as", expectBody="^(a|aa)+$"))
    assert not result.success
    assert result.error.startswith('http: expectBody "^(a|aa)+$" took longer than 1s on the response body: ')
    assert "simplify the pattern" in result.error
    # Bounds with room for a loaded machine: unbounded, this search would take minutes, all on the loop.
    assert time.monotonic() - started < 10
    assert gap < 0.9, f"the event loop stalled {gap:.2f}s during the search"
