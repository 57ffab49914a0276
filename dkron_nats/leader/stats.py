"""Daily success/failure counts for `/v1/stats`, kept per UTC day in the stats bucket.

Counts are gathered in memory and flushed every second with compare-and-set, so a busy cluster does not
pay one extra write per execution.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, datetime

import anyio
import msgspec

from dkron_nats.kv.typed import TRANSIENT, TypedKV
from dkron_nats.timefmt import utcnow

logger = logging.getLogger(__name__)


class DayStats(msgspec.Struct, kw_only=True):
    success_count: int = 0
    failed_count: int = 0


def day_key(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"  # strftime's cost showed in profiles


class Stats:
    def __init__(self, store: TypedKV[DayStats]) -> None:
        self.store = store
        self._pending: Counter[tuple[str, bool]] = Counter()

    def count(self, finished_at: datetime | None, success: bool) -> None:
        day = (finished_at or utcnow()).date()
        self._pending[(day_key(day), success)] += 1

    async def run(self, interval: float = 1.0) -> None:
        try:
            while True:
                await anyio.sleep(interval)
                await self.flush()
        finally:
            with anyio.move_on_after(2, shield=True):
                await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, Counter()
        days = {day for day, _ in pending}
        for day in days:
            try:
                await self._add(day, pending[(day, True)], pending[(day, False)])
            except TRANSIENT:
                logger.warning("could not store the stats of %s yet; will retry", day)
                self._pending[(day, True)] += pending[(day, True)]
                self._pending[(day, False)] += pending[(day, False)]

    async def _add(self, day: str, ok: int, failed: int) -> None:
        while True:
            current = await self.store.get(day)
            old = current[0] if current else DayStats()
            new = DayStats(success_count=old.success_count + ok, failed_count=old.failed_count + failed)
            rev = await self.store.swap(day, new, current[1] if current else None)
            if rev is not None:
                return

    async def days(self, count: int) -> list[tuple[date, DayStats]]:
        today = utcnow().date()
        out = []
        for back in range(count - 1, -1, -1):
            day = date.fromordinal(today.toordinal() - back)
            found = await self.store.get(day_key(day))
            out.append((day, found[0] if found else DayStats()))
        return out
