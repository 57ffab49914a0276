"""`deploy/nats.conf` forms a 3-node JetStream cluster that survives `kill -9` of a stream leader.

Uses nats-py directly against real nats-server processes (see `tests/cluster.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import nats
import nats.errors
import pytest
from nats.js.api import KeyValueConfig

from dkron_nats.kv.typed import delete_at, with_retry
from tests.cluster import NatsCluster, NatsNode, nats_cluster, wait_for_async

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

__all__ = ["nats_cluster"]  # the fixture, imported so pytest finds it

# A leader election after a hard kill takes 4-9 s (raft election timeout, nats.md 4.2); allow the worst
# case plus the client's reconnect and one request timeout.
RECOVERY_BOUND = 15.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def connected(*urls: str, **options: Any) -> AsyncIterator[Any]:
    """A nats-py client seeded with `urls` in that order; it may still fail over to discovered servers."""
    nc = await nats.connect(
        list(urls),
        dont_randomize=True,
        connect_timeout=2,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        ping_interval=2,
        **options,
    )
    try:
        yield nc
    finally:
        await nc.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def stream_state(node: NatsNode, stream: str) -> dict[str, Any] | None:
    """The stream's state in `node`'s own store, from its /jsz monitoring endpoint."""
    jsz = await node.monitor_async("/jsz", accounts="true", streams="true")
    for account in jsz.get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail["name"] == stream:
                state: dict[str, Any] = detail["state"]
                return state
    return None


async def test_config_forms_a_three_node_jetstream_cluster(nats_cluster: NatsCluster) -> None:
    n1, n2, n3 = nats_cluster.nodes
    for node in nats_cluster.nodes:
        # Every node is configured with routes to both peers (not only the first one).
        varz = await node.monitor_async("/varz")
        peers = {peer.route_address for peer in nats_cluster.nodes if peer is not node}
        assert set(varz["cluster"]["urls"]) == peers
        assert varz["server_name"] == node.name
        assert varz["cluster"]["name"] == "dkron"
        jsz = await node.monitor_async("/jsz")
        assert jsz["meta_cluster"]["cluster_size"] == 3

    async with connected(n1.url) as nc1, connected(n2.url) as nc2:
        assert port_of(nc1.connected_url.geturl()) == n1.port
        assert port_of(nc2.connected_url.geturl()) == n2.port
        kv1 = await nc1.jetstream(timeout=5).create_key_value(KeyValueConfig(bucket="formed", replicas=3))
        # A new R3 stream elects its own leader first; JetStream answers "no response" until then.
        revision = await with_retry(lambda: kv1.put("greeting", b"hello from n1"))

        js2 = nc2.jetstream(timeout=5)
        info = await js2.stream_info("KV_formed")
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        replicas = {peer.name for peer in info.cluster.replicas or []}
        assert {info.cluster.leader, *replicas} == {"n1", "n2", "n3"}

        entry = await (await js2.key_value("formed")).get("greeting")
        assert (entry.value, entry.revision) == (b"hello from n1", revision)

    async def replicated_everywhere() -> bool:
        states = [await stream_state(node, "KV_formed") for node in (n1, n2, n3)]
        return all(state is not None and state["messages"] == 1 for state in states)

    await wait_for_async(replicated_everywhere, 5, "the message in all three stores")


@dataclass
class Writer:
    """Puts keys `<prefix>.<i>` (i = 0, 1, ...) one after the other, retrying a key until it is acked."""

    prefix: str
    acked: dict[str, bytes] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)  # send time of each acked put
    errors: list[str] = field(default_factory=list)

    async def run(self, kv: Any, stop: anyio.Event) -> None:
        i = 0
        while not stop.is_set():
            key, value = f"{self.prefix}.{i}", f"{self.prefix}-value-{i}".encode()
            sent = time.monotonic()
            try:
                await kv.put(key, value)
            except (nats.errors.Error, TimeoutError) as exc:
                self.errors.append(type(exc).__name__)
                await anyio.sleep(0.05)  # back off while there is no stream leader; then retry the key
                continue
            self.acked[key] = value
            self.ack_times.append(time.monotonic())
            self.started_at.append(sent)
            i += 1

    def acks_after(self, moment: float) -> int:
        return sum(1 for t in self.ack_times if t > moment)

    def recovery_after(self, moment: float) -> float:
        """Seconds from `moment` to the first ack of a put sent after it."""
        return min(a for a, s in zip(self.ack_times, self.started_at, strict=True) if s > moment) - moment


async def test_kill_stream_leader_loses_no_acked_write_and_node_rejoins(nats_cluster: NatsCluster) -> None:
    async with connected(*nats_cluster.urls) as admin:
        await admin.jetstream(timeout=5).create_key_value(
            KeyValueConfig(bucket="failover", replicas=3, history=1)
        )
        info = await admin.jetstream(timeout=5).stream_info("KV_failover")
    assert info.cluster is not None
    assert info.cluster.leader is not None
    victim = nats_cluster.node(info.cluster.leader)
    survivors = [node for node in nats_cluster.nodes if node is not victim]

    # One writer talks to a surviving node, the other to the victim (it must fail over to a survivor).
    via_survivor, via_victim = Writer("survivor"), Writer("victim")
    async with (
        connected(*(node.url for node in survivors)) as nc_survivor,
        connected(victim.url) as nc_victim,
        anyio.create_task_group() as tg,
    ):
        assert port_of(nc_victim.connected_url.geturl()) == victim.port
        stop = anyio.Event()
        for writer, nc in ((via_survivor, nc_survivor), (via_victim, nc_victim)):
            kv = await nc.jetstream(timeout=1).key_value("failover")
            tg.start_soon(writer.run, kv, stop)

        async def acked(count: int, since: float = 0.0) -> bool:
            await anyio.lowlevel.checkpoint()
            return all(w.acks_after(since) >= count for w in (via_survivor, via_victim))

        await wait_for_async(lambda: acked(100), 10, "100 acked writes per writer before the kill")
        killed_at = time.monotonic()
        victim.kill()
        await wait_for_async(lambda: acked(100, killed_at), 30, "100 acked writes per writer after the kill")
        stop.set()
    assert not victim.alive()

    recovery = {w.prefix: w.recovery_after(killed_at) for w in (via_survivor, via_victim)}
    print(f"\nwrite recovery after kill -9 of stream leader {victim.name}: {recovery}")  # noqa: T201
    print(f"errors seen: { {w.prefix: sorted(set(w.errors)) for w in (via_survivor, via_victim)} }")  # noqa: T201
    assert all(seconds < RECOVERY_BOUND for seconds in recovery.values()), recovery
    expected = {**via_survivor.acked, **via_victim.acked}

    # No acknowledged write is lost: read every key back through a surviving node.
    async with connected(survivors[1].url) as nc:
        assert port_of(nc.connected_url.geturl()) == survivors[1].port
        js = nc.jetstream(timeout=5)
        new_info = await js.stream_info("KV_failover")
        assert new_info.cluster is not None
        assert new_info.cluster.leader in {node.name for node in survivors}
        kv = await js.key_value("failover")
        assert {key: (await kv.get(key)).value for key in expected} == expected
        assert new_info.state.messages == len(expected)

    # Restart the killed node on the same store: it rejoins, catches up, and holds every acked write.
    restarted_at = time.monotonic()
    victim.start()
    await victim.wait_healthy_async(20)
    rejoin = time.monotonic() - restarted_at
    print(f"{victim.name} healthy (rejoined, caught up) {rejoin:.2f}s after restart")  # noqa: T201

    async with connected(victim.url) as nc:
        assert port_of(nc.connected_url.geturl()) == victim.port
        js = nc.jetstream(timeout=5)

        async def caught_up() -> bool:
            state = await stream_state(victim, "KV_failover")
            peers = (await js.stream_info("KV_failover")).cluster.replicas or []
            current = any(p.name == victim.name and p.current for p in peers)
            return current and state is not None and state["messages"] == len(expected)

        await wait_for_async(caught_up, 10, f"{victim.name} to hold all {len(expected)} messages")

        # Make the restarted node the stream leader, so the reads below are served from its own store.
        request = json.dumps({"placement": {"preferred": victim.name}}).encode()
        response = await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.KV_failover", request, timeout=5)
        assert json.loads(response.data).get("success"), response.data

        async def victim_leads() -> bool:
            leader: str | None = (await js.stream_info("KV_failover")).cluster.leader
            return leader == victim.name

        await wait_for_async(victim_leads, 10, f"{victim.name} to lead KV_failover")
        kv = await wait_for_async(lambda: js.key_value("failover"), 10, "the bucket to be readable")
        assert {key: (await kv.get(key)).value for key in expected} == expected
        await kv.put("after-rejoin", b"ok")
        assert (await kv.get("after-rejoin")).value == b"ok"


async def test_a_delete_at_a_revision_that_moved_on_is_refused_quietly_on_a_replicated_bucket(
    nats_cluster: NatsCluster,
) -> None:
    """A replicated stream refuses it with another code (10164) than a single server (10071): a partition
    owner releasing a lease taken over from it got that error, unhandled, and the server ended."""
    async with connected(*nats_cluster.urls) as nc:
        kv = await nc.jetstream(timeout=5).create_key_value(KeyValueConfig(bucket="leases", replicas=3))
        first = await with_retry(lambda: kv.create("scheduler.3", b"s1"))
        await kv.update("scheduler.3", b"s2", last=first)
        assert await delete_at(kv, "scheduler.3", first) is False
        assert (await kv.get("scheduler.3")).value == b"s2"
