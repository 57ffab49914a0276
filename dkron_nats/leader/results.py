"""Applies execution outcomes, in order, from the durable results stream.

Agents publish finished executions; the leader publishes the records it makes itself. The leader is the
only consumer: it stores the final record, updates counters and status, keeps the history bounded, and
runs what follows (retries, dependent jobs, ephemeral deletion). Counters carry the stream sequence they
were applied at, so a result redelivered after a crash is never counted, nor announced or notified, twice.
A leader deposed while applying a result leaves it un-acked: the next leader sends what follows it.

An agent's result counts only if it comes from the node that ran the execution: the node of its subject
(`dkron.result.<node>`, which NATS permissions tie to the agent's user) must be the one the result names and
the one holding the execution's claim. Anything else is logged and dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from dkron_nats.durations import parse_duration
from dkron_nats.errors import LeadershipLostError
from dkron_nats.failpoints import crash_point
from dkron_nats.jobs import JobService
from dkron_nats.kv.buckets import RESULTS_CONSUMER, RESULTS_STREAM
from dkron_nats.kv.executions import ExecutionStore, lane_of
from dkron_nats.kv.locks import LOCKED
from dkron_nats.kv.puller import Puller, hand_back
from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.leader.launcher import JobBusy, Launcher, attempt_id
from dkron_nats.leader.notify import Notifier
from dkron_nats.leader.outcomes import announce, trim_every
from dkron_nats.leader.stats import Stats
from dkron_nats.logformat import about
from dkron_nats.models import Execution, ExecutionResult, JobSpec, JobState, decode, encode
from dkron_nats.names import job_key
from dkron_nats.retry import retry_delay
from dkron_nats.subjects import LEADER_RESULT_NODE, partition_for, result_node
from dkron_nats.timefmt import later_of, to_ns, utcnow
from dkron_nats.tracing import extract, tracer
from dkron_nats.triggers import Trigger

logger = logging.getLogger(__name__)
MAX_IN_FLIGHT = 256
"""Results pulled and not yet applied; pulling waits while this many are."""
LANES = 64
"""Results applied at once, each lane's in the order they came (a job's results always share a lane)."""
COUNT_GRACE = 5.0
"""How long a stopping owner lets a result's count (the job state's write) and its announcement finish."""
_Pulled = tuple[Msg, "ExecutionResult | None"]


def _decoded(data: bytes, seq: int) -> ExecutionResult | None:
    try:
        return decode(data, ExecutionResult)
    except msgspec.DecodeError:
        logger.exception("dropping an undecodable result at sequence %d", seq)
        return None


@dataclass(frozen=True, slots=True)
class Outcome:
    execution: Execution
    siblings: list[str]
    seq: int
    claimed_at: int = 0
    """The claim's revision: the final record is stored over exactly that one (0: stored as it is)."""
    verdict: bool = False
    """The leader's ruling "agent lost", not the agent's own result."""


