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
from dkron_nats.leader.lease import Lease
from dkron_nats.natsserver import EmbeddedNats
from dkron_nats.timefmt import utcnow
from tests.harness import free_port


@dataclass
class Solo:
    nc: Client
    buckets: Buckets
    lease: Lease
    """Held by server `s1`: run requests signed with it are the current leader's."""


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
