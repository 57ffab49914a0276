"""The built-in ``nats`` executor against real nats-servers started by each test.

A server is started per test on free loopback ports with a temporary store; the "other NATS" of the
``url`` tests requires a user and password.  Its monitoring endpoint tells whether the executor closed the
connection it opened for a run.  The executor always opens a connection of its own (to the job's ``url`` or
the agent's ``--nats-executor-url``): the node's connection (``ctx.nc``) is given to it only to show that
it is never used.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dkron_nats.agent.executor import ConfigError, ExecutionContext, ExecutorResult, OutputBuffer
from dkron_nats.agent.nats_executor import NatsExecutor
from dkron_nats.config import Settings
from dkron_nats.natsserver import nats_server_binary
from tests.cluster import wait_for_async
from tests.harness import _stop_with_parent, free_port, stop_process, wait_for

pytestmark = pytest.mark.anyio

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class NatsServer:
    """One nats-server process with JetStream and a monitoring port; `auth` adds a user and password."""

    work_dir: Path
    auth: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.monitor_port = free_port()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            f'listen: "127.0.0.1:{self.port}"',
            f'http: "127.0.0.1:{self.monitor_port}"',
            f'jetstream {{ store_dir: "{self.work_dir / "store"}" }}',
        ]
        if self.auth:
            lines.append(f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}')
        return "\n".join(lines) + "\n"

    def start(self) -> NatsServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "nats.conf"
        conf.write_text(self.config())
        with (self.work_dir / "nats.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_stop_with_parent,
            )
        wait_for(self.healthy, 20, f"nats-server on port {self.port}")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited: {(self.work_dir / 'nats.log').read_text()[-2000:]}")
        return httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=5).status_code == 200

    async def connections(self) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{self.monitor_port}/connz")
        count: int = response.json()["num_connections"]
        return count

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc)


@pytest.fixture
def node_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """The NATS the node is in (its own connection, `ctx.nc`, is connected here)."""
    server = NatsServer(tmp_path / "node-nats")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def other_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """Another NATS that requires a user and password, reached through `url`."""
    server = NatsServer(tmp_path / "other-nats", auth=True)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def nc(node_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(node_nats.url, allow_reconnect=False)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def subject() -> str:
    return f"jobs.{uuid.uuid4().hex}"


def context(nc: Client | None, execution_id: str = "1700000000-node-a") -> ExecutionContext:
    return ExecutionContext(job_name="nightly-report", execution_id=execution_id, node_name="node-a", nc=nc)


async def run(
    config: dict[str, str], ctx: ExecutionContext, within: float = 10.0, executor: NatsExecutor | None = None
) -> tuple[ExecutorResult, str]:
    output = OutputBuffer()
    with anyio.fail_after(within):
        result = await (executor or NatsExecutor()).execute(config, ctx, output)
    return result, output.text()


async def next_message(sub: Subscription, within: float = 5.0) -> Msg:
    with anyio.fail_after(within):
        return await anext(sub.messages)


# --------------------------------------------------------------------------- publish


@pytest.mark.parametrize(
    "headers",
    [
        json.dumps({"X-Tenant": "acme", "X-Callback": "http://host:8080/done"}),
        json.dumps(["X-Tenant: acme", "X-Callback: http://host:8080/done"]),
    ],
    ids=["object", "dkron-array"],
)
async def test_publish_reaches_a_subscriber_with_its_headers(
    nc: Client, node_nats: NatsServer, subject: str, headers: str
) -> None:
    sub = await nc.subscribe(subject)
    await nc.flush()  # subscribed before the executor's own connection publishes
    config = {"subject": subject, "message": "hello", "headers": headers, "url": node_nats.url}
    result, output = await run(config, context(nc, "1700000000-node-a=2"))
    assert result == ExecutorResult(True)
    assert output == (
        f'published 5 bytes on subject "{subject}" via {node_nats.url} '
        "(Nats-Msg-Id nightly-report:1700000000-node-a)\n"
    )
    msg = await next_message(sub)
    assert msg.data == b"hello"
    assert msg.headers == {
        "X-Tenant": "acme",
        "X-Callback": "http://host:8080/done",  # split on the first colon only
        "Dkron-Job": "nightly-report",
        "Dkron-Execution-Id": "1700000000-node-a=2",
        "Nats-Msg-Id": "nightly-report:1700000000-node-a",
    }


async def test_a_retried_launch_is_stored_once_by_jetstream(
    nc: Client, node_nats: NatsServer, subject: str
) -> None:
    js = nc.jetstream()
    stream = f"S{uuid.uuid4().hex}"
    await js.add_stream(name=stream, subjects=[subject])
    config = {"subject": subject, "message": "rebuild", "url": node_nats.url}
    for execution_id in ("1700000000-node-a", "1700000000-node-a=2", "1700000060-node-a"):
        result, _ = await run(config, context(nc, execution_id))
        assert result.success

    async def stored() -> int:
        return (await js.stream_info(stream)).state.messages

    # The stream stores in publish order: once the last launch is in, the retry before it was judged.
    await wait_for_async(lambda: _at_least(stored(), 2), 5, "the second launch to be stored")
    assert await stored() == 2  # attempt 2 of the first launch was dropped as a duplicate


async def test_without_a_url_the_run_fails_and_the_nodes_connection_is_not_used(
    nc: Client, subject: str
) -> None:
    sub = await nc.subscribe(subject)
    await nc.flush()
    result, output = await run({"subject": subject, "message": "x"}, context(nc))
    assert result == ExecutorResult(
        False,
        "nats: no NATS to publish to on node node-a: set executor_config.url (and its userName/password "
        "or token), or start the agent with --nats-executor-url; the node's own connection is never used "
        "for jobs",
    )
    assert output == ""
    with pytest.raises(TimeoutError):
        await next_message(sub, within=0.3)


async def test_the_nodes_connection_is_never_used(node_nats: NatsServer, subject: str) -> None:
    """Even a closed node connection does not matter: the run opens its own."""
    client = await nats.connect(node_nats.url, allow_reconnect=False)
    await client.close()
    result, output = await run({"subject": subject, "url": node_nats.url}, context(client))
    assert result == ExecutorResult(True)
    assert f"via {node_nats.url}" in output


async def test_without_a_url_the_agents_nats_executor_url_is_used(
    nc: Client, other_nats: NatsServer, subject: str
) -> None:
    watcher = await nats.connect(other_nats.url, user=USER, password=PASSWORD, allow_reconnect=False)
    try:
        on_other = await watcher.subscribe(subject)
        await watcher.flush()
        executor = NatsExecutor()
        executor.configure(Settings(nats_executor_url=other_nats.url))
        config = {"subject": subject, "message": "x", "userName": USER, "password": PASSWORD}
        result, output = await run(config, context(nc), executor=executor)
        assert result == ExecutorResult(True)
        assert f"via {other_nats.url}" in output
        assert (await next_message(on_other)).data == b"x"
    finally:
        await watcher.close()


async def test_a_job_cannot_publish_into_the_clusters_token_bucket(nc: Client, node_nats: NatsServer) -> None:
    """A token written with a plain publish on `$KV.dkron-tokens.<name>` would be accepted by the API."""
    tokens = await nc.jetstream().create_key_value(bucket="dkron-tokens")
    forged = json.dumps({"name": "evil", "role": "admin", "hash": "0" * 64})
    for config in (
        {"subject": "$KV.dkron-tokens.evil", "message": forged},  # formerly: on the node's own connection
        {"subject": "$KV.dkron-tokens.evil", "message": forged, "url": node_nats.url},
    ):
        with pytest.raises(ConfigError, match="belong to NATS and dkron-nats"):
            NatsExecutor().validate(config)
        result, _ = await run(config, context(nc))
        assert not result.success
        assert result.error.startswith('nats: invalid "subject" "$KV.dkron-tokens.evil": subjects starting')
    await nc.flush()
    with pytest.raises(nats.js.errors.NoKeysError):
        await tokens.keys()  # the bucket is still empty


# --------------------------------------------------------------------------- request


async def test_request_output_is_the_reply(nc: Client, node_nats: NatsServer, subject: str) -> None:
    sub = await nc.subscribe(subject)
    await nc.flush()
    seen: list[Msg] = []

    async def respond_once() -> None:
        msg = await next_message(sub)
        seen.append(msg)
        await msg.respond(b"pong: " + msg.data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(respond_once)
        config = {"subject": subject, "message": "ping", "request": "true", "url": node_nats.url}
        result, output = await run(config, context(nc))
    assert result == ExecutorResult(True)
    assert output == "pong: ping"
    assert seen[0].headers is not None
    assert seen[0].headers["Dkron-Job"] == "nightly-report"


async def test_request_without_responders_fails_clearly(
    nc: Client, node_nats: NatsServer, subject: str
) -> None:
    result, output = await run({"subject": subject, "request": "1", "url": node_nats.url}, context(nc))
    assert not result.success
    assert result.error.startswith(f'nats: no responders on subject "{subject}"')
    assert output == ""


async def test_request_that_gets_no_reply_times_out(nc: Client, node_nats: NatsServer, subject: str) -> None:
    await nc.subscribe(subject)  # a silent subscriber: there is a responder, but it never answers
    await nc.flush()
    config = {"subject": subject, "request": "true", "timeout": "300ms", "url": node_nats.url}
    with anyio.fail_after(5):
        result, _ = await run(config, context(nc))
    assert not result.success
    assert f'no reply on subject "{subject}" within 0.3s' in result.error


# --------------------------------------------------------------------------- another NATS through url


async def test_url_with_credentials_publishes_on_that_nats_and_closes_its_connection(
    nc: Client, other_nats: NatsServer, subject: str
) -> None:
    watcher = await nats.connect(other_nats.url, user=USER, password=PASSWORD, allow_reconnect=False)
    try:
        on_other = await watcher.subscribe(subject)
        on_node = await nc.subscribe(subject)
        await watcher.flush()
        await nc.flush()
        config = {"subject": subject, "message": "x", "url": other_nats.url, "userName": USER}
        result, output = await run({**config, "password": PASSWORD}, context(nc))
        assert result == ExecutorResult(True)
        assert f"via {other_nats.url}" in output
        assert (await next_message(on_other)).data == b"x"
        with pytest.raises(TimeoutError):
            await next_message(on_node, within=0.3)
        await wait_for_async(lambda: only_the_watcher(other_nats), 5, "the run's connection to close")
    finally:
        await watcher.close()


async def _at_least(count: Awaitable[int], minimum: int) -> bool:
    return await count >= minimum


async def only_the_watcher(server: NatsServer) -> bool:
    """True once the test's own client is the server's only connection."""
    return await server.connections() == 1


async def test_wrong_password_fails_naming_the_keys(nc: Client, other_nats: NatsServer, subject: str) -> None:
    config = {"subject": subject, "url": other_nats.url, "userName": USER, "password": "wrong"}
    result, _ = await run(config, context(nc))
    assert not result.success
    assert result.error.startswith(f"nats: cannot connect to {other_nats.url}: ")
    assert "Authorization Violation" in result.error
    assert 'check "userName" and "password"' in result.error
    assert "wrong" not in result.error


async def test_unreachable_url_fails_saying_where(subject: str) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result, _ = await run({"subject": subject, "url": url, "timeout": "2s"}, context(None))
    assert not result.success
    assert result.error.startswith(f"nats: cannot connect to {url}: ")


async def test_cancelled_run_closes_its_connection(other_nats: NatsServer, subject: str) -> None:
    watcher = await nats.connect(other_nats.url, user=USER, password=PASSWORD, allow_reconnect=False)
    try:
        silent = await watcher.subscribe(subject)
        await watcher.flush()
        config = {"subject": subject, "request": "true", "timeout": "60s", "url": other_nats.url}
        config |= {"userName": USER, "password": PASSWORD}
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, config, context(None), 60.0)
            await next_message(silent)  # the request is in flight on the run's own connection
            assert await other_nats.connections() == 2
            tg.cancel_scope.cancel()
        await wait_for_async(
            lambda: only_the_watcher(other_nats), 5, "the cancelled run's connection to close"
        )
    finally:
        await watcher.close()


async def test_debug_shows_the_config_without_the_password(
    nc: Client, other_nats: NatsServer, subject: str
) -> None:
    url = f"nats://{USER}:{PASSWORD}@127.0.0.1:{other_nats.port}"
    result, output = await run({"subject": subject, "url": url, "debug": "1"}, context(nc))
    assert result.success
    assert '"subject": "' + subject in output
    assert "Nats-Msg-Id" in output
    assert PASSWORD not in output


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({}, '"subject" is missing'),
        ({"subject": "jobs.*"}, 'invalid "subject" "jobs.*": wildcards'),
        ({"subject": "jobs.>"}, 'invalid "subject" "jobs.>": wildcards'),
        ({"subject": "jobs..done"}, 'invalid "subject" "jobs..done": it has an empty token'),
        ({"subject": "jobs done"}, 'invalid "subject" "jobs done": it contains whitespace'),
        ({"subject": "s", "headers": "{not json"}, '"headers" is not valid JSON'),
        ({"subject": "s", "headers": '["no colon"]'}, '"headers" entry "no colon" is not a "Name: value"'),
        ({"subject": "s", "headers": '"text"'}, '"headers" must be a JSON object'),
        ({"subject": "s", "headers": '{"A": 1}'}, '"headers" value of "A" must be a single-line string'),
        ({"subject": "s", "headers": '{"A B": "x"}'}, '"headers" has an invalid name "A B"'),
        ({"subject": "s", "headers": '["A: 1", "a: 2"]'}, '"headers" names "a" twice'),
        ({"subject": "s", "headers": '{"nats-msg-id": "x"}'}, '"headers" cannot set "nats-msg-id"'),
        ({"subject": "s", "request": "yes"}, 'invalid "request" "yes": use true or false'),
        ({"subject": "s", "timeout": "soon"}, 'invalid "timeout" "soon"'),
        ({"subject": "s", "timeout": "0"}, 'invalid "timeout" "0"'),
        ({"subject": "s", "timeout": "-1s"}, 'invalid "timeout" "-1s"'),
        (
            {"subject": "$KV.dkron-tokens.x"},
            'invalid "subject" "$KV.dkron-tokens.x": subjects starting with $',
        ),
        ({"subject": "$JS.API.STREAM.DELETE.KV_dkron-jobs"}, "belong to NATS and dkron-nats"),
        ({"subject": "$SYS.REQ.SERVER.PING"}, "belong to NATS and dkron-nats"),
        ({"subject": "_INBOX.node-a.x"}, "belong to NATS and dkron-nats"),
        ({"subject": "_INBOX_trigger.x"}, "belong to NATS and dkron-nats"),
        ({"subject": "dkron.run.node.node-a"}, "belong to NATS and dkron-nats"),
        ({"subject": "dkron.trigger.nightly"}, "belong to NATS and dkron-nats"),
        ({"subject": "s", "url": "http://127.0.0.1:4222"}, 'invalid "url" "http://127.0.0.1:4222"'),
        ({"subject": "s", "url": "nats://a:1,ws://b:2"}, '"url" mixes websocket and plain NATS'),
    ],
)
def test_invalid_config_is_refused_naming_the_key(config: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NatsExecutor().validate(config)
    assert names in str(caught.value)


def test_valid_config_is_accepted() -> None:
    for timeout in ("10", "1.5s", "1m30s", ""):
        NatsExecutor().validate({"subject": "jobs.done", "timeout": timeout, "request": "False"})
    NatsExecutor().validate(
        {"subject": "jobs.done", "url": "nats://a:4222, tls://b:4222", "userName": "u", "password": "p"}
    )
    # Without url: the agents may have --nats-executor-url, where these credentials go.
    NatsExecutor().validate({"subject": "jobs.done", "userName": "u", "password": "p", "token": "t"})
    NatsExecutor().validate({"subject": "dkronish.jobs"})
