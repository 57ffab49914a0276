"""The decision log (leader/decisions.py) and the scheduler on it, against a real embedded nats-server.

A decision is stored before it is acted on; decisions made at the same instant share one append; a leader
that was taken over can append nothing more, so it can launch nothing more; a takeover sees every decision
made before it; checkpoints keep the log short; the per-job cursors of 0.1.x are moved in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError

from dkron_nats.errors import LeadershipLostError
from dkron_nats.kv.buckets import DECISIONS_STREAM, LEGACY_CURSORS
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.publisher import JsPublisher
from dkron_nats.kv.typed import TypedKV
from dkron_nats.leader import decisions
from dkron_nats.leader.decisions import DecisionLog, LogTail, LogTails
from dkron_nats.leader.launcher import Launcher
from dkron_nats.leader.scheduler import MAX_WAITING_RUNS, Scheduler, SchedulerSettings
from dkron_nats.models import JobSpec, LaunchCursor
from dkron_nats.names import job_key
from dkron_nats.subjects import ONLY_PARTITION, decisions_subject
from dkron_nats.timefmt import to_ns
from tests.jetstream import FlakyAcks, jetstream

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Nats:
    js: JetStreamContext
    publisher: JsPublisher

    def log(self, **options: Any) -> DecisionLog:
        return DecisionLog(self.js, self.publisher, ensure_leader=lambda: None, **options)

    async def taken_over(self, fence: int) -> DecisionLog:
        """The log as a new leader of term `fence` finds it (its takeover fences every earlier leader)."""
        log = self.log()
        await log.open(fence=fence)
        return log

    async def messages(self, partition: int = 0) -> int:
        info = await self.js.stream_info(DECISIONS_STREAM, subjects_filter=decisions_subject(partition))
        return sum((info.state.subjects or {}).values())


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Nats]:
    async with jetstream(tmp_path) as started:
        yield Nats(started.js, started.publisher)


def _cursor(slot: int, fence: int = 1) -> LaunchCursor:
    return LaunchCursor(slot_ns=slot, group=slot, fence=fence, targets=["agent-1"])


Lead = Callable[..., Awaitable[DecisionLog]]


@pytest.fixture
async def lead(cluster: Nats) -> AsyncIterator[Lead]:
    """Take the log over as a leader of term `fence` does and run its writer for the rest of the test."""
    async with anyio.create_task_group() as tg:

        async def take_over(fence: int, publisher: Any = None, **options: Any) -> DecisionLog:
            log = cluster.log(**options)
            if publisher is not None:
                log.publisher = publisher
            await log.open(fence=fence)
            await tg.start(log.run)
            return log

        yield take_over
        tg.cancel_scope.cancel()


async def test_a_leader_taken_over_can_append_nothing_and_the_new_one_has_its_decisions(
    cluster: Nats, lead: Lead
) -> None:
    old = await lead(1)
    await old.record("job-a", _cursor(10))

    new = await lead(2)
    assert new.cursors["job-a"].slot_ns == 10, "the takeover did not see the old leader's decision"

    with pytest.raises(LeadershipLostError):
        await old.record("job-a", _cursor(11))  # a paused leader waking up: fenced by the chain, not a clock
    with pytest.raises(LeadershipLostError):
        await old.record("job-b", _cursor(11))  # a job the new leader has not touched yet: fenced as well
    await new.record("job-a", _cursor(11, fence=2))

    reader = await cluster.taken_over(3)
    assert {k: c.slot_ns for k, c in reader.cursors.items()} == {"job-a": 11}


async def test_decisions_made_at_the_same_instant_share_appends(cluster: Nats, lead: Lead) -> None:
    log = await lead(1)
    before = log.appends
    async with anyio.create_task_group() as tg:
        for i in range(1000):
            tg.start_soon(log.record, f"job-{i}", _cursor(i))
    appends = log.appends - before
    assert appends <= 20, f"1,000 decisions took {appends} appends"

    reader = await cluster.taken_over(2)
    assert {k: c.slot_ns for k, c in reader.cursors.items()} == {f"job-{i}": i for i in range(1000)}


async def test_large_decisions_made_at_once_are_split_across_appends_under_the_message_limit(
    cluster: Nats, lead: Lead
) -> None:
    """1,500 jobs catching up after an outage, each decision listing 100 missed slots and 100 target nodes
    (~4 KB): together far over any NATS message limit (4 MB on the embedded server, 1 MB by default), so
    one append of them all would be refused. They are cut into appends of a few hundred KB, and so is the
    checkpoint that follows."""
    log = await lead(1, checkpoint_after=1000)
    targets = [f"agent-{n:03d}-in-a-rather-big-fleet" for n in range(100)]
    missed = [1_767_614_400_000_000_000 + n * 1_000_000_000 for n in range(100)]

    def decision(i: int) -> LaunchCursor:
        return LaunchCursor(slot_ns=10_000 + i, group=10_000 + i, fence=1, targets=targets, missed=missed)

    for round_ in range(2):  # twice as many decisions as jobs: a checkpoint of all 1,500 follows
        async with anyio.create_task_group() as tg:
            for i in range(1500):
                tg.start_soon(log.record, f"job-{i}", decision(round_ * 1500 + i))
    await log.record("job-0", decision(3000))
    assert await cluster.messages() < 60, "no checkpoint purged the log"

    reader = await cluster.taken_over(2)
    assert len(reader.cursors) == 1500
    assert reader.cursors["job-0"].slot_ns == 13_000
    assert reader.cursors["job-1499"] == decision(2999)


async def test_a_checkpoint_keeps_the_log_about_a_cursor_per_live_job(cluster: Nats, lead: Lead) -> None:
    deleted = "job-deleted"
    log = await lead(1, checkpoint_after=20, is_live=lambda key: key != deleted)
    await log.record(deleted, _cursor(1))
    for slot in range(1, 41):
        for job in range(5):
            await log.record(f"job-{job}", _cursor(slot))
    assert await cluster.messages() <= 25, "the log was not purged at its checkpoints"

    reader = await cluster.taken_over(2)
    assert {k: c.slot_ns for k, c in reader.cursors.items()} == {f"job-{j}": 40 for j in range(5)}


async def test_the_cursors_of_0_1_are_moved_into_the_log_newest_slot_first_and_their_bucket_deleted(
    cluster: Nats, lead: Lead
) -> None:
    log = await lead(1)
    await log.record("in-both-newer-in-log", _cursor(50))
    await log.record("in-both-newer-in-bucket", _cursor(5))
    # A 0.1.x server (in a rolling upgrade) led meanwhile and wrote its per-job cursors.
    kv = await cluster.js.create_key_value(KeyValueConfig(bucket=LEGACY_CURSORS, history=1))
    legacy = TypedKV(kv, LaunchCursor)
    for key, slot in {"in-both-newer-in-log": 40, "in-both-newer-in-bucket": 60, "only-in-bucket": 7}.items():
        assert await legacy.create(key, _cursor(slot)) is not None

    upgraded = await cluster.taken_over(2)
    expected = {"in-both-newer-in-log": 50, "in-both-newer-in-bucket": 60, "only-in-bucket": 7}
    assert {k: c.slot_ns for k, c in upgraded.cursors.items()} == expected
    with pytest.raises(BucketNotFoundError):
        await cluster.js.key_value(LEGACY_CURSORS)
    reader = await cluster.taken_over(3)
    assert {k: c.slot_ns for k, c in reader.cursors.items()} == expected  # durable in the log itself


async def test_a_resent_append_whose_ack_was_lost_is_recognised_not_taken_for_a_newer_leader(
    cluster: Nats, lead: Lead
) -> None:
    lossy = FlakyAcks(cluster.publisher)
    log = await lead(1, publisher=lossy)
    lossy.lose_next = True
    await log.record("job-a", _cursor(1))  # stored, ack lost, resent: refused as "wrong last sequence"
    assert not lossy.lose_next
    await log.record("job-a", _cursor(2))  # not deposed: the chain goes on
    reader = await cluster.taken_over(2)
    assert reader.cursors["job-a"].slot_ns == 2


class RecordingLauncher:
    """Stands in for the launcher: the scheduler's decisions are what these tests look at."""

    partition = ONLY_PARTITION

    def __init__(self) -> None:
        self.recorded: list[tuple[datetime | None, str]] = []
        self.dispatched: list[datetime] = []
        self.waiting = 0
        """Run requests waiting for agents, as the launcher reads them from DKRON_RUNS."""
        self.queue_answers = anyio.Event()
        self.queue_answers.set()
        """Cleared: reading the run queue hangs (its raft leader died with the previous owner)."""

    async def runs_waiting(self) -> int:
        await self.queue_answers.wait()
        return self.waiting

    async def resend_queued_runs(self, job_of: object) -> int:
        return 0  # no earlier leader left anything queued

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


