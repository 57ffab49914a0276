"""`GET /v1/events`: the cluster's events (`dkron.events.>`, `dkron_nats/events.py`) as Server-Sent Events.

Each SSE event is named after the event's type (`job.updated`, `execution.finished`, ...) and carries its
JSON body. A first `ready` event says the subscription is in place; a comment every 15 s keeps proxies from
closing an idle stream. Like the NATS subjects it relays, delivery is at most once: a client that reconnects
re-reads what it shows. A client that falls more than 1 MiB behind gets an `error` event and is cut off
(`http/streams.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import msgspec
from litestar import get
from litestar.response import ServerSentEvent, ServerSentEventMessage
from nats.errors import TimeoutError as NatsTimeoutError

from dkron_nats.events import EventBody
from dkron_nats.http.services import Services
from dkron_nats.http.streams import BoundedStream

ALL_EVENTS = "dkron.events.>"
KEEPALIVE = 15.0


@get("/v1/events", middleware=[BoundedStream])
async def events(services: Services) -> ServerSentEvent:
    return ServerSentEvent(_relay(services), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _relay(services: Services) -> AsyncIterator[ServerSentEventMessage]:
    sub = await services.nc.subscribe(ALL_EVENTS, pending_msgs_limit=10_000)
    try:
        yield ServerSentEventMessage(event="ready", data="{}")
        while True:
            try:
                msg = await sub.next_msg(timeout=KEEPALIVE)
            except (NatsTimeoutError, TimeoutError):
                yield ServerSentEventMessage(comment="keepalive")
                continue
            try:
                kind = msgspec.json.decode(msg.data, type=EventBody).type
            except msgspec.DecodeError:
                continue  # not one of ours: someone else published on the subject
            yield ServerSentEventMessage(event=kind, data=msg.data.decode("utf-8", errors="replace"))
    finally:
        with anyio.CancelScope(shield=True):  # the client left: the stream is being cancelled
            await sub.unsubscribe()


ROUTES = [events]
