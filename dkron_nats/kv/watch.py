"""Typed wrappers around nats-py's untyped KV watcher methods, and a shorter stall detection for them.

A KV watch is an ordered push consumer: ephemeral, one replica, on one nats-server. When that nats-server
leaves (a server stopped or killed with its embedded NATS), the watch hears nothing until nats-py misses two
idle heartbeats and makes the consumer again elsewhere. nats-py's watch asks for a heartbeat every 5 s and
has no way to ask for less, so every watch of the servers that remained (jobs, states, members, the leases)
went deaf for about 10 s: a partition's owner kept sending runs to a server that had left, and its slots ran
up to 10 s late. Ordered consumers made without a heartbeat of their own now get one every
ORDERED_HEARTBEAT seconds (a stall is noticed after two: 2 s); an idle watch costs one message a second.
"""

from __future__ import annotations

import functools
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

ORDERED_HEARTBEAT = 1.0


def _with_short_heartbeat(subscribe: Any) -> Any:
    @functools.wraps(subscribe)
    async def wrapper(self: JetStreamContext, *args: Any, **kwargs: Any) -> Any:
        config = kwargs.get("config")
        asked = kwargs.get("idle_heartbeat") or (config is not None and config.idle_heartbeat)
        if kwargs.get("ordered_consumer") and not asked:
            kwargs["idle_heartbeat"] = ORDERED_HEARTBEAT
        return await subscribe(self, *args, **kwargs)

    wrapper.short_heartbeat = True  # type: ignore[attr-defined]
    return wrapper


if not getattr(JetStreamContext.subscribe, "short_heartbeat", False):
    JetStreamContext.subscribe = _with_short_heartbeat(JetStreamContext.subscribe)  # type: ignore[method-assign]


async def next_entry(watcher: KeyValue.KeyWatcher, wait: float | None) -> KeyValue.Entry | None:
    """The next update, or None once the initial contents have been delivered."""
    entry: KeyValue.Entry | None = await watcher.updates(timeout=wait)  # type: ignore[no-untyped-call]
    return entry


async def stop(watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]
