"""The node registry: every node heartbeats its record into a KV bucket; a graceful stop removes it.

A node counts as alive while its heartbeats keep arriving (judged by this process's own clock, so clock
skew between machines does not matter). A node that died keeps its last record, shown as failed, until
the bucket's retention reaps it: its running executions stay known to whichever server leads later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.typed import TRANSIENT, TypedKV
from dkron_nats.models import Member

logger = logging.getLogger(__name__)


class Registry:
    def __init__(self, store: TypedKV[Member], ttl: float) -> None:
        self.cache = KVCache(store)
        self.ttl = ttl
        self._beat = ttl / 4
        """Every node heartbeats this often, so a longer silence of the whole bucket is a blackout."""
        self._seen: dict[str, float] = {}
        """Listening time (see `_listened`) of each node's last heartbeat."""
        self._heard_until = 0.0
        self._last_news = time.monotonic()
        self._gone: set[str] = set()
        """Nodes whose process was confirmed gone (`confirm_gone`) and that have not heartbeat since."""
        self.cache.listen(self._on_change)

    def _listened(self) -> float:
        """Seconds this registry could hear heartbeats: real time, except that a silence of the whole
        bucket counts for one heartbeat interval at most. While the bucket cannot be read or written (a
        NATS node lost, JetStream re-electing) nobody's heartbeat arrives; taking every node for dead then
        would stop all launches and rule every running execution lost. A dispatch to a node that really
        died fails at once (no responders) and is recorded."""
        return self._heard_until + min(time.monotonic() - self._last_news, self._beat)

    def _on_change(self, key: str, member: Member | None) -> None:
        self._heard_until = self._listened()
        self._last_news = time.monotonic()
        self._gone.discard(key)  # written since: that node's process is there (or gone gracefully)
        if member is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = self._heard_until

    def alive(self) -> list[Member]:
        """Nodes heard from within a TTL of listening time."""
        now = self._listened()
        return [m for key, m in self.cache.items() if key in self._seen and now - self._seen[key] < self.ttl]

    def reachable(self) -> list[Member]:
        """Alive nodes, less those whose process is known to be gone before their heartbeats run out: work
        sent to them now would wait for a member TTL to be ruled lost."""
        return [m for m in self.alive() if m.name not in self._gone]

    def confirm_gone(self, node: str) -> None:
        """`node`'s process is gone (its NATS connection was, over a presence probe): no target until it
        heartbeats again. Still alive for agent-loss rulings, which keep waiting for the TTL: a process only
        cut off from NATS for a moment must not have its running executions ruled lost."""
        self._gone.add(node)

    def failed(self) -> list[Member]:
        """Nodes whose heartbeats stopped without a graceful leave (kept until the bucket reaps them)."""
        alive = {m.name for m in self.alive()}
        return [m for m in self.cache.values() if m.name not in alive]

    def get(self, name: str) -> Member | None:
        return self.cache.get(name)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.cache.run)
            tg.start_soon(self._guard_the_watch)
            task_status.started()

    async def _guard_the_watch(self) -> None:
        """Every node (this one included) heartbeats every TTL/4, so half a TTL without any news means the
        watch has stalled (it can, for seconds, after a NATS node loss): read the bucket instead, so that
        live nodes are not taken for dead ones and their runs ruled lost."""
        while True:
            await anyio.sleep(self.ttl / 4)
            if time.monotonic() - self._last_news < self.ttl / 2:
                continue
            logger.warning("no registry news for %.1fs; re-reading the members bucket", self.ttl / 2)
            # Bounded: a scan can wait long on a stream that has no leader yet; try again on the next round.
            with anyio.move_on_after(self.ttl) as scope:
                try:
                    await self.cache.rescan()
                except TRANSIENT:
                    logger.warning("re-reading the members bucket failed (NATS unavailable)")
            if scope.cancelled_caught:
                logger.warning("re-reading the members bucket took over %.0fs; trying again", self.ttl)


EARLY_BEAT = 0.2
"""The least time between two records sent early: executions claimed in a burst share one record."""


class Pulse:
    """A request for an early heartbeat. An agent's record lists what it runs, and a server that did not send
    a run learns of it only from there: a partition's new owner must find it listed if the agent dies."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def now(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()


async def heartbeat(
    store: TypedKV[Member],
    member: Callable[[], Member],
    interval: float,
    *,
    early: Pulse | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Publish this node's record every `interval` seconds, and soon after `early` asks; remove it on a
    graceful stop."""
    name = member().name
    await store.put(name, member())
    task_status.started()
    sent = time.monotonic()
    try:
        while True:
            with anyio.move_on_after(max(0.0, sent + interval - time.monotonic())):
                if early is None:
                    await anyio.sleep_forever()
                else:
                    await early.wait()
                    await anyio.sleep(max(0.0, sent + EARLY_BEAT - time.monotonic()))
            if early is not None:
                early.clear()
            sent = time.monotonic()
            try:
                await store.put(name, member())
            except TRANSIENT:
                logger.warning("heartbeat of %s failed, NATS is unavailable", name)
    finally:
        with anyio.move_on_after(2, shield=True):
            await store.delete(name)
