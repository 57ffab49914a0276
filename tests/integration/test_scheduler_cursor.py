"""The launch cursor's compare-and-set, against a real embedded nats-server.

A leader whose view of a cursor is stale (another leader moved it in between) must decide the job's slots
again from the fresh cursor: it may neither launch nor record as missed a slot the other one resolved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
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


class GatedLauncher(RecordingLauncher):
    """Dispatches wait at a gate: the leader is overloaded until the test opens it."""

    def __init__(self, js: Any) -> None:
        super().__init__()
        self.js = js
        self.gate = anyio.Event()
        self.in_flight = 0
        self.launched: set[str] = set()

    async def dispatch(self, spec: JobSpec, group: int, scheduled_at: datetime, targets: list[str]) -> None:
        self.in_flight += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        self.launched.add(spec.name)


async def _wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.sleep(0.02)


async def test_an_overloaded_leader_keeps_its_backlog_in_the_heap_and_launches_every_job_as_room_frees(
    cursors: TypedKV[LaunchCursor],
) -> None:
    """More jobs due than the leader can dispatch at once: it takes `max_parallel` of them, and the rest
    wait as heap entries (not as one task each, which at 100,000 jobs grew the leader past 800 MB); as
    dispatches finish, the next due jobs are taken, and every job gets its launch."""
    js = cursors.kv._js
    launcher = GatedLauncher(js)
    jobs: KVCache[JobSpec] = KVCache(cast(TypedKV[JobSpec], None))
    anchor = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(300):
        jobs.apply(job_key(f"job-{i}"), JobSpec(name=f"job-{i}", schedule="@every 1s", anchor=anchor), i + 1)
    scheduler = Scheduler(jobs, cursors, cast(Launcher, launcher), SchedulerSettings(max_parallel=8))
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        with anyio.fail_after(10):
            await _wait_until(lambda: launcher.in_flight == 8)
        tasks_while_overloaded = len(asyncio.all_tasks())
        await anyio.sleep(1.5)  # more slots fall due meanwhile; none may become a task of its own
        assert launcher.in_flight == 8
        assert len(asyncio.all_tasks()) <= tasks_while_overloaded + 2
        assert len(asyncio.all_tasks()) < 40, "the due backlog became waiting tasks"
        launcher.gate.set()
        with anyio.fail_after(10):  # every job is launched once the gate opens
            await _wait_until(lambda: len(launcher.launched) == 300)
        tg.cancel_scope.cancel()
