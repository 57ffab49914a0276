"""Faults while the leader applies execution results, against a real nats-server.

Each test runs the leader's result processor (with its launcher, lease, stats and notifier) in this process,
as the leader session runs it, once per "server"; a second server's processor stands for the leader that
takes over. No agent runs anything: a run request in DKRON_RUNS (kept there by a consumer that never reads)
is what shows that a launch was sent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from dkron_nats.jobs import JobService
from dkron_nats.kv.buckets import (
    RESULTS_CONSUMER,
    RESULTS_STREAM,
    RUNS_STREAM,
    Buckets,
    StorageLimits,
    ensure_buckets,
)
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.executions import ExecutionStore, execution_id
from dkron_nats.kv.locks import JobLocks
from dkron_nats.kv.puller import Puller
from dkron_nats.kv.typed import TypedKV
from dkron_nats.leader.launcher import Launcher, attempt_id
from dkron_nats.leader.lease import LEASE_KEY, Lease
from dkron_nats.leader.notify import Notifier, NotifySettings, Webhook
from dkron_nats.leader.results import Outcome, ResultProcessor
from dkron_nats.leader.runqueue import RunQueueGauge
from dkron_nats.leader.stats import DayStats, Stats
from dkron_nats.members import Registry
from dkron_nats.models import (
    Execution,
    ExecutionResult,
    JobSpec,
    JobState,
    Member,
    RunRequest,
    decode,
    encode,
)
from dkron_nats.names import job_key
from dkron_nats.natsserver import EmbeddedNats
from dkron_nats.subjects import RUNS_SUBJECTS, Partition, result_subject, run_subject
from dkron_nats.timefmt import to_ns, utcnow
from tests.harness import free_port
from tests.httpserver import HttpTestServer, serving
from tests.natsbackend import wait_for_async

pytestmark = pytest.mark.anyio

AGENTS = ("agent-1", "agent-2")
WEBHOOK_PAYLOAD = "{{.JobName}} {{.ExecutionGroup}}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Cluster:
    nc: Client
    js: JetStreamContext
    buckets: Buckets

    @property
    def executions(self) -> ExecutionStore:
        return ExecutionStore(self.buckets.executions, self.js)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with EmbeddedNats(tmp_path, f"127.0.0.1:{free_port()}", "solo") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            buckets = await ensure_buckets(js, StorageLimits())
            members = TypedKV(buckets.members, Member)
            for name in AGENTS:
                member = Member(
                    name=name, addr="127.0.0.1", port=1, tags={"role": "web"}, server=False, version="test",
                    started_at=utcnow(),
                )  # fmt: skip
                await members.put(name, member)
            # Keeps every run request in the stream (interest retention), for `_sent` to read.
            await js.add_consumer(
                RUNS_STREAM, ConsumerConfig(durable_name="kept", filter_subject=RUNS_SUBJECTS)
            )
            yield Cluster(nc, js, buckets)
        finally:
            await nc.close()


@dataclass
class Leader:
    """One server's leader core: what its leader session runs to apply results."""

    lease: Lease
    results: ResultProcessor
    stats: Stats
    notifier: Notifier


async def _server(cluster: Cluster, name: str, webhook: str = "") -> Leader:
    """A server's leader core, with its caches as they are now (they do not follow the buckets after)."""
    jobs_cache = KVCache(TypedKV(cluster.buckets.jobs, JobSpec))
    states = KVCache(TypedKV(cluster.buckets.job_state, JobState))
    registry = Registry(TypedKV(cluster.buckets.members, Member), ttl=600)
    for cache in (jobs_cache, states, registry.cache):
        await cache.rescan()
    jobs = JobService(jobs_cache, states, is_paused=lambda: False)
    lease = Lease(cluster.buckets.leader, name, f"{name}-incarnation", ttl=60)
    hook = Webhook(webhook, WEBHOOK_PAYLOAD) if webhook else None
    notifier = Notifier(NotifySettings(name, webhook=hook), cluster.executions, retry_delays=(0.2,))
    locks = JobLocks(cluster.buckets.locks, cluster.js, ttl=60)
    launcher = Launcher(
        cluster.nc, cluster.js, registry, cluster.executions, lease, "global", locks, notifier
    )
    stats = Stats(TypedKV(cluster.buckets.stats, DayStats))
    results = ResultProcessor(cluster.js, jobs, cluster.executions, launcher, 100, stats, notifier=notifier)
    return Leader(lease, results, stats, notifier)


