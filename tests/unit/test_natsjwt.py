"""The JWTs `dkron_nats.natsjwt` mints are what a real nats-server in operator mode accepts (the contract),
with the permissions of `dkron_nats.natsroles` enforced; the same secret always gives the same server."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client, RawCredentials
from nats.aio.subscription import Subscription

from dkron_nats import natsroles
from dkron_nats.natsjwt import (
    ClusterKeys,
    SecretError,
    ensure_secret,
    new_secret,
    read_secret,
    server_config_lines,
    user_credentials,
)
from dkron_nats.natsserver import ServerSecurity
from tests.harness import free_port, spawn_nats_server, wait_for


def test_the_same_secret_gives_the_same_keys_and_server_config_and_another_secret_another() -> None:
    first, again = ClusterKeys.from_secret(b"a" * 64), ClusterKeys.from_secret(b"a" * 64)
    other = ClusterKeys.from_secret(b"b" * 64)

    assert server_config_lines(first) == server_config_lines(again)
    assert first.account_id == again.account_id != other.account_id
    assert first.route_password == again.route_password != other.route_password
    assert first.account_id.startswith("A")
    assert "a" * 16 not in repr(first)


def test_a_secret_file_is_private_is_never_overwritten_and_too_short_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nats-secret"
    secret = ensure_secret(path)

    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_secret(path) == secret == read_secret(path)
    with pytest.raises(FileExistsError):
        new_secret(path)
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(SecretError, match="too short"):
        read_secret(short)
    with pytest.raises(SecretError, match="no such file"):
        read_secret(tmp_path / "missing")


def test_nats_server_accepts_the_minted_jwts_and_enforces_each_roles_permissions(tmp_path: Path) -> None:
    keys = ClusterKeys.from_secret(os.urandom(32).hex().encode())
    port, http_port = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    store = json.dumps(str(tmp_path / "store"))
    lines = ServerSecurity(keys=keys).config_lines()
    conf.write_text(
        "\n".join([f"port: {port}", "host: 127.0.0.1", *lines, f"jetstream {{ store_dir: {store} }}"])
    )
    proc = spawn_nats_server(conf, http_port, tmp_path / "nats.log")
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200, 20)
        errors, stored = asyncio.run(_exercise(f"nats://127.0.0.1:{port}", keys))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    assert stored == b"1"
    assert any('publish to "dkron.result.web2"' in e for e in errors), errors
    assert any('subscription to "dkron.run.node.web2"' in e for e in errors), errors
    assert not any("dkron.result.web1" in e for e in errors), errors
    assert (tmp_path / "store" / "jetstream" / keys.account_id).is_dir()  # the data is the account's


async def _exercise(url: str, keys: ClusterKeys) -> tuple[list[str], bytes]:
    with pytest.raises(nats.errors.Error):  # no credentials, or credentials of another cluster
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    strange = ClusterKeys.from_secret(b"x" * 64)
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            url,
            user_credentials=RawCredentials(user_credentials(strange, "s", natsroles.SERVER)),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )
    server = await nats.connect(
        url, user_credentials=RawCredentials(user_credentials(keys, "s1", natsroles.SERVER))
    )
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    agent_creds = RawCredentials(user_credentials(keys, "web1", natsroles.agent("web1")))
    agent = await nats.connect(
        url, user_credentials=agent_creds, inbox_prefix="_INBOX.web1", error_cb=on_error
    )
    try:
        kv = await server.jetstream().create_key_value(bucket="test")
        await kv.put("k", b"1")
        stored = (await kv.get("k")).value or b""
        seen = await server.subscribe("dkron.result.>")
        await server.flush()  # the server has the subscription before another connection publishes
        await _until_routed(agent, seen)
        await agent.publish("dkron.result.web1", b"mine")
        await agent.publish("dkron.result.web2", b"forged")
        await agent.publish("dkron.result.web1", b"after")  # one connection: delivered in order
        await agent.flush()
        got = [(await seen.next_msg(timeout=15)).data for _ in range(2)]  # loose: CI runs three workers
        assert got == [b"mine", b"after"]  # the forged one in between never arrived
        # Last: a refused subscription (its answer comes asynchronously; before the publishes above, it
        # made them go missing about one run in six on a loaded machine).
        await agent.subscribe("dkron.run.node.web2", queue="web2")
        await agent.flush()
        for _ in range(100):
            if any('subscription to "dkron.run.node.web2"' in e for e in errors):
                break
            await asyncio.sleep(0.1)
        return errors, stored
    finally:
        await agent.close()
        await server.close()


async def _until_routed(agent: Client, seen: Subscription) -> None:
    """Wait until the agent's permitted publishes reach the server's subscription. On a loaded machine a
    nats-server just started (operator mode, the account's first connections) has been seen to route
    nothing between two connections of the same account for a while (about one run in twenty with three
    at once), although both were connected and the subscription registered: not what this test is about.
    Returns once the latest probe has arrived: those before it came before it (one connection, in order)."""
    deadline = asyncio.get_running_loop().time() + 30
    for probe in itertools.count():
        latest = f"probe {probe}".encode()
        await agent.publish("dkron.result.web1", latest)
        await agent.flush()
        try:
            while (await seen.next_msg(timeout=0.5)).data != latest:
                pass
            return
        except nats.errors.TimeoutError:
            assert asyncio.get_running_loop().time() < deadline, "no publish was routed within 30 s"