def _scheduler(
    log: DecisionLog, launcher: RecordingLauncher, now: list[datetime], **settings: Any
) -> Scheduler:
    return Scheduler(
        cast(KVCache[JobSpec], None),
        log,
        cast(Launcher, launcher),
        SchedulerSettings(starting_deadline=timedelta(seconds=60), **settings),
        clock=lambda: now[0],
    )


async def test_a_scheduler_whose_log_was_taken_over_launches_and_records_nothing(
    cluster: Nats, lead: Lead
) -> None:
    now = [T0 + timedelta(seconds=8)]
    old_log = await lead(1)
    await old_log.record(job_key("tick"), _cursor(to_ns(T0)))
    launcher = RecordingLauncher()
    scheduler = _scheduler(old_log, launcher, now)
    scheduler._plan(job_key("tick"), JobSpec(name="tick", schedule="@every 1s", anchor=T0))
    plan: Any = scheduler._plans[job_key("tick")]

    await cluster.taken_over(2)  # another server took over while this one was paused
    with pytest.raises(LeadershipLostError):
        await scheduler._resolve(job_key("tick"), plan)
    assert launcher.dispatched == []
    assert launcher.recorded == []


async def test_slots_after_the_cursor_are_resolved_once_missed_then_launched(
    cluster: Nats, lead: Lead
) -> None:
    now = [T0 + timedelta(seconds=8)]
    log = await lead(1)
    await log.record(job_key("tick"), _cursor(to_ns(T0 + timedelta(seconds=5))))
    launcher = RecordingLauncher()
    scheduler = _scheduler(log, launcher, now)
    scheduler._plan(job_key("tick"), JobSpec(name="tick", schedule="@every 1s", anchor=T0))
    plan: Any = scheduler._plans[job_key("tick")]

    await scheduler._resolve(job_key("tick"), plan)
    await scheduler._resolve(job_key("tick"), plan)  # nothing more is due: nothing happens twice

    missed = [at for at, status in launcher.recorded if status == "missed"]
    assert missed == [T0 + timedelta(seconds=6), T0 + timedelta(seconds=7)]
    assert launcher.dispatched == [T0 + timedelta(seconds=8)]
    reader = await cluster.taken_over(2)
    assert reader.cursors[job_key("tick")].slot_ns == to_ns(T0 + timedelta(seconds=8))