async def _take_lease(cluster: Cluster, leader: Leader) -> None:
    """The previous holder's lease has run out (deleted here, as its expiry would); `leader` takes it."""
    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
        await cluster.buckets.leader.delete(LEASE_KEY)
    assert await leader.lease.try_acquire(utcnow())


@contextlib.asynccontextmanager
async def _leading(leader: Leader, results: bool = True) -> AsyncIterator[None]:
    """The leader's notifier and (with `results`) its result processor run inside the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(leader.notifier.run)
        if results:
            await tg.start(leader.results.run)
        yield
        tg.cancel_scope.cancel()


async def _save(cluster: Cluster, spec: JobSpec) -> None:
    await TypedKV(cluster.buckets.jobs, JobSpec).put(job_key(spec.name), spec)


async def _agent_reports(cluster: Cluster, ended: Execution) -> int:
    """What the agent does: claim the execution when it starts, publish its result when it ends.

    Returns the result's sequence in the results stream."""
    running = msgspec.structs.replace(ended, status="running", success=False, finished_at=None)
    assert await cluster.executions.claim(running)
    result = ExecutionResult(execution=ended)
    ack = await cluster.js.publish(
        result_subject(ended.node_name), encode(result), headers={"Nats-Msg-Id": result.msg_id}
    )
    return int(ack.seq)


def _ended(job: str, group: int, success: bool, node: str = "agent-1") -> Execution:
    now = utcnow()
    return Execution(
        id=execution_id(group, node),
        job_name=job,
        group=group,
        node_name=node,
        started_at=now,
        finished_at=now,
        success=success,
        status="success" if success else "failed",
        output="done\n",
    )


async def _nothing_in_flight(js: JetStreamContext) -> bool:
    """The leader holds no result un-acked: it acked it or handed it back."""
    info = await js.consumer_info(RESULTS_STREAM, RESULTS_CONSUMER)
    return (info.num_ack_pending or 0) == 0


async def _sent(cluster: Cluster, job: str, ids: list[str]) -> bool:
    """Whether run requests for every one of these executions of `job` are in DKRON_RUNS."""
    state = (await cluster.js.stream_info(RUNS_STREAM)).state
    missing = set(ids)
    for seq in range(state.first_seq, state.last_seq + 1):
        request = decode((await cluster.js.get_msg(RUNS_STREAM, seq)).data or b"", RunRequest)
        if request.job.name == job:
            ex = request.execution
            missing -= {ex.id} if ex.id else {execution_id(ex.group, t) for t in request.targets}
    return not missing


@pytest.mark.parametrize("follow_up", ["retry", "dependent job on two nodes"])
async def test_a_leader_deposed_while_applying_a_result_leaves_the_follow_up_to_the_next_leader(
    cluster: Cluster, follow_up: str
) -> None:
    """The lease runs out after the result's record is stored and before its retry (one run request) or
    its dependent job's launch (run requests to two nodes, sent side by side) goes out: the deposed leader
    must not ack the result, so the next leader sends what follows it."""
    group = to_ns(utcnow())
    if follow_up == "retry":
        job, outcome = "flaky", _ended("flaky", group, success=False)
        await _save(cluster, JobSpec(name=job, retries=1))
        expected = (job, [attempt_id(group, "agent-1", 2)])
    else:
        job, outcome = "parent", _ended("parent", group, success=True)
        await _save(cluster, JobSpec(name=job))
        await _save(cluster, JobSpec(name="child", parent_job=job, tags={"role": "web"}))
        expected = ("child", [execution_id(group, node) for node in AGENTS])
    old = await _server(cluster, "s1")
    await _take_lease(cluster, old)

    def deposed(_: Execution) -> None:
        # What the lease keeper does when a renewal is overdue (election.py): from here on this server
        # must not send anything.
        old.lease.revision = old.lease.term = 0

    old.results.on_applied = deposed
    async with _leading(old):
        await _agent_reports(cluster, outcome)
        await wait_for_async(lambda: _deposed(old), what="the old leader to lose its lease")
        # The old leader goes on finishing that result (and is stopped at the end): meanwhile another
        # server takes over.
        new = await _server(cluster, "s2")
        await _take_lease(cluster, new)
        async with _leading(new):
            await wait_for_async(
                lambda: _sent(cluster, *expected),
                deadline=15,
                what=f"the {follow_up} sent by the new leader",
            )


