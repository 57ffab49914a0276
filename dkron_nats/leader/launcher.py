"""Launching executions: pick the nodes, publish the run request, and record whatever went wrong.

Only the leader launches. A launch is published once into DKRON_RUNS on the subject of the job's tags
(`subjects.tags_subject`), naming the nodes it is for, or the lanes of a `value:N` job; every agent whose
tags match receives it on its own consumer. A retry goes to its one node by name. Every run request carries
the lease revision (the fencing token) and the lease holder's signature; agents run only a request that
carries the current term, signed with the key of the lease they follow. A request waits in the stream
until its agent has room; one whose node is gone is recorded as failed (`watch_dispatches`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import anyio
import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.trace import SpanKind

from dkron_nats.errors import LeadershipLostError
from dkron_nats.failpoints import outage_point
from dkron_nats.kv.buckets import RESULTS_CONSUMER, RUNS_STREAM
from dkron_nats.kv.executions import ExecutionStore, execution_id, is_lane
from dkron_nats.kv.locks import LOCKED, JobLocks
from dkron_nats.kv.publisher import MSG_ID, publish_call
from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.leader.lease import SIGNATURE_HEADER, Lease
from dkron_nats.leader.notify import Notifier
from dkron_nats.leader.outcomes import NotRunRecorder
from dkron_nats.leader.runconsumers import RunConsumers
from dkron_nats.leader.runqueue import RunQueueGauge
from dkron_nats.leader.targets import matching_nodes, select_targets
from dkron_nats.members import Registry
from dkron_nats.metrics import DISPATCH_SECONDS
from dkron_nats.models import (
    CancelLaunch,
    Execution,
    ExecutionResult,
    JobSpec,
    Member,
    RunRequest,
    decode,
    encode,
)
from dkron_nats.names import job_key
from dkron_nats.subjects import (
    AGENT_CANCEL,
    LEADER_RESULT_NODE,
    ONLY_PARTITION,
    RUNS_SUBJECTS,
    Partition,
    run_subject,
    tags_subject,
)
from dkron_nats.timefmt import to_ns, utcnow
from dkron_nats.tracing import inject, tracer

logger = logging.getLogger(__name__)
DISPATCH_TIMEOUT = 5.0
"""After this long, a run request no agent has claimed is looked at: failed if its node is gone."""
DISPATCH_CHECK_INTERVAL = 1.0
QUEUE_READ_LIMIT = 10_000
"""Run requests read from the queue at a takeover, at most (it holds about scheduler.MAX_WAITING_RUNS)."""


def attempt_id(group: int, lane: str, attempt: int) -> str:
    """Deterministic execution id: a repeated request for the same launch names the same record.

    The lane is the node the launch was first sent to; a retry on another node keeps it, so every
    attempt of one lane is found by counting up from 1.
    """
    base = execution_id(group, lane)
    return base if attempt == 1 else f"{base}={attempt}"


def _deciding_error(failed: ExceptionGroup[Exception]) -> Exception:
    """The error of a multi-target dispatch its caller should act on: the lease lost (nothing more may be
    sent), else a transient one (sending again is safe: a node answers a repeated request "duplicate"),
    else the first."""
    errors = list(_leaves(failed))
    for kind in (LeadershipLostError, TRANSIENT):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]


def _leaves(error: Exception) -> Iterator[Exception]:
    if isinstance(error, ExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _values(tags: dict[str, str] | None) -> dict[str, str]:
    """The job's tags without their node counts: every matching node."""
    return {key: value.partition(":")[0] for key, value in (tags or {}).items()}


class Untaken(msgspec.Struct, frozen=True):
    """A run request's execution that no agent has claimed yet, checked again at `deadline`."""

    deadline: float
    exec_id: str
    target: str
    request: RunRequest


@dataclass(frozen=True, slots=True)
class JobBusy:
    """A launch of the job is still running (`group`), and its concurrency is forbid."""

    group: int


@dataclass(frozen=True, slots=True)
class Launched:
    """A launch that was sent: its group and the nodes it went to."""

    group: int
    targets: list[str]

    @property
    def execution_ids(self) -> list[str]:
        """The ids of its first attempts, one per node (`jobs run --follow` streams them)."""
        return [attempt_id(self.group, node, 1) for node in self.targets]


