"""An in-memory replica of a whole KV bucket, fed by a watch.

Servers keep the jobs and job-state buckets in memory this way: the scheduler needs every job anyway, and
the API can sort and page without reading the bucket per request. Writes made through this process are
applied at once (read-your-writes); the watch brings everyone else's within milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus

from dkron_nats.kv.typed import TypedKV, decode_entry, with_retry
from dkron_nats.kv.watch import next_entry
from dkron_nats.kv.watch import stop as stop_watch

T = TypeVar("T", bound=msgspec.Struct)
logger = logging.getLogger(__name__)


class KVCache(Generic[T]):
    def __init__(self, store: TypedKV[T]) -> None:
        self.store = store
        self._items: dict[str, tuple[T | None, int]] = {}
        """Live values, and tombstones (None) for keys this process deleted until the watch confirms it."""
        self._live = 0
        self._listeners: list[Callable[[str, T | None], None]] = []
        self.version = 0
        """Bumped on every change, so derived indexes know when to rebuild."""

    def __len__(self) -> int:
        return self._live

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        return item[0] if item else None

    def get_with_revision(self, key: str) -> tuple[T, int] | None:
        item = self._items.get(key)
        if item is None or item[0] is None:
            return None
        return item[0], item[1]

    def items(self) -> Iterator[tuple[str, T]]:
        for key, (value, _) in self._items.items():
            if value is not None:
                yield key, value

    def values(self) -> Iterator[T]:
        for value, _ in self._items.values():
            if value is not None:
                yield value

    def listen(self, listener: Callable[[str, T | None], None]) -> Callable[[], None]:
        """Call `listener(key, value_or_None)` on every change; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def apply(self, key: str, value: T | None, revision: int) -> None:
        """Record a write (or, with None, a delete) at `revision`; older news is ignored."""
        current = self._items.get(key)
        if current is not None and current[1] > revision:
            return
        if current is not None and current[1] == revision and (current[0] is None) == (value is None):
            return
        was_live = current is not None and current[0] is not None
        self._items[key] = (value, revision)
        self._live += (value is not None) - was_live
        self.version += 1
        for listener in list(self._listeners):
            listener(key, value)

    async def refresh(self, key: str) -> None:
        """Re-read one key from the bucket (used when a change notice may have outrun the watch)."""
        found = await self.store.get(key)
        if found is None:
            self.forget(key)
        else:
            self.apply(key, found[0], found[1])

    async def rescan(self) -> None:
        """Read the whole bucket again (when the watch may have stalled); newer revisions are applied."""
        async for key, value, revision in self.store.scan():
            self.apply(key, value, revision)

    def forget(self, key: str) -> None:
        """A delete made by this process: hide the key now, before the watch confirms it."""
        current = self._items.get(key)
        if current is not None and current[0] is not None:
            self.apply(key, None, current[1])

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the bucket, signal `started`, then follow it forever.

        The initial load is an exact scan; the watch that follows begins with every key's latest value, so
        nothing written in between is missed (what the scan already saw is ignored by revision).
        """
        async for key, value, revision in self.store.scan():
            self.apply(key, value, revision)
        task_status.started()
        watcher = await with_retry(self.store.kv.watchall, attempts=60, what=f"watch of {self.store.bucket}")
        try:
            while True:
                entry = await next_entry(watcher, None)
                if entry is not None:
                    self._apply_remote(entry.key, entry.operation, entry.value, int(entry.revision or 0))
        finally:
            with anyio.CancelScope(shield=True):
                await stop_watch(watcher)

    def _apply_remote(self, key: str, operation: str | None, data: bytes | None, revision: int) -> None:
        if operation is None:
            self.apply(key, decode_entry(self.store.kind, data), revision)
            return
        self.apply(key, None, revision)
        # The watch delivers in stream order: nothing older can follow a confirmed delete.
        if self._items.get(key) == (None, revision):
            del self._items[key]