async def _deposed(leader: Leader) -> bool:
    return not leader.lease.valid()


async def test_a_result_applied_again_by_a_leader_whose_cache_lags_is_counted_and_announced_once(
    cluster: Cluster,
) -> None:
    """A leader stored a result's outcome, counted and announced it, but the result's ack never reached
    JetStream; the next leader's job-state cache has not caught up yet (its watch stalled). Applying the
    result again must add nothing a user sees: `/v1/stats`, execution events, end-of-launch webhooks."""
    with serving() as receiver:
        webhook = f"{receiver.url}/ok"
        await _save(cluster, JobSpec(name="nightly"))
        new = await _server(cluster, "s2", webhook)  # a follower: its caches stop here
        old = await _server(cluster, "s1", webhook)
        await _take_lease(cluster, old)
        events: list[dict[str, object]] = []

        async def on_event(msg: Msg) -> None:
            events.append(json.loads(msg.data)["data"])

        sub = await cluster.nc.subscribe("dkron.events.execution.finished", cb=on_event)
        first = _ended("nightly", to_ns(utcnow()), success=True)
        seq = await _agent_reports(cluster, first)
        async with _leading(old, results=False):
            await old.results.apply(Outcome(first, [], seq))  # applied; the ack is what got lost
            await old.stats.flush()
            await wait_for_async(lambda: _hooks_for(receiver, first), what="the first launch's webhook")
        await _take_lease(cluster, new)
        second = _ended("nightly", to_ns(utcnow()), success=False)
        async with _leading(new):
            await _agent_reports(cluster, second)
            await wait_for_async(lambda: _hooks_for(receiver, second), what="the second launch's webhook")
            await wait_for_async(lambda: _nothing_in_flight(cluster.js), what="both results acked")
            await new.stats.flush()
        await cluster.nc.flush()  # events published on this connection have reached the subscriber
        await sub.unsubscribe()
        days = await new.stats.days(2)
        counted = (sum(d.success_count for _, d in days), sum(d.failed_count for _, d in days))
        assert counted == (1, 1), f"/v1/stats counts (success, failed) {counted} for one success, one failure"
        announced = [str(e["id"]) for e in events]
        assert sorted(announced) == sorted([first.id, second.id]), announced
        assert await _hooks_for(receiver, first) == 1, "the first launch's webhook was sent again"
        stored = await TypedKV(cluster.buckets.job_state, JobState).get(job_key("nightly"))
        assert stored is not None
        assert (stored[0].success_count, stored[0].error_count) == (1, 1)


async def test_a_result_counted_as_its_owner_stops_is_still_announced(cluster: Cluster) -> None:
    """A partition handed over under load stops its result lanes mid-apply. One stopped after the job
    state's write had landed, before its answer came back, went back to the stream; its redelivery found the
    result counted and announced nothing: 13 "finished" events of one second were missing in a three-server
    scaling run (every execution record was there). Counting and announcing now finish together."""
    await _save(cluster, JobSpec(name="handed"))
    old = await _server(cluster, "s1")
    await _take_lease(cluster, old)
    events: list[str] = []

    async def on_event(msg: Msg) -> None:
        events.append(str(json.loads(msg.data)["data"]["id"]))

    sub = await cluster.nc.subscribe("dkron.events.execution.finished", cb=on_event)
    written, answered = anyio.Event(), anyio.Event()
    change_state = old.results.jobs.change_state

    async def answer_late(*args: Any, **kwargs: Any) -> tuple[JobState, bool]:
        changed = await change_state(*args, **kwargs)
        written.set()
        await answered.wait()  # the write has landed; its answer is on its way
        return changed

    old.results.jobs.change_state = answer_late  # type: ignore[method-assign]
    ended = _ended("handed", to_ns(utcnow()), success=True)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as owner:
            await owner.start(old.results.run)
            await _agent_reports(cluster, ended)
            await written.wait()
            owner.cancel_scope.cancel()  # handed over
            answered.set()
    new = await _server(cluster, "s2")
    await _take_lease(cluster, new)
    async with _leading(new):
        await wait_for_async(lambda: _nothing_in_flight(cluster.js), what="the result acked")
    await cluster.nc.flush()
    await sub.unsubscribe()
    assert events == [ended.id], "the finished event was lost, or sent twice"