class GatedLauncher(RecordingLauncher):
    """Dispatches wait at a gate: the leader is overloaded until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
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
    cluster: Nats,
) -> None:
    """More jobs due than the leader can dispatch at once: it takes `max_parallel` of them, and the rest
    wait as heap entries (not as one task each, which at 100,000 jobs grew the leader past 800 MB); as
    dispatches finish, the next due jobs are taken, and every job gets its launch."""
    launcher = GatedLauncher()
    jobs: KVCache[JobSpec] = KVCache(cast(TypedKV[JobSpec], None))
    anchor = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(300):
        jobs.apply(job_key(f"job-{i}"), JobSpec(name=f"job-{i}", schedule="@every 1s", anchor=anchor), i + 1)
    scheduler = Scheduler(jobs, cluster.log(), cast(Launcher, launcher), SchedulerSettings(max_parallel=8))
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


async def test_while_the_agents_queue_is_full_nothing_more_is_decided(cluster: Nats) -> None:
    """Agents cannot keep up (MAX_WAITING_RUNS requests wait in DKRON_RUNS): the leader stops deciding, so
    the queue and every run's lateness stop growing and the misfire policy settles the overdue slots; once
    the queue drops, deciding goes on. (Without it, an overloaded node queued a thousand launches a second
    and ran them ever later: 7.7 s median lateness after a minute of a 1,000-job herd.)"""
    launcher = RecordingLauncher()
    launcher.waiting = MAX_WAITING_RUNS
    jobs: KVCache[JobSpec] = KVCache(cast(TypedKV[JobSpec], None))
    anchor = datetime.now(UTC) - timedelta(seconds=1)
    jobs.apply(job_key("herd"), JobSpec(name="herd", schedule="@every 1s", anchor=anchor), 1)
    scheduler = Scheduler(jobs, cluster.log(), cast(Launcher, launcher), SchedulerSettings())
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await anyio.sleep(1.5)  # a slot or two fall due meanwhile
        assert launcher.dispatched == []
        assert launcher.recorded == []
        launcher.waiting = MAX_WAITING_RUNS - 1
        with anyio.fail_after(10):
            await _wait_until(lambda: bool(launcher.dispatched))
        tg.cancel_scope.cancel()


async def test_a_new_owner_decides_a_due_slot_at_once_while_the_run_queue_does_not_answer(
    cluster: Nats,
) -> None:
    """Right after a server's death the run queue's raft leader may be electing: the look at it must not
    hold the takeover's first decisions back (it held them a second, the chaos run's slowest takeovers)."""
    launcher = RecordingLauncher()
    launcher.queue_answers = anyio.Event()  # never answers during this test
    jobs: KVCache[JobSpec] = KVCache(cast(TypedKV[JobSpec], None))
    anchor = datetime.now(UTC) - timedelta(seconds=2.2)  # a slot overdue by 0.2 s, the next in 1.8 s
    jobs.apply(job_key("due"), JobSpec(name="due", schedule="@every 2s", anchor=anchor), 1)
    scheduler = Scheduler(jobs, cluster.log(), cast(Launcher, launcher), SchedulerSettings())
    async with anyio.create_task_group() as tg:
        started = time.monotonic()
        await tg.start(scheduler.run)
        with anyio.fail_after(5):
            await _wait_until(lambda: bool(launcher.dispatched))
        assert time.monotonic() - started < 0.8, "the first decision waited for the run queue"
        tg.cancel_scope.cancel()


async def test_a_server_that_followed_the_log_takes_it_over_with_every_decision_and_fences_the_old_leader(
    cluster: Nats, lead: Lead
) -> None:
    """A follower reads the log as it grows; at its takeover it reads only what came since (by message
    gets: no consumer, which right after a leader's death waits for the meta leader's election). It must
    find exactly what a full read finds, across a checkpoint's purge, and fence the old leader as well."""
    old = await lead(1, checkpoint_after=20)
    tail = LogTail(cluster.js)
    for slot in range(1, 6):
        await old.record(f"job-{slot}", _cursor(slot))
    await tail.catch_up()  # a follow round
    assert {k: c.slot_ns for k, c in tail.cursors.items()} == {f"job-{s}": s for s in range(1, 6)}
    tail.warm = tail.no_legacy = True
    for slot in range(6, 60):  # after the follow round: past a checkpoint and its purge
        await old.record(f"job-{slot % 7}", _cursor(slot))

    new = await lead(2, tail=tail)
    cold = LogTail(cluster.js)
    await cold.read_rest()
    assert new.cursors == cold.cursors, "the follower's takeover missed what a full read finds"
    assert new.last_seq == cold.last_seq  # its takeover marker the last message
    with pytest.raises(LeadershipLostError):
        await old.record("job-1", _cursor(99))
    await new.record("job-1", _cursor(100, fence=2))

    new.close()  # its leadership ends: the server follows the log from where it left it
    assert not tail.leading
    assert tail.cursors["job-1"].slot_ns == 100