class ResultProcessor:
    def __init__(
        self,
        js: JetStreamContext,
        jobs: JobService,
        executions: ExecutionStore,
        launcher: Launcher,
        keep: int,
        stats: Stats,
        on_applied: Callable[[Execution], None] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.executions = executions
        self.launcher = launcher
        self.keep = keep
        """Execution records kept per job."""
        self.stats = stats
        self.on_applied = on_applied
        self.notifier = notifier
        self._in_flight = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pull results and apply them: one job's in stream order, different jobs' concurrently.

        Each result costs a few round trips to JetStream; applied one after the other they capped the
        whole cluster at a few hundred executions per second (docs/benchmarks.md). A job's counters, status
        and retries depend on the order of its own results only, so only those wait for each other: a job's
        results all go to the same one of a fixed set of lanes (no task per result).
        """
        part = self.launcher.partition
        durable = part.durable(RESULTS_CONSUMER)
        # Results fetched by a leader that then dies are redelivered after ack_wait: keep it short, so a
        # new leader is not kept waiting (a redelivered result is applied idempotently).
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=part.results_filter,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=10,
            max_ack_pending=20_000,
        )
        await with_retry(
            lambda: self.js.add_consumer(RESULTS_STREAM, config), attempts=30, what="results consumer"
        )
        puller = Puller(self.launcher.nc, self.js, RESULTS_STREAM, durable, self._room)
        streams = [anyio.create_memory_object_stream[_Pulled](math.inf) for _ in range(LANES)]
        task_status.started()
        async with anyio.create_task_group() as tg:
            for _, receive in streams:
                tg.start_soon(self._lane, receive, puller)

            async def deliver(msg: Msg) -> None:
                result = _decoded(msg.data, msg.metadata.sequence.stream)
                key = job_key(result.execution.job_name) if result is not None else ""
                self._in_flight += 1
                streams[hash(key) % LANES][0].send_nowait((msg, result))

            await puller.run(deliver)

    def _room(self) -> int:
        """How many more results to pull: none once deposed (about to be stopped: a result pulled now would
        only be handed back), else up to MAX_IN_FLIGHT being applied."""
        return MAX_IN_FLIGHT - self._in_flight if self.launcher.holds_lease() else 0

    async def _lane(self, receive: MemoryObjectReceiveStream[_Pulled], puller: Puller) -> None:
        """Apply the results of the jobs of one lane, in the order they were pulled."""
        try:
            async for msg, result in receive:
                try:
                    await self._handle_message(msg, result)
                except anyio.get_cancelled_exc_class():
                    await hand_back(msg)
                    raise
                finally:
                    self._in_flight -= 1
                with anyio.CancelScope(shield=True):
                    await puller.top_up()  # room again: ask for more
        finally:
            # Leadership ended with these results unapplied: hand them back now, not ack_wait later.
            while True:
                try:
                    msg, _ = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                await hand_back(msg)

    async def _handle_message(self, msg: Msg, result: ExecutionResult | None) -> None:
        seq = msg.metadata.sequence.stream
        if not self.launcher.holds_lease():
            # Deposed (a process resumed past its lease) and about to be stopped: hand the result back
            # now, or the new leader waits ack_wait for it.
            await msg.nak()
            return
        if msg.metadata.num_delivered > 1:
            logger.info("result %d delivered again: applying it idempotently", seq)
        wait = 0.0
        if result is not None:
            # The agent's execution span, so recording and notifying join the launch's trace.
            ex = result.execution
            with (
                about(job=ex.job_name, execution=ex.id),
                tracer().start_as_current_span("record result", context=extract(msg.headers)),
            ):
                try:
                    wait = await self._handle(result, seq, msg.subject)
                except LeadershipLostError:
                    # Deposed before a retry or dependent launch this result calls for went out: what is
                    # stored stays (applying it again changes nothing), the rest is the next leader's.
                    logger.info("result %d handed back: this server stopped leading while applying it", seq)
                    await msg.nak()
                    return
        if wait > 0:
            # A retry that is not due yet: JetStream hands the result back when it is, to whichever
            # server leads then, so a pending retry survives a takeover.
            await msg.nak(delay=wait)
        else:
            await msg.ack()

    async def _handle(self, result: ExecutionResult, seq: int, subject: str) -> float:
        """Apply one result; the seconds until it must be handled again (a retry not yet due), or 0."""
        delay = 0.2
        while True:
            self.launcher.ensure_leader()  # a leader deposed while JetStream re-elects stops retrying here
            try:
                if refusal := await self._origin_refusal(subject, result.execution):
                    ex = result.execution
                    node = result_node(subject)
                    msg = "refused result %d for %s/%s published as node %s: %s"
                    logger.warning(msg, seq, ex.job_name, ex.id, node, refusal)
                    return 0.0
                if result.verdict and await self._already_finished(result.execution):
                    return 0.0  # the agent's own result arrived before the leader's "agent lost" ruling
                return await self.apply(
                    Outcome(result.execution, result.siblings, seq, result.claimed_at, result.verdict)
                )
            except TRANSIENT:
                # Never drop a result because JetStream is re-electing: retry in place, keeping the order
                # the counters' sequence guard relies on.
                logger.warning("applying result %d waits for JetStream; retrying in %.1fs", seq, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except LeadershipLostError:
                raise  # the result must stay un-acked: the next leader sends what this one could not
            except Exception:
                # A result that cannot be applied for any other reason must not stop the stream.
                ex = result.execution
                logger.exception("applying the result of %s/%s failed; skipped", ex.job_name, ex.id)
                return 0.0

    async def _origin_refusal(self, subject: str, ex: Execution) -> str:
        """Why this result cannot come from the node that ran `ex` ("" if it can)."""
        node = result_node(subject)
        if subject == self.launcher.partition.result_subject(LEADER_RESULT_NODE):
            return ""  # the leader's own records: no agent may publish there
        if self.jobs.jobs.get(job_key(ex.job_name)) is None:
            return ""  # applying it changes nothing: the job is gone (with its claims)
        if ex.node_name != node:
            return f"it names node {ex.node_name or '(none)'}"
        if self.launcher.dispatched.get(ExecutionStore.key(ex.job_name, ex.id)) == node:
            return ""  # this leader sent it there, and only that node's user publishes on its subject
        # Sent by an earlier leader: the claim the node made when it took the request vouches for it.
        claim = await self.executions.get(ex.job_name, ex.id)
        if claim is None:
            return "no node claimed that execution"
        if claim.node_name != node:
            return f"node {claim.node_name or '(none)'} holds its claim"
        if (claim.group, claim.attempt) != (ex.group, ex.attempt):
            return f"it names launch {ex.group} attempt {ex.attempt}, the claim {claim.group} {claim.attempt}"
        return ""

    async def _already_finished(self, ex: Execution) -> bool:
        stored = await self.executions.get(ex.job_name, ex.id)
        return stored is not None and stored.finished

    async def apply(self, outcome: Outcome) -> float:
        """Record, count and follow up one outcome; returns the seconds until its retry is due (or 0).

        Applying the same outcome again (a redelivery) changes nothing but what is still to do: only the
        call whose state write counts it reports it (stats, event, end-of-launch notification). The write
        decides, not the states cache, which can lag behind the bucket after a takeover.
        """
        ex = outcome.execution
        key = job_key(ex.job_name)
        self.launcher.finished(ex)
        spec = self.jobs.jobs.get(key)
        if spec is None:
            logger.info("result %s of %s ignored: the job no longer exists", ex.id, ex.job_name)
            return 0.0  # the job was deleted meanwhile, with its history
        written = await self._store(outcome)
        if written is None:
            return 0.0
        if self.on_applied is not None:
            self.on_applied(ex)
        counts = ex.status not in ("missed", "skipped")
        retrying = counts and _will_retry(spec, ex)
        # Each other target's latest attempt, read once: it decides the status and whether the launch is over.
        others = await self._latest_of(ex, outcome.siblings) if counts and not retrying else []
        status = _group_status(ex, others) if counts and not retrying else None
        # Every node's last attempt is in: the launch has ended (as `status`).
        ended = status is not None and _over(spec, others)
        # Counting and announcing are one step: stopped between the two (a partition handed over while the
        # state's write was on its way), the result would go back to the stream and its redelivery, finding
        # it counted, would announce nothing. Shielded, and bounded: a stop waits COUNT_GRACE at most.
        with anyio.CancelScope(shield=True), anyio.fail_after(COUNT_GRACE):
            state, first_time = await self.jobs.change_state(
                key, lambda st: _counted(st, ex, status, outcome.seq)
            )
            if first_time:  # right after the write: a retry in place after a later error finds it counted
                await self._report(spec, ex, others, status if ended else None)
        keep = spec.history_limit or self.keep
        if _trim_due(state.recorded, keep):
            await self.executions.trim(ex.job_name, keep)
        if spec.history_max_age:
            await self._age_out(spec, written)
        if not counts:
            return 0.0
        if retrying:
            return await self._retry(spec, ex, outcome.siblings)
        if ended:
            if spec.concurrency in LOCKED:
                await self.launcher.locks.release(key, ex.group)
            for child in self._children(spec.name, status):
                await self._to_child(child, spec.name, ex.group, status or "failed")
        if status == "success" and spec.ephemeral and not self.jobs.dependents.children(spec.name):
            await self.jobs.delete_ephemeral(spec.name, ex.group)
            await self.executions.purge_job(spec.name)
        return 0.0

    def _children(self, parent: str, status: str | None) -> list[str]:
        """The jobs a parent's ended launch concerns: `depends_on` children count every end (each says on
        which), `parent_job` children run after a success only."""
        children = list(self.jobs.dependents.waiting_on(parent))
        if status == "success":
            children += [c for c in self.jobs.dependents.children(parent) if c not in children]
        return children

    async def _to_child(self, child: str, parent: str, group: int, status: str) -> None:
        """What follows a parent's launch is decided by the owner of the child's partition: here, or handed
        to it durably before the parent's result is acknowledged (a redelivery hands it over again; its
        message id, and the child's own bookkeeping, make that count once)."""
        key = job_key(child)
        if self.launcher.partition.owns(key):
            await self.parent_finished(child, parent, group, status)
            return
        owner = partition_for(key, self.launcher.partition.count)
        handed = Trigger(job=child, launch=group, parent=parent, status=status)
        headers = {"Nats-Msg-Id": f"dependency-{job_key(parent)}-{group}-{key}"}
        self.launcher.ensure_leader()
        await with_retry(
            lambda: self.js.publish(owner.trigger_subject(key), encode(handed), headers=headers),
            what="dependency hand-over",
        )

    async def parent_finished(self, child: str, parent: str, group: int, status: str) -> None:
        """A parent's launch `group` ended as `status`: count it for a `depends_on` child, or run a
        `parent_job` child (as the parent's group, so a redelivery cannot run it twice)."""
        spec = self.jobs.jobs.get(job_key(child))
        if spec is None:
            return
        if any(d.job == parent for d in spec.depends_on or []):
            await self._fan_in(child, parent, group, status)
        elif spec.parent_job == parent and status == "success" and not spec.disabled:
            await self._launch_dependent(spec, group, f"its parent {parent} succeeded")

    async def _store(self, outcome: Outcome) -> int | None:
        """Store the final record; its revision, or None if another outcome of the execution was stored over
        its claim first (the agent's result, or the verdict "agent lost"): then this one does not count."""
        ex = outcome.execution
        if not outcome.claimed_at:
            return await self.executions.put(ex)
        if (rev := await self.executions.finish(ex, outcome.claimed_at)) is not None:
            return rev
        stored = await self.executions.get_with_revision(ex.job_name, ex.id)
        if stored is None:
            return await self.executions.put(ex)  # trimmed away while it ran (a very short history)
        if stored[0] == ex:
            return stored[1]  # stored by this very result before (a redelivery)
        logger.warning(
            "%s/%s: another outcome was stored over its claim first; this %s does not count",
            ex.job_name,
            ex.id,
            "verdict" if outcome.verdict else "result",
        )
        return None

    async def _report(
        self, spec: JobSpec, ex: Execution, others: list[Execution | None], ended_as: str | None
    ) -> None:
        """What users see of an outcome, once: `/v1/stats`, the end-of-launch notification, the event."""
        if ex.status not in ("missed", "skipped"):
            self.stats.count(ex.finished_at, ex.success)
        if ended_as is not None and self.notifier is not None:
            self.notifier.launch_ended(spec, ex, [o for o in others if o is not None], ended_as)
        await announce(self.launcher.nc, ex)  # last: the only step that can fail (a NATS publish)

    async def _age_out(self, spec: JobSpec, written: int | None = None) -> None:
        """Purge the job's records older than `history_max_age`, at most a tenth of it late.

        The state keeps a few (sequence, time) marks of the job's records; every record before a mark that
        is older than the age goes in one subject-filtered purge by sequence.
        """
        max_age = parse_duration(spec.history_max_age)  # validated when the job was saved
        now = to_ns(utcnow())
        step, cutoff = int(max_age.total_seconds() * 1e8), now - int(max_age.total_seconds() * 1e9)
        purge_below = 0

        def marked(state: JobState) -> JobState | None:
            nonlocal purge_below
            marks = list(state.age_marks or [])
            if written is not None and (not marks or now - marks[-1][1] >= step):
                marks.append((written, now))
            expired = [m for m in marks if m[1] < cutoff]
            purge_below = expired[-1][0] + 1 if expired else 0
            kept = [m for m in marks if m[1] >= cutoff]
            return msgspec.structs.replace(state, age_marks=kept or None)

        await self.jobs.update_state(job_key(spec.name), marked)
        if purge_below:
            await self.executions.purge_before(spec.name, purge_below)

    async def age_out_idle_jobs(self) -> None:
        """Jobs that record nothing for a while age out too: walk the in-memory states, no bucket scan.

        Every half of the shortest `history_max_age` (between 1 s and a minute)."""
        version, interval, last = -1, 60.0, time.monotonic()
        while True:
            await anyio.sleep(1.0)
            if self.jobs.jobs.version != version:  # the jobs changed: find the shortest age again
                version = self.jobs.jobs.version
                ages = [
                    parse_duration(s.history_max_age) for s in self.jobs.jobs.values() if s.history_max_age
                ]
                interval = min(60.0, max(1.0, min((a.total_seconds() for a in ages), default=120.0) / 2))
            if time.monotonic() - last < interval:
                continue
            last = time.monotonic()
            for spec in list(self.jobs.jobs.values()):
                if not self.launcher.partition.owns(job_key(spec.name)):
                    continue  # another partition's owner ages it out
                state = self.jobs.states.get(job_key(spec.name))
                if spec.history_max_age and state is not None and state.age_marks:
                    try:
                        await self._age_out(spec)
                    except TRANSIENT:
                        logger.warning("aging out the history of %s waits for JetStream", spec.name)

    async def _fan_in(self, child: str, parent: str, group: int, status: str) -> None:
        """Count a parent's finished launch for a `depends_on` child; launch the child once every parent
        has one since its last run. The decision is stored (CAS) before the parent's result is acked,
        and a decided run is sent again until it is cleared, so a leader crash loses nothing."""
        spec = self.jobs.jobs.get(job_key(child))
        dep = next((d for d in (spec.depends_on or []) if d.job == parent), None) if spec else None
        if spec is None or dep is None or not _meets(dep.on, status):
            return
        key = job_key(child)
        parents = [d.job for d in spec.depends_on or []]
        state = await self.jobs.update_state(key, lambda st: _with_parent_done(st, parents, parent, group))
        pending = state.fanin_pending
        if not pending:
            return
        logger.info("%s: every parent finished (%s); launching it as %d", child, ", ".join(parents), pending)
        crash_point("fanin-decided")
        if not spec.disabled:
            await self._launch_dependent(spec, pending, f"its parents finished ({', '.join(parents)})")
        crash_point("fanin-launched")
        await self.jobs.update_state(
            key,
            lambda st: msgspec.structs.replace(st, fanin_pending=0) if st.fanin_pending == pending else None,
        )

    async def _retry(self, spec: JobSpec, ex: Execution, siblings: list[str]) -> float:
        """Send the next attempt once the backoff has passed; until then, the seconds left."""
        due = (ex.finished_at or utcnow()) + retry_delay(spec.retry_backoff, ex.attempt, ex.id)
        wait = (due - utcnow()).total_seconds()
        if wait > 0.05:
            if spec.concurrency in LOCKED:
                # The launch is not over while a retry is pending: keep the job busy until it is due
                # (no agent renews the lease meanwhile), even across a leader takeover.
                locks = self.launcher.locks
                await locks.renew(job_key(spec.name), spec.name, ex.group, ttl=wait + locks.ttl)
            return wait
        node = ex.node_name
        if spec.retry_on_other_node:
            node = self.launcher.another_node(spec, ex.node_name)
        await self.launcher.dispatch(
            spec,
            ex.group,
            ex.scheduled_at,
            [node],
            attempt=ex.attempt + 1,
            siblings=siblings,
            lanes=[lane_of(ex.id, ex.group)],
        )
        return 0.0

    async def _latest_of(self, ex: Execution, siblings: list[str]) -> list[Execution | None]:
        return [await self._latest(ex.job_name, sibling, ex.group) for sibling in siblings]

    async def _latest(self, job_name: str, sibling_id: str, group: int) -> Execution | None:
        """Walk the sibling's attempts upwards (they are numbered 1, 2, ...) to the last one."""
        node = lane_of(sibling_id, group)  # the node the launch was first sent to
        latest: Execution | None = None
        attempt = 1
        while (found := await self.executions.get(job_name, attempt_id(group, node, attempt))) is not None:
            latest, attempt = found, attempt + 1
        return latest

    async def _launch_dependent(self, spec: JobSpec, group: int, why: str) -> None:
        """Launch a child as `group`; a `forbid` child still busy records the run as skipped instead."""
        outcome = await self.launcher.launch_now(spec, group=group)  # "no node" is logged and recorded there
        if isinstance(outcome, JobBusy):
            reason = (
                f"skipped: {why}, but the previous execution was still running and the job's concurrency "
                "is forbid"
            )
            await self.launcher.record_outcome(spec, group, None, "skipped", reason)


