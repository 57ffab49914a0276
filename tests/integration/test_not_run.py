"""Missed and skipped slots recorded by the leader itself (leader/outcomes.py), against a real nats-server.

Recording the same slot again (a takeover concluding a decision twice) stores and announces it once, and
the history of a job that only misses stays within its limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.leader.outcomes import NotRunRecorder
from dkron_nats.models import Execution, JobSpec
from dkron_nats.timefmt import to_ns
from tests.jetstream import jetstream

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Leader:
    nc: Client
    executions: ExecutionStore
    recorder: NotRunRecorder


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[Leader]:
    async with jetstream(tmp_path) as started:
        executions = ExecutionStore(started.buckets.executions, started.js, started.publisher)
        yield Leader(started.nc, executions, NotRunRecorder(started.nc, executions, keep=100))


def _missed(job: str, slot: datetime) -> Execution:
    return Execution(
        id=execution_id(to_ns(slot), "missed"),
        job_name=job,
        group=to_ns(slot),
        started_at=slot,
        finished_at=slot,
        output="missed: the leader was too late",
        status="missed",
        scheduled_at=slot,
    )


async def test_a_slot_recorded_twice_is_stored_and_announced_once(leader: Leader) -> None:
    events = await leader.nc.subscribe("dkron.events.execution.>")
    await leader.nc.flush()
    job = JobSpec(name="late", schedule="@every 1s")
    await leader.recorder.record(job, _missed("late", T0))
    await leader.recorder.record(job, _missed("late", T0))  # the next leader concludes the same decision
    await leader.recorder.record(job, _missed("late", T0 + timedelta(seconds=1)))

    history = await leader.executions.history("late")
    assert [ex.scheduled_at for ex in history] == [T0, T0 + timedelta(seconds=1)]
    assert {ex.status for ex in history} == {"missed"}
    subjects = [(await events.next_msg(timeout=5)).subject for _ in range(2)]
    assert subjects == ["dkron.events.execution.missed"] * 2
    with pytest.raises(nats.errors.TimeoutError):
        await events.next_msg(timeout=0.5)  # no third event: the repeat announced nothing


async def test_the_history_of_a_job_that_only_misses_stays_within_its_limit(leader: Leader) -> None:
    job = JobSpec(name="always-late", schedule="@every 1s", history_limit=5)
    for second in range(40):
        await leader.recorder.record(job, _missed("always-late", T0 + timedelta(seconds=second)))
    history = await leader.executions.history("always-late")
    assert len(history) <= 6, f"{len(history)} records kept with history_limit 5"
    assert history[-1].scheduled_at == T0 + timedelta(seconds=39)