async def test_one_reader_follows_every_partition_log_even_appends_made_while_this_server_led_one(
    cluster: Nats, lead: Lead
) -> None:
    """A server follows all partitions' logs with one read per round, not one per partition. A partition
    this server led meanwhile is read again from where its leader session left it: a newer leader may have
    appended while the old session was still winding down."""
    tails = LogTails(cluster.js, 2)
    first = await lead(1, partition=0)
    second = await lead(1, partition=1)
    for slot in range(1, 6):
        await first.record(f"job-{slot}", _cursor(slot))
        await second.record(f"other-{slot}", _cursor(slot))
    await tails.read_round()
    assert await _everything_in(cluster, 0) == tails[0].cursors
    assert await _everything_in(cluster, 1) == tails[1].cursors
    assert all(tail.warm for tail in tails.tails)

    mine = await lead(2, partition=1, tail=tails[1])  # this server leads partition 1 for a while
    await first.record("job-6", _cursor(6))
    await tails.read_round()
    assert tails[0].cursors["job-6"].slot_ns == 6
    newer = await lead(3, partition=1)  # and is deposed: the newer leader appends before it hands back
    await newer.record("other-7", _cursor(7, fence=3))
    await tails.read_round()  # read past the newer leader's append while this server still "leads"
    mine.close()
    await tails.read_round()
    assert await _everything_in(cluster, 1) == tails[1].cursors
    assert tails[1].cursors["other-7"].fence == 3


async def _everything_in(cluster: Nats, partition: int) -> dict[str, LaunchCursor]:
    cold = LogTail(cluster.js, partition)
    await cold.read_rest()
    return cold.cursors


async def test_a_follower_gets_each_append_pushed_as_it_lands(
    cluster: Nats, lead: Lead, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two rounds (here: never again) the ordered consumer delivers every append of every
    partition: a get per append cost the follower more than a third of its scheduling work."""
    monkeypatch.setattr(decisions, "FOLLOW_INTERVAL", 3600.0)
    tails = LogTails(cluster.js, 2)
    first = await lead(1, partition=0)
    second = await lead(1, partition=1)
    await first.record("job-0", _cursor(1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(tails.follow)
        await _wait_until(lambda: "job-0" in tails[0].cursors)  # the first round
        for slot in range(2, 12):
            await first.record(f"job-{slot}", _cursor(slot))
            await second.record(f"other-{slot}", _cursor(slot))
        with anyio.fail_after(10):
            await _wait_until(lambda: "job-11" in tails[0].cursors and "other-11" in tails[1].cursors)
        tg.cancel_scope.cancel()
    assert await _everything_in(cluster, 0) == tails[0].cursors
    assert await _everything_in(cluster, 1) == tails[1].cursors
