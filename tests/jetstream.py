"""A real embedded nats-server with dkron-nats's buckets and a started pipelined publisher, for tests of the
leader's stores, and a publisher that loses acks on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from dkron_nats.kv.buckets import Buckets, StorageLimits, ensure_buckets
from dkron_nats.kv.publisher import Ack, JsPublisher
from dkron_nats.natsserver import EmbeddedNats
from tests.harness import free_port


@dataclass
class JetStream:
    nc: Client
    js: JetStreamContext
    buckets: Buckets
    publisher: JsPublisher


@asynccontextmanager
async def jetstream(tmp_path: Path) -> AsyncIterator[JetStream]:
    """The server (stopped on exit, by its pid, through EmbeddedNats), its buckets and a running publisher."""
    async with EmbeddedNats(tmp_path, f"127.0.0.1:{free_port()}", "solo") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        try:
            buckets = await ensure_buckets(js, StorageLimits())
            async with anyio.create_task_group() as tg:
                publisher = JsPublisher(nc)
                await tg.start(publisher.run)
                yield JetStream(nc, js, buckets, publisher)
                tg.cancel_scope.cancel()
        finally:
            await nc.close()


class FlakyAcks:
    """A publisher that stores every write but, when `lose_next` is set, loses the next one's ack (as a
    dropped connection does): the caller sees a timeout for a write that landed."""

    def __init__(self, real: JsPublisher) -> None:
        self.real = real
        self.lose_next = False

    async def publish(self, subject: str, payload: bytes, **options: Any) -> Ack:
        ack = await self.real.publish(subject, payload, **options)
        if self.lose_next:
            self.lose_next = False
            raise NatsTimeoutError
        return ack