async def _hooks_for(receiver: HttpTestServer, ex: Execution) -> int:
    body = f"{ex.job_name} {ex.group}".encode()
    return sum(1 for seen in receiver.requests if seen.body == body)


async def test_results_not_yet_applied_count_as_launches_under_way(cluster: Cluster) -> None:
    """The scheduler holds its decisions back on the launches under way (scheduler.MAX_WAITING_RUNS): run
    requests no agent has taken, and results the leader has not fetched. Counting only the first let an
    overloaded node take on more and more, its results piling up unapplied (counted executions fell to half
    the rate offered, with no slot recorded missed)."""
    leader = await _server(cluster, "server-1")
    await _take_lease(cluster, leader)
    launcher = leader.results.launcher
    assert await launcher.runs_waiting() == 0  # no results consumer yet: nothing to count there
    async with _leading(leader):
        pass  # the result processor made its durable consumer, then stopped: results now wait
    await _save(cluster, JobSpec(name="nightly", schedule="@every 1h", executor="noop"))
    for group in range(1, 6):
        await _agent_reports(cluster, _ended("nightly", group, True))
    for node in AGENTS:
        await cluster.js.publish(run_subject(node), b"a run request")
    assert await launcher.runs_waiting() == 5 + 2
    async with _leading(leader):

        async def only_the_runs_left() -> bool:
            return await launcher.runs_waiting() == 2

        await wait_for_async(only_the_runs_left, what="the results to be applied")


async def test_the_partitions_of_a_server_share_one_look_at_the_run_queue(cluster: Cluster) -> None:
    """Sixteen busy partitions ask ten times a second how many launches are under way: one look answers
    all that ask together, and each gets its own results consumer's backlog."""
    looks = 0

    async def count(msg: Msg) -> None:
        nonlocal looks
        looks += 1

    await cluster.js.publish(run_subject(AGENTS[0]), b"a run request")
    three = Partition(3, 16)
    config = ConsumerConfig(durable_name=three.durable(RESULTS_CONSUMER), filter_subject=three.results_filter)
    await cluster.js.add_consumer(RESULTS_STREAM, config)
    for _ in range(2):
        await cluster.js.publish(three.result_subject(AGENTS[0]), b"a result")
    subs = [
        await cluster.nc.subscribe(f"$JS.API.STREAM.INFO.{RUNS_STREAM}", cb=count),
        await cluster.nc.subscribe(f"$JS.API.CONSUMER.*.{RESULTS_STREAM}.>", cb=count),
        await cluster.nc.subscribe(f"$JS.API.CONSUMER.*.{RESULTS_STREAM}", cb=count),
    ]
    await cluster.nc.flush()
    gauge = RunQueueGauge(cluster.nc)
    try:
        found: dict[int, int] = {}

        async def ask(partition: int) -> None:
            found[partition] = await gauge.waiting(Partition(partition, 16).durable(RESULTS_CONSUMER))

        async with anyio.create_task_group() as tg:
            for partition in range(16):
                tg.start_soon(ask, partition)
        await cluster.nc.flush()
        assert found == {p: 3 if p == 3 else 1 for p in range(16)}, (
            "the run queue, plus partition 3's results"
        )
        assert looks == 2, "more than one look at the run stream and one listing of the results consumers"
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_the_gauge_tells_whether_a_nodes_results_wait_unapplied(cluster: Cluster) -> None:
    """What the agent-loss watchdog asks before it rules a gone node's executions lost."""
    three = Partition(3, 16)
    config = ConsumerConfig(durable_name=three.durable(RESULTS_CONSUMER), filter_subject=three.results_filter)
    await cluster.js.add_consumer(RESULTS_STREAM, config)
    gauge = RunQueueGauge(cluster.nc)
    subject = three.result_subject(AGENTS[0])
    assert not await gauge.results_waiting(subject)
    await cluster.js.publish(subject, b"a result")
    assert await gauge.results_waiting(subject)
    assert not await gauge.results_waiting(three.result_subject(AGENTS[1])), "another node's"
    [msg] = await (await cluster.js.pull_subscribe_bind(config.durable_name, RESULTS_STREAM)).fetch(1)
    assert await gauge.results_waiting(subject), "delivered is not applied"
    await msg.ack_sync()
    assert not await gauge.results_waiting(subject), "applied: gone from the work queue"


