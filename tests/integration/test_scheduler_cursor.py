"""The launch cursor's compare-and-set, against a real embedded nats-server.

A leader whose view of a cursor is stale (another leader moved it in between) must decide the job's slots
again from the fresh cursor: it may neither launch nor record as missed a slot the other one resolved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import nats
import pytest
from nats.js.api import KeyValueConfig

from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.typed import TypedKV
from dkron_nats.leader.launcher import Launcher
from dkron_nats.leader.scheduler import Scheduler, SchedulerSettings
from dkron_nats.models import JobSpec, LaunchCursor
from dkron_nats.names import job_key
from dkron_nats.natsserver import EmbeddedNats
from dkron_nats.timefmt import to_ns
from tests.harness import free_port

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingLauncher:
    """Stands in for the launcher: the scheduler's decisions are what this test looks at."""

    def __init__(self) -> None:
        self.recorded: list[tuple[datetime | None, str]] = []
        self.dispatched: list[datetime] = []

    def ensure_leader(self) -> None:
        pass

    def fence(self) -> int:
        return 7

    def targets(self, spec: JobSpec) -> list[str]:
        return ["agent-1"]

    async def hold(self, job: JobSpec, group: int, replacing: int | None = None) -> bool:
        return True  # an `allow` job: no lease

    async def record_outcome(
        self, job: JobSpec, group: int, scheduled_at: datetime | None, status: str, reason: str
    ) -> None:
        self.recorded.append((scheduled_at, status))

    async def dispatch(self, spec: JobSpec, group: int, scheduled_at: datetime, targets: list[str]) -> None:
        self.dispatched.append(scheduled_at)


@pytest.fixture
async def cursors(tmp_path: Path) -> AsyncIterator[TypedKV[LaunchCursor]]:
    async with EmbeddedNats(tmp_path, f"127.0.0.1:{free_port()}", "solo") as server:
        nc = await nats.connect(server.url)
        try:
            kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket="cursors"))
            yield TypedKV(kv, LaunchCursor)
        finally:
            await nc.close()


async def test_a_stale_cursor_is_decided_again_not_overwritten(cursors: TypedKV[LaunchCursor]) -> None:
    now = [T0 + timedelta(seconds=8)]
    launcher = RecordingLauncher()
    scheduler = Scheduler(
        cast(KVCache[JobSpec], None),
        cursors,
        cast(Launcher, launcher),
        SchedulerSettings(starting_deadline=timedelta(seconds=60)),
        clock=lambda: now[0],
    )
    spec = JobSpec(name="tick", schedule="@every 1s", anchor=T0)
    key = job_key("tick")
    seen_rev = await cursors.create(key, LaunchCursor(slot_ns=to_ns(T0), group=to_ns(T0)))
    assert seen_rev is not None
    # Another leader resolved slots up to T0+5 s after this scheduler last read the cursor.
    moved = LaunchCursor(slot_ns=to_ns(T0 + timedelta(seconds=5)), group=1, targets=["agent-2"])
    assert await cursors.update(key, moved, seen_rev) is not None
    scheduler._cursors[key] = (LaunchCursor(slot_ns=to_ns(T0), group=to_ns(T0)), seen_rev)
    scheduler._plan(key, spec)
    plan: Any = scheduler._plans[key]

    await scheduler._resolve(key, plan)

    missed = [at for at, status in launcher.recorded if status == "missed"]
    assert missed == [T0 + timedelta(seconds=6), T0 + timedelta(seconds=7)]
    assert launcher.dispatched == [T0 + timedelta(seconds=8)]
    stored = await cursors.get(key)
    assert stored is not None
    assert stored[0].slot_ns == to_ns(T0 + timedelta(seconds=8))