def _trim_due(recorded: int, keep: int) -> bool:
    """Whether the history is trimmed back to `keep` now (the API shows the newest `keep` meanwhile)."""
    return recorded > keep and (recorded - keep) % trim_every(keep) == 0


def _will_retry(spec: JobSpec, ex: Execution) -> bool:
    """A failed attempt that gets another one (a run that reached no node is not retried)."""
    return not ex.success and ex.attempt <= spec.retries and not ex.id.endswith("-none")


def _over(spec: JobSpec, others: list[Execution | None]) -> bool:
    """Whether every other node's latest attempt is final, with no retry still to come."""
    return all(o is not None and o.finished and not _will_retry(spec, o) for o in others)


def _group_status(ex: Execution, others: list[Execution | None]) -> str:
    """Dkron's group status, judged on each node's latest attempt (a success on retry is a success)."""
    outcomes = [ex.success] + [o is not None and o.finished and o.success for o in others]
    if all(outcomes):
        return "success"
    if not any(outcomes):
        return "failed"
    return "partially_failed"


def _meets(condition: str, status: str) -> bool:
    return condition == "always" or (condition == "success") == (status == "success")


def _with_parent_done(state: JobState, parents: list[str], parent: str, group: int) -> JobState | None:
    used = state.fanin_used or {}
    if group <= used.get(parent, 0):
        return None  # this launch of the parent was consumed by an earlier run of the child
    done = {**(state.fanin or {}), parent: max(group, (state.fanin or {}).get(parent, 0))}
    if not all(p in done for p in parents):
        return msgspec.structs.replace(state, fanin=done)
    return msgspec.structs.replace(
        state,
        fanin={p: g for p, g in done.items() if p not in parents} or None,
        fanin_used={**used, **{p: done[p] for p in parents}},
        fanin_pending=max(done[p] for p in parents),
    )


def _counted(state: JobState, ex: Execution, status: str | None, seq: int) -> JobState | None:
    if seq <= state.applied_seq:
        return None  # already counted before a redelivery
    if ex.status in ("missed", "skipped"):
        return msgspec.structs.replace(state, applied_seq=seq, recorded=state.recorded + 1)
    return msgspec.structs.replace(
        state,
        success_count=state.success_count + ex.success,
        error_count=state.error_count + (not ex.success),
        last_success=later_of(state.last_success, ex.finished_at) if ex.success else state.last_success,
        last_error=state.last_error if ex.success else later_of(state.last_error, ex.finished_at),
        status=status or state.status,
        applied_seq=seq,
        recorded=state.recorded + 1,
    )
