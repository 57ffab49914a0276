"""One embedded nats-server with the cluster's buckets and a held leader lease, for in-process tests of the
agent and the leader core (real JetStream, no node process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client

from dkron_nats.kv.buckets import Buckets, StorageLimits, ensure_buckets
from dkron_nats.kv.typed import TypedKV
from dkron_nats.leader.lease import SIGNATURE_HEADER, Lease
from dkron_nats.leader.runconsumers import RunConsumers
from dkron_nats.members import Registry
from dkron_nats.models import Member, RunRequest, encode
from dkron_nats.natsserver import EmbeddedNats
from dkron_nats.subjects import run_subject
from dkron_nats.timefmt import utcnow
from tests.harness import free_port


@dataclass
class Solo:
    nc: Client
    buckets: Buckets
    lease: Lease
    """Held by server `s1`: run requests signed with it are the current leader's."""

    async def make_run_consumer(self, node: str, tags: dict[str, str] | None = None) -> None:
        """What the leader does when `node` appears: make its consumer of run requests."""
        registry = Registry(TypedKV(self.buckets.members, Member), ttl=60)
        member = Member(
            name=node, addr="", port=0, tags=tags or {}, server=False, version="test", started_at=utcnow()
        )
        await RunConsumers(self.nc.jetstream(), registry, "global").make(member)

    async def send_run(self, request: RunRequest, subject: str | None = None) -> None:
        """Publish a run request of the current leader into DKRON_RUNS (to its node by default)."""
        body = encode(request)
        headers = {SIGNATURE_HEADER: self.lease.sign(body)}
        await self.nc.jetstream().publish(
            subject or run_subject(request.execution.node_name), body, headers=headers
        )


@asynccontextmanager
async def solo_store(data_dir: Path) -> AsyncIterator[Solo]:
    async with EmbeddedNats(data_dir, f"127.0.0.1:{free_port()}", "solo") as server:
        nc = await nats.connect(server.url)
        try:
            buckets = await ensure_buckets(nc.jetstream(), StorageLimits())
            lease = Lease(buckets.leader, "s1", "s1-incarnation", ttl=60)
            assert await lease.try_acquire(utcnow())
            yield Solo(nc, buckets, lease)
        finally:
            await nc.close()
