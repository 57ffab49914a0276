"""Typed wrappers around nats-py's untyped KV watcher methods."""

from __future__ import annotations

from nats.js.kv import KeyValue


async def next_entry(watcher: KeyValue.KeyWatcher, wait: float | None) -> KeyValue.Entry | None:
    """The next update, or None once the initial contents have been delivered."""
    entry: KeyValue.Entry | None = await watcher.updates(timeout=wait)  # type: ignore[no-untyped-call]
    return entry


async def stop(watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]