class Launcher:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        registry: Registry,
        executions: ExecutionStore,
        lease: Lease,
        region: str,
        locks: JobLocks,
        notifier: Notifier | None = None,
        not_run: NotRunRecorder | None = None,
        consumers: RunConsumers | None = None,
        partition: Partition = ONLY_PARTITION,
        run_queue: RunQueueGauge | None = None,
    ) -> None:
        self.nc = nc
        self.run_queue = run_queue or RunQueueGauge(nc, fresh_for=0.0)
        """Shared by the launchers of a server's partitions; a launcher alone looks every time it asks."""
        self.partition = partition
        """The partition whose jobs this launcher launches, under the term of that partition's lease."""
        self.consumers = consumers
        """The agents' consumers of run requests: only a node whose consumer is ready is a target."""
        self.notifier = notifier
        self.not_run = not_run
        """Stores missed and skipped slots directly; without it they go through the results stream too."""
        self.locks = locks
        self.js = js
        self.registry = registry
        self.executions = executions
        self.lease = lease
        self.region = region
        self.dispatched: dict[str, str] = {}
        """Execution key -> node (or lane), for executions this leader sent and has no result for yet."""
        self._untaken: dict[str, Untaken] = {}
        """Execution key -> its run request, until an agent has claimed it."""

    def fence(self) -> int:
        return self.lease.fence

    def holds_lease(self) -> bool:
        return self.lease.valid()

    def ensure_leader(self) -> None:
        """Checked (locally, on the monotonic clock) right before every write and dispatch: a leader that
        was paused past its lease must not act on what it decided before the pause."""
        if not self.holds_lease():
            raise LeadershipLostError

    def targets(self, job: JobSpec) -> list[str] | str:
        return select_targets(job, self._dispatchable(), self.region)

    def _dispatchable(self) -> list[Member]:
        """Reachable nodes whose consumer of run requests is ready (a request published now reaches it)."""
        reachable = self.registry.reachable()
        if self.consumers is None:
            return reachable
        return [m for m in reachable if self.consumers.ready(m)]

    def another_node(self, job: JobSpec, failed_on: str) -> str:
        """A matching alive node other than `failed_on` for a retry; `failed_on` if there is none."""
        others = [m for m in self._dispatchable() if m.name != failed_on]
        matching = select_targets(msgspec.structs.replace(job, tags=_values(job.tags)), others, self.region)
        if isinstance(matching, str):
            logger.warning("retry of %s stays on %s: no other alive node matches", job.name, failed_on)
            return failed_on
        return random.choice(matching)

    async def record(self, execution: Execution, siblings: list[str] | None = None) -> None:
        """Publish a record the leader made itself into the results stream (idempotent by id)."""
        await self.publish_result(ExecutionResult(execution=execution, siblings=siblings or []))

    async def publish_result(self, result: ExecutionResult) -> None:
        self.ensure_leader()
        headers = {"Nats-Msg-Id": result.msg_id}
        subject, payload = self.partition.result_subject(LEADER_RESULT_NODE), encode(result)
        send = publish_call(self.executions.typed.publisher, self.js, subject, payload, headers)
        await with_retry(send, what="result publish")

    async def record_outcome(
        self, job: JobSpec, group: int, scheduled_at: datetime | None, status: str, reason: str
    ) -> None:
        """A slot or run that did not reach any agent: missed, skipped, or failed before dispatch."""
        if status == "failed":
            logger.warning("%s was not launched: %s", job.name, reason)
        now = utcnow()
        ex = Execution(
            id=execution_id(group, status if status in ("missed", "skipped") else "none"),
            job_name=job.name,
            group=group,
            started_at=now,
            finished_at=now,
            success=False,
            output=reason,
            status=status,
            scheduled_at=scheduled_at,
            fence=self.fence(),
            partition=self.partition.tag,
        )
        if self.not_run is not None and self.not_run.takes(job, ex):
            self.ensure_leader()
            await self.not_run.record(job, ex)
        else:
            await self.record(ex)

    async def dispatch(
        self,
        job: JobSpec,
        group: int,
        scheduled_at: datetime | None,
        targets: list[str],
        attempt: int = 1,
        siblings: list[str] | None = None,
        lanes: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Publish the launch's run requests: a first attempt once, on the job's tag subject, for `targets`
        (nodes, or the lanes of a `value:N` job); a retry (`lanes`: the lanes its ids are made from) to each
        named node. `siblings` overrides the group's other ids; `env` is added to the job's environment for
        this launch."""
        if attempt == 1 and self.notifier is not None:
            # Here, not per node or per attempt: the pre-webhook announces the launch once.
            self.notifier.launch_started(job, group, scheduled_at, targets)
        ex = Execution(
            id="",
            job_name=job.name,
            group=group,
            attempt=attempt,
            scheduled_at=scheduled_at,
            fence=self.fence(),
            partition=self.partition.tag,
        )
        ids = [attempt_id(group, lane, attempt) for lane in (lanes or targets)]
        if attempt == 1 and lanes is None:
            request = RunRequest(
                execution=ex,
                job=job,
                siblings=siblings or ids,
                env=env or {},
                targets=targets,
            )
            wanted, _ = job.wanted_tags()
            await self._publish(
                tags_subject(self.region, wanted), request, dict(zip(ids, targets, strict=True))
            )
            return
        for node, exec_id in zip(targets, ids, strict=True):
            others = siblings if siblings is not None else [i for i in ids if i != exec_id]
            one = msgspec.structs.replace(ex, id=exec_id, node_name=node)
            request = RunRequest(execution=one, job=job, siblings=others, env=env or {})
            await self._publish(run_subject(node), request, {exec_id: node})

    async def _publish(self, subject: str, request: RunRequest, expected: dict[str, str]) -> None:
        """Publish one run request into DKRON_RUNS; `expected`: the execution ids it should make, and the
        node (or lane) each is for, followed until an agent takes them."""
        ex = request.execution
        payload = encode(request)
        self.ensure_leader()
        deadline = time.monotonic() + DISPATCH_TIMEOUT
        for exec_id, target in expected.items():
            key = ExecutionStore.key(ex.job_name, exec_id)
            self.dispatched[key] = target
            self._untaken[key] = Untaken(deadline, exec_id, target, request)
        attributes = {
            "dkron.job": ex.job_name,
            "dkron.execution": ",".join(expected),
            "dkron.subject": subject,
        }
        with tracer().start_as_current_span("dispatch", kind=SpanKind.PRODUCER, attributes=attributes):
            headers = dict(inject({}))  # the agent's execution span continues this one
            headers[SIGNATURE_HEADER] = self.lease.sign(payload)
            # The same request resent after a lost ack is stored once; a new leader's is a new message.
            headers[MSG_ID] = (
                f"{ex.fence}:{subject}:{ex.job_name}:{ex.group}:{ex.attempt}:{','.join(expected)}"
            )
            send = publish_call(self.executions.typed.publisher, self.js, subject, payload, headers)
            sent = time.monotonic()
            outage_point("run-request-unavailable")  # the stream stays leaderless longer than the retries
            await with_retry(send, what="run request")
            DISPATCH_SECONDS.observe(time.monotonic() - sent)

    async def resend_queued_runs(self, job_of: Callable[[str], JobSpec | None]) -> int:
        """Send again, under this leader's term, the run requests of earlier leaders still waiting in
        DKRON_RUNS with an execution nobody claimed: agents refuse them now that their term is over, and
        a takeover concludes only each job's last decision. Claims are create-only by execution id, so a
        request sent twice still runs once. Returns how many were sent again."""
        resent = 0
        for subject, request in await self.queued_requests():
            ex = request.execution
            if ex.partition != self.partition.tag:
                continue  # another partition's owner sent it, under its own term
            if ex.fence >= self.fence() or job_of(ex.job_name) is None:
                continue  # this leader's own, or the job is gone
            unclaimed = await self._unclaimed(request)
            if not unclaimed:
                continue
            fresh = msgspec.structs.replace(
                request, execution=msgspec.structs.replace(ex, fence=self.fence()), resent=True
            )
            logger.info(
                "re-sending %s/%s of an earlier leader (%s)", ex.job_name, ex.group, ", ".join(unclaimed)
            )
            await self._publish(subject, fresh, unclaimed)
            resent += 1
        return resent

    async def queued_requests(self) -> list[tuple[str, RunRequest]]:
        """The run requests waiting in DKRON_RUNS now, oldest first: one "next message from sequence N"
        read each (an ordered consumer is refused on an interest stream with replicas)."""
        found: list[tuple[str, RunRequest]] = []
        state = (await self.js.stream_info(RUNS_STREAM)).state
        seq = state.first_seq
        while state.messages and seq <= state.last_seq and len(found) < QUEUE_READ_LIMIT:
            try:
                msg = await self.js.get_msg(RUNS_STREAM, seq, subject=RUNS_SUBJECTS, next=True)
            except NotFoundError:
                break  # nothing from `seq` on
            with contextlib.suppress(msgspec.DecodeError):
                found.append((str(msg.subject), decode(msg.data or b"", RunRequest)))
            seq = int(msg.seq or seq) + 1
        return found

    async def _unclaimed(self, request: RunRequest) -> dict[str, str]:
        """The request's execution ids nobody has claimed, and the node (or lane) of each."""
        ex = request.execution
        wanted = (
            {ex.id: ex.node_name}
            if ex.id
            else {attempt_id(ex.group, target, ex.attempt): target for target in request.targets}
        )
        return {i: t for i, t in wanted.items() if await self.executions.get(ex.job_name, i) is None}

    async def runs_waiting(self) -> int:
        """The launches under way that nothing has finished with: run requests in DKRON_RUNS that not every
        agent they reach has taken yet, and results in DKRON_RESULTS this partition's owner has not read."""
        return await self.run_queue.waiting(self.partition.durable(RESULTS_CONSUMER))

    async def results_waiting_from(self, node: str) -> bool:
        """Whether `node` has published results to this partition that are not applied yet."""
        return await self.run_queue.results_waiting(self.partition.result_subject(node))

    async def watch_dispatches(self) -> None:
        """Fail the run requests no agent took and none will: their node (for a lane, every matching node)
        is gone. A node that is alive takes its requests when it has room (they wait in the stream, however
        long its execution slots are taken), and a node that comes back resumes its consumer."""
        while True:
            await anyio.sleep(DISPATCH_CHECK_INTERVAL)
            now = time.monotonic()
            due = [key for key, untaken in self._untaken.items() if untaken.deadline <= now]
            for key in due:
                untaken = self._untaken.get(key)
                if untaken is None:
                    continue
                try:
                    await self._check_untaken(key, untaken)
                except NatsError as exc:  # looked at again in the next round
                    logger.warning("could not check the run request %s: %s", key, exc)

    async def _check_untaken(self, key: str, untaken: Untaken) -> None:
        job = untaken.request.job
        if not is_lane(untaken.target) and self._can_take(job, untaken.target):
            # Claimed or still queued for its node: nothing to do while the node lives (no read per run).
            await self._wait_longer(key, untaken)
            return
        found = await self.executions.get(job.name, untaken.exec_id)
        if self._untaken.get(key) is not untaken:
            return  # settled while it was read: its result came (`finished`)
        if found is not None:
            del self._untaken[key]
            self.dispatched[key] = found.node_name  # a lane: the node that took it (for the agent watchdog)
            return
        if self._can_take(job, untaken.target):
            await self._wait_longer(key, untaken)
            return
        del self._untaken[key]
        if is_lane(untaken.target):
            reason = f"no alive node with the job's tags took lane {untaken.target} of the launch"
        else:
            reason = f"node {untaken.target} is gone (no heartbeat) and did not take the run request"
        await self._record_failed_dispatch(untaken, reason)

    async def _wait_longer(self, key: str, untaken: Untaken) -> None:
        """Look again later; a `forbid` job stays busy meanwhile (its request may wait for a free slot)."""
        self._untaken[key] = msgspec.structs.replace(untaken, deadline=time.monotonic() + DISPATCH_TIMEOUT)
        job = untaken.request.job
        if job.concurrency in LOCKED:
            await self.locks.renew(job_key(job.name), job.name, untaken.request.execution.group)

    def _can_take(self, job: JobSpec, target: str) -> bool:
        if not is_lane(target):
            return any(m.name == target for m in self.registry.alive())
        wanted, _ = job.wanted_tags()
        return bool(matching_nodes(wanted, self.registry.alive(), self.region))

    async def _record_failed_dispatch(self, untaken: Untaken, reason: str) -> None:
        logger.warning("%s", reason)
        now = utcnow()
        ex = untaken.request.execution
        failed = msgspec.structs.replace(
            ex,
            id=untaken.exec_id,
            node_name="" if is_lane(untaken.target) else untaken.target,
            started_at=now,
            finished_at=now,
            success=False,
            output=reason,
            status="failed",
        )
        siblings = [i for i in untaken.request.siblings if i != untaken.exec_id]
        if (rev := await self.executions.claim(failed)) is not None:
            await self.publish_result(ExecutionResult(execution=failed, siblings=siblings, claimed_at=rev))

    async def launch_now(
        self,
        job: JobSpec,
        group: int | None = None,
        force: bool = False,
        env: dict[str, str] | None = None,
    ) -> Launched | str | JobBusy:
        """A run outside the schedule (manual, or a dependent job): the launch, why no node can run it,
        or, for a `forbid` job whose previous launch still runs, JobBusy (`force` runs it anyway)."""
        resend = group is not None
        group = group or to_ns(utcnow())
        replacing = None
        if not force and job.concurrency in LOCKED:
            held = await self.locks.holder(job_key(job.name))
            if held is not None and held != group:
                if job.concurrency == "forbid":
                    return JobBusy(held)
                replacing = held
        # A dependent launch is sent again after a leader crash: to the nodes that claimed it already,
        # if any (a new leader may see other members alive than the one that chose them).
        targets = (await self._claimed_by(job, group) if resend else []) or self.targets(job)
        if isinstance(targets, str):
            await self.record_outcome(job, group, None, "failed", targets)
            return targets
        if not force and not await self.hold(job, group, replacing):
            return JobBusy(await self.locks.holder(job_key(job.name)) or 0)
        await self.dispatch(job, group, None, targets, env=env)
        return Launched(group, targets)

    async def _claimed_by(self, job: JobSpec, group: int) -> list[str]:
        """The nodes (alive or not) that hold an execution record of this launch."""
        members = [*self.registry.alive(), *self.registry.failed()]
        every_match = msgspec.structs.replace(job, tags=_values(job.tags))
        candidates = select_targets(every_match, members, self.region)
        if isinstance(candidates, str):
            return []
        found = [await self.executions.get(job.name, execution_id(group, node)) for node in candidates]
        return [node for ex, node in zip(found, candidates, strict=True) if ex is not None]

    async def hold(self, job: JobSpec, group: int, replacing: int | None = None) -> bool:
        """Take a `forbid`/`replace` job's lease for this launch (cancelling `replacing`); others: True."""
        if job.concurrency not in LOCKED:
            return True
        self.ensure_leader()
        if not await self.locks.take(job_key(job.name), job.name, group, replacing):
            return False
        if replacing is not None:
            reason = f"cancelled: replaced by a newer run of {job.name} (concurrency replace)"
            await self.nc.publish(
                AGENT_CANCEL, encode(CancelLaunch(job=job.name, group=replacing, reason=reason))
            )
        return True

    async def fail_if_agent_lost(self, execution: Execution, revision: int) -> bool:
        """At takeover: end a running execution (stored at `revision`) whose node is gone or restarted
        since it started."""
        member = self.registry.get(execution.node_name)
        alive = {m.name for m in self.registry.alive()}
        restarted = (
            member is not None
            and execution.started_at is not None
            and member.started_at > execution.started_at
        )
        if execution.node_name in alive and not restarted:
            return False
        await self.rule_lost(execution, revision, "restarted" if restarted else "is gone")
        return True

    async def rule_lost(self, execution: Execution, revision: int, why: str) -> None:
        """Publish the verdict "agent lost" for the record at `revision`: the result processor stores it over
        exactly that revision, so if the agent's own result was applied first, the verdict does not land."""
        verdict = execution.lost(why, utcnow())
        await self.publish_result(msgspec.structs.replace(verdict, claimed_at=revision))

    def sent_to(self, node: str) -> set[str]:
        """Keys of the executions this leader sent to `node` and has no result for."""
        return {key for key, target in self.dispatched.items() if target == node}

    def finished(self, execution: Execution) -> None:
        key = ExecutionStore.key(execution.job_name, execution.id)
        self.dispatched.pop(key, None)
        self._untaken.pop(key, None)