async def test_results_delivered_to_a_stopping_owner_and_unread_go_back_at_once(cluster: Cluster) -> None:
    """A three-server scaling run lost "finished" events (and counts) of the slots due as a plan moved
    partitions: results already delivered to the old owner's connection, not yet read, were dropped with
    its subscription and came back after ack_wait (10 s); by then the job's next result had been applied by
    the new owner, and the sequence guard took the late one for counted. A stopping puller now hands back
    what it had not read."""
    three = Partition(3, 16)
    durable = three.durable(RESULTS_CONSUMER)
    config = ConsumerConfig(
        durable_name=durable, filter_subject=three.results_filter, ack_policy=AckPolicy.EXPLICIT, ack_wait=10
    )
    await cluster.js.add_consumer(RESULTS_STREAM, config)
    for i in range(5):
        await cluster.js.publish(three.result_subject(AGENTS[0]), b"result %d" % i)
    first = anyio.Event()

    async def stuck(msg: Msg) -> None:
        first.set()
        await anyio.sleep_forever()  # busy with the first while the rest wait in the subscription

    old = Puller(cluster.nc, cluster.js, RESULTS_STREAM, durable, lambda: 16)
    async with anyio.create_task_group() as owner:
        owner.start_soon(old.run, stuck)
        await first.wait()
        owner.cancel_scope.cancel()  # handed over
    taken: list[bytes] = []

    async def keep(msg: Msg) -> None:
        taken.append(msg.data)
        await msg.ack()

    new = Puller(cluster.nc, cluster.js, RESULTS_STREAM, durable, lambda: 16)
    with anyio.move_on_after(3):
        async with anyio.create_task_group() as owner:
            owner.start_soon(new.run, keep)
            while len(taken) < 4:
                await anyio.sleep(0.05)
            owner.cancel_scope.cancel()
    assert sorted(taken) == [b"result %d" % i for i in range(1, 5)], "the unread results came back late"


async def test_run_requests_an_earlier_leader_left_queued_are_sent_again_under_the_new_term(
    cluster: Cluster,
) -> None:
    """Seen in the chaos run: a leader's run requests waited in DKRON_RUNS while the agents' consumers
    changed leaders, the leader was replaced meanwhile, and the agents then refused them as a deposed
    leader's; the new leader concluded only the job's last decision, so two slots neither ran nor were
    recorded. A new leader now sends every queued request nobody claimed again, under its own term."""
    spec = JobSpec(name="queued", schedule="@every 1s", executor="noop", tags={"role": "web"})
    await _save(cluster, spec)
    old = await _server(cluster, "server-1")
    await _take_lease(cluster, old)
    await old.results.launcher.dispatch(spec, 100, utcnow(), list(AGENTS))
    await cluster.executions.claim(_running("queued", 100, AGENTS[0]))  # one agent took its part
    new = await _server(cluster, "server-2")
    await _take_lease(cluster, new)
    assert new.lease.fence > old.lease.fence

    assert await new.results.launcher.resend_queued_runs(lambda name: spec) == 1
    queued = [request for _, request in await new.results.launcher.queued_requests()]
    resent = [r for r in queued if r.execution.fence == new.lease.fence]
    assert len(resent) == 1
    assert resent[0].resent
    assert (resent[0].execution.group, resent[0].targets) == (100, list(AGENTS))

    await cluster.executions.claim(_running("queued", 100, AGENTS[1]))
    newest = await _server(cluster, "server-3")
    await _take_lease(cluster, newest)
    assert await newest.results.launcher.resend_queued_runs(lambda name: spec) == 0, "every part was claimed"


def _running(job: str, group: int, node: str) -> Execution:
    return Execution(
        id=execution_id(group, node), job_name=job, group=group, node_name=node, status="running"
    )
