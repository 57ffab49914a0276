"""The leader's scheduling loop.

For every job the scheduler keeps the last resolved slot (the launch cursor). When a job is due it resolves
every slot since the cursor: the latest one is launched if it is within the starting deadline, every older
one is recorded as missed. The new cursor is appended to the decision log (leader/decisions.py) *before* the
run request is sent, so a slot is never launched twice, whoever is leader, across any restart; the log's
compare-and-set chain refuses the decisions of a leader that was deposed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from nats.errors import Error as NatsError

from dkron_nats.durations import parse_duration
from dkron_nats.errors import LeadershipLostError
from dkron_nats.failpoints import outage_point
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.executions import execution_id
from dkron_nats.kv.locks import LOCKED
from dkron_nats.leader.decisions import DecisionLog
from dkron_nats.leader.launcher import Launcher, attempt_id
from dkron_nats.misfire import MisfireRule
from dkron_nats.models import JobSpec, LaunchCursor
from dkron_nats.names import job_key
from dkron_nats.nextfire import job_schedule
from dkron_nats.schedule import Schedule, ScheduleError
from dkron_nats.timefmt import from_ns, to_ns, utcnow
from dkron_nats.tracing import tracer

logger = logging.getLogger(__name__)
_EPSILON = timedelta(microseconds=1)
RECENT_LAUNCH_WINDOW = timedelta(minutes=10)
"""Launches younger than this are checked for a missing dispatch when a leader takes over."""
BLOCKED_RECHECK = timedelta(seconds=1)
"""How often a `forbid` job blocked by its previous launch looks again whether it has ended."""
MISSED_RECORD_LIMIT = 100
"""Missed slots recorded one by one per catch-up; earlier ones are summarised in one record."""
MAX_WAITING_RUNS = 1024
"""Launches under way beyond which nothing more is decided (run requests waiting in DKRON_RUNS for their
agents, results waiting in DKRON_RESULTS for the leader): an overloaded cluster's due slots stay in the timer
heap and the misfire policy settles them, instead of a queue (and lateness) that grows without bound."""
RUN_QUEUE_POLL = 0.1
"""How often a scheduler that is launching looks at the launches under way."""
IDLE_RUN_QUEUE_POLL = 1.0
"""How often one that launched nothing for a while does (a server may schedule 16 partitions: each poll is two
JetStream requests)."""
BUSY_FOR = 2.0
"""A scheduler that launched within this many seconds polls at RUN_QUEUE_POLL."""
FIRST_LOOK = 0.1
"""How long a new owner waits for its first look at the run queue before deciding (it looks again soon)."""


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    starting_deadline: timedelta = timedelta(seconds=60)
    max_parallel: int = 256


@dataclass(slots=True)
class _Plan:
    spec: JobSpec
    schedule: Schedule
    rule: MisfireRule
    generation: int
    blocked: bool = False
    """A `forbid` job whose previous launch still runs: its due slots wait, re-checked every second."""


class Scheduler:
    def __init__(
        self,
        jobs: KVCache[JobSpec],
        log: DecisionLog,
        launcher: Launcher,
        settings: SchedulerSettings,
        clock: Callable[[], datetime] = utcnow,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.jobs = jobs
        self.log = log
        self.launcher = launcher
        self.settings = settings
        self.clock = clock
        self.paused = paused
        self._plans: dict[str, _Plan] = {}
        self._heap: list[tuple[int, int, str, int]] = []
        self._seq = itertools.count()
        self._generations = itertools.count(1)
        self._wake = anyio.Event()
        self._limiter = anyio.CapacityLimiter(settings.max_parallel)
        """Resolutions and takeover conclusions under way. A due job leaves the heap only with a token, so
        an overloaded leader keeps its backlog in the heap (one entry per job), not as one task per job."""
        self._queue_full = False
        self._admitted_at = 0.0
        """When a due job was last admitted (monotonic): the run queue is watched closely while launching."""
        """MAX_WAITING_RUNS launches are under way: decide nothing until they drop."""

    # -- planning ---------------------------------------------------------------------------

    def next_fire(self, key: str) -> datetime | None:
        """When the job fires next, as planned by this leader."""
        plan = self._plans.get(key)
        if plan is None:
            return None
        return plan.schedule.next_after(self._base(key, plan))

    def _base(self, key: str, plan: _Plan) -> datetime:
        """Slots at or before this instant are resolved (or were never due)."""
        spec = plan.spec
        base = (spec.anchor or self.clock()) - _EPSILON  # a fire at the anchor itself counts (`@after`)
        cursor = self.log.cursors.get(key)
        if cursor is not None:
            base = max(base, from_ns(cursor.slot_ns))
        if spec.starts_at is not None:
            base = max(base, spec.starts_at - _EPSILON)
        return base

    def _plan(self, key: str, spec: JobSpec | None) -> None:
        self._plans.pop(key, None)
        if spec is None or spec.disabled or spec.parent_job or not spec.schedule:
            return
        if not self.launcher.partition.owns(key):
            return  # another partition's owner schedules it
        try:
            schedule = job_schedule(spec, self.clock())
        except (ScheduleError, ValueError):
            logger.exception("job %s has an invalid schedule; it is not scheduled", spec.name)
            return
        if schedule.is_manual:
            return
        plan = _Plan(spec, schedule, self._rule(spec), next(self._generations))
        self._plans[key] = plan
        self._push(key, plan)

    def _rule(self, spec: JobSpec) -> MisfireRule:
        deadline = self.settings.starting_deadline
        if spec.starting_deadline:
            deadline = parse_duration(spec.starting_deadline)  # validated when the job was saved
        return MisfireRule(spec.misfire_policy, deadline, spec.misfire_max)

    def _push(self, key: str, plan: _Plan) -> None:
        if plan.blocked:
            fire: datetime | None = self.clock() + BLOCKED_RECHECK
        else:
            fire = plan.schedule.next_after(self._base(key, plan))
        if fire is None or (plan.spec.expires_at is not None and fire > plan.spec.expires_at):
            return
        self._push_at(to_ns(fire), key, plan)

    def _push_at(self, fire_ns: int, key: str, plan: _Plan) -> None:
        heapq.heappush(self._heap, (fire_ns, next(self._seq), key, plan.generation))
        if self._heap[0][2] == key:
            self._wake.set()  # the loop may be asleep until a later fire, or for an hour

    def _on_job_change(self, key: str, spec: JobSpec | None) -> None:
        self._plan(key, spec)
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            self.log.close()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        # Reads every decision an earlier leader made and fences it off: none of its appends lands after this.
        await self.log.open(self.launcher.fence())
        interrupted = self._recent_launches()
        for key, spec in list(self.jobs.items()):
            self._plan(key, spec)
        unlisten = self.jobs.listen(self._on_job_change)
        logger.info("scheduler started with %d scheduled jobs", len(self._plans))
        try:
            # Resolutions run concurrently (bounded by the limiter): a slow dispatch must not make the
            # next due job late. A job's next slot is queued only once its current one is resolved.
            # Not longer: right after a server's death the run queue's raft leader may be electing, and
            # the due slots come first (a one-second wait here made the chaos run's slowest takeovers).
            with anyio.move_on_after(FIRST_LOOK):
                await self._look_at_run_queue()
            async with anyio.create_task_group() as resolving:
                await resolving.start(self.log.run)
                task_status.started()
                # In the background: right after a NATS node loss a read can wait seconds for a stream
                # to elect its leader, and the slots falling due now must not wait for that. Conclusions
                # touch only the old cursors' slots, which the loop below never decides again.
                resolving.start_soon(self._conclude_interrupted_launches, interrupted)
                resolving.start_soon(self._resend_queued_runs)
                resolving.start_soon(self._follow_run_queue)
                while True:
                    if self.paused():  # due slots wait; on resume the misfire policy decides
                        await self._sleep_until_next(paused=True)
                        continue
                    self._admit_due(resolving)
                    await self._sleep_until_next()
        finally:
            unlisten()

    def _recent_launches(self) -> list[tuple[JobSpec, LaunchCursor]]:
        """The cursors a previous leader wrote in the last few minutes, as found at takeover."""
        horizon = to_ns(self.clock() - RECENT_LAUNCH_WINDOW)
        found = []
        for key, cursor in self.log.cursors.items():
            spec = self.jobs.get(key)
            if spec is not None and cursor.slot_ns >= horizon:
                found.append((spec, cursor))
        return found

    async def _conclude_interrupted_launches(self, launches: list[tuple[JobSpec, LaunchCursor]]) -> None:
        """A previous leader may have moved a cursor and died before acting on it: finish what is missing.

        Run requests carry the same execution ids (agents claim an id once) and missing records are
        published only if absent, so concluding twice does nothing twice.
        """
        async with anyio.create_task_group() as tg:
            for spec, cursor in launches:
                tg.start_soon(self._conclude, spec, cursor)

    async def _resend_queued_runs(self) -> None:
        """Run requests an earlier leader published that are still queued, unclaimed, go out again under
        this leader's term (agents refuse them otherwise, and the log keeps only each job's last decision)."""
        try:
            resent = await self.launcher.resend_queued_runs(lambda name: self.jobs.get(job_key(name)))
        except NatsError as exc:
            logger.warning("could not read the run queue at takeover: %s", exc)
            return
        if resent:
            logger.info("re-sent %d run requests an earlier leader left queued", resent)

    async def _conclude(self, spec: JobSpec, cursor: LaunchCursor) -> None:
        borrower = object()
        await self._limiter.acquire_on_behalf_of(borrower)
        try:
            await self._act_on(spec, cursor, only_missing=True)
        finally:
            self._release(borrower)

    async def _dispatch_missing(self, spec: JobSpec, cursor: LaunchCursor) -> None:
        missing = []
        for node in cursor.targets:
            found = await self.launcher.executions.get_with_revision(
                spec.name, attempt_id(cursor.group, node, 1)
            )
            if found is None:
                missing.append(node)
            elif not found[0].finished:
                await self.launcher.fail_if_agent_lost(*found)
        if missing:
            logger.info("re-sending the interrupted launch of %s to %s", spec.name, ", ".join(missing))
            await self.launcher.dispatch(spec, cursor.group, from_ns(cursor.slot_ns), missing)

    def _room(self) -> int:
        """Free tokens not promised to a waiting conclusion; none while the agents' queue is full."""
        if self._queue_full or self._limiter.statistics().tasks_waiting:
            return 0
        return int(self._limiter.available_tokens)

    async def _follow_run_queue(self) -> None:
        """Hold decisions back while MAX_WAITING_RUNS launches are under way; go on when they drop."""
        while True:
            busy = self._queue_full or time.monotonic() - self._admitted_at < BUSY_FOR
            await anyio.sleep(RUN_QUEUE_POLL if busy else IDLE_RUN_QUEUE_POLL)
            await self._look_at_run_queue()

    async def _look_at_run_queue(self) -> None:
        try:
            waiting = await self.launcher.runs_waiting()
        except NatsError as exc:  # unavailable, or no stream (not our NATS): look again later
            logger.debug("could not read the run queue: %s", exc)
            return
        was_full, self._queue_full = self._queue_full, waiting >= MAX_WAITING_RUNS
        if was_full and not self._queue_full:
            self._wake.set()

    def _admit_due(self, resolving: TaskGroup) -> None:
        """Start resolving the earliest due jobs, as many as there is room for."""
        due = self._pop_due(self._room())
        if due:
            self._admitted_at = time.monotonic()
        for key in due:
            borrower = object()
            self._limiter.acquire_on_behalf_of_nowait(borrower)
            resolving.start_soon(self._resolve_guarded, key, borrower)

    def _release(self, borrower: object) -> None:
        self._limiter.release_on_behalf_of(borrower)
        if self._room() == 1:
            self._wake.set()  # the loop may be waiting for room: there is some again

    def _pop_due(self, limit: int) -> list[str]:
        now_ns = to_ns(self.clock())
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now_ns and len(due) < limit:
            _, _, key, generation = heapq.heappop(self._heap)
            plan = self._plans.get(key)
            if plan is not None and plan.generation == generation:
                due.append(key)
        return due

    def wake(self) -> None:
        """Look at the due jobs again now (a job or the scheduling pause changed)."""
        self._wake.set()

    async def _sleep_until_next(self, paused: bool = False) -> None:
        self._wake = anyio.Event()
        delay = 3600.0  # woken by a job change, the pause flag or room for a due job
        if self._heap and not paused and self._room():
            delay = max(0.0, (self._heap[0][0] - to_ns(self.clock())) / 1e9)
        with anyio.move_on_after(delay):
            await self._wake.wait()

    async def _resolve_guarded(self, key: str, borrower: object) -> None:
        """Resolve an admitted due job, holding the token it was admitted with."""
        try:
            plan = self._plans.get(key)
            if plan is None:
                return
            try:
                await self._resolve(key, plan)
            except Exception as exc:
                if isinstance(exc, LeadershipLostError):  # no fault: the session is about to be stopped
                    logger.info("%s: not deciding its due slots, %s", plan.spec.name, exc)
                else:
                    logger.exception("resolving the due slots of %s failed; retrying in 1s", plan.spec.name)
                self._push_at(to_ns(self.clock()) + 1_000_000_000, key, plan)
                return
            if self._plans.get(key) is plan:
                self._push(key, plan)
        finally:
            self._release(borrower)

    async def _resolve(self, key: str, plan: _Plan) -> None:
        """Decide every due slot, append the decision to the log, then act on it."""
        self.launcher.ensure_leader()
        cursor = self._decide(key, plan)
        if cursor is None:
            return
        outage_point("decision-unrecorded")  # as a lock read or the decision log failing past its retries
        held = await self._held_by_another(key, plan.spec, cursor)
        if held is not None and plan.spec.concurrency == "forbid":
            plan.blocked = True  # decided once the previous launch ends, by the misfire policy
            return
        if held is not None:
            cursor = msgspec.structs.replace(cursor, replaces=held)
        # One trace per launch starts here: the tick, the launch record, then the dispatch.
        attributes = {"dkron.job": plan.spec.name, "dkron.launch": str(cursor.group)}
        with tracer().start_as_current_span("schedule", attributes=attributes):
            with tracer().start_as_current_span("launch record"):
                await self.log.record(key, cursor)  # shared with the other decisions of this instant
            plan.blocked = False
            await self._carry_out(plan.spec, cursor)

    async def _carry_out(self, spec: JobSpec, cursor: LaunchCursor) -> None:
        """Act on a recorded decision until it is done, however long NATS stays unavailable. Deciding the
        job again instead would move its cursor past this launch, the only trace a successor could conclude
        it from, and the slot would be neither run nor recorded. Only a lost lease ends the tries: the
        cursor is then the job's last, and the next leader concludes it."""
        only_missing = False
        while True:
            try:
                await self._act_on(spec, cursor, only_missing)
                return
            except LeadershipLostError:
                raise
            except Exception:
                logger.exception("carrying out the decision on %s failed; trying again in 1s", spec.name)
            await anyio.sleep(1.0)
            self.launcher.ensure_leader()
            only_missing = True  # what went out already is not sent or recorded twice

    def _decide(self, key: str, plan: _Plan) -> LaunchCursor | None:
        """The cursor that resolves every slot due since the current one; None if nothing is due."""
        now = self.clock()
        spec = plan.spec
        slots = plan.schedule.fires_between(self._base(key, plan), now, MISSED_RECORD_LIMIT + 1)
        if spec.expires_at is not None:
            slots = [s for s in slots if s <= spec.expires_at]
        if not slots:
            return None
        to_launch = plan.rule.to_launch(slots, now)
        # run_all launches one slot per decision, oldest first; the next one is resolved right after.
        slot = to_launch[0] if to_launch else slots[-1]
        cursor = LaunchCursor(
            slot_ns=to_ns(slot),
            group=to_ns(slot),
            fence=self.launcher.fence(),
            missed=[to_ns(s) for s in slots if s < slot],
            earlier_missed=len(slots) > MISSED_RECORD_LIMIT,
            decided_ns=to_ns(now),
            missed_status="skipped" if plan.blocked else "missed",
        )
        if not to_launch:
            cursor = msgspec.structs.replace(
                cursor, outcome="missed", missed=[*cursor.missed, cursor.slot_ns]
            )
        else:
            targets = self.launcher.targets(spec)
            if isinstance(targets, str):
                cursor = msgspec.structs.replace(cursor, outcome="failed", reason=targets)
            else:
                cursor = msgspec.structs.replace(cursor, targets=targets)
        return cursor

    async def _held_by_another(self, key: str, spec: JobSpec, cursor: LaunchCursor) -> int | None:
        """For a `forbid` or `replace` job about to launch: the other launch holding its lease."""
        if cursor.outcome != "launched" or spec.concurrency not in LOCKED:
            return None
        held = await self.launcher.locks.holder(key)
        return None if held == cursor.group else held

    async def _act_on(self, spec: JobSpec, cursor: LaunchCursor, only_missing: bool = False) -> None:
        """Publish the records a cursor implies and send its run requests.

        `only_missing` (at takeover): skip records that exist already, so nothing is counted twice.
        The launch goes first: right after a NATS node loss, publishing the records of missed slots can
        wait for the results stream to elect a leader, and the run must not wait behind them.
        """
        if cursor.outcome in ("skipped", "failed"):
            await self._record(spec, cursor.slot_ns, cursor.outcome, cursor.reason, only_missing)
        elif cursor.outcome == "launched" and not await self.launcher.hold(
            spec, cursor.group, cursor.replaces or None
        ):
            # Another launch took the lease after the decision (a manual run in between).
            reason = "skipped: another execution of the job started first and its concurrency is forbid"
            await self._record(spec, cursor.slot_ns, "skipped", reason, only_missing)
        elif cursor.outcome == "launched" and only_missing:
            await self._dispatch_missing(spec, cursor)
        elif cursor.outcome == "launched":
            await self.launcher.dispatch(spec, cursor.group, from_ns(cursor.slot_ns), cursor.targets)
        if cursor.missed:
            await self._record_missed(spec, cursor, only_missing)

    async def _record_missed(self, spec: JobSpec, cursor: LaunchCursor, only_missing: bool) -> None:
        rule = self._rule(spec)
        decided = from_ns(cursor.decided_ns) if cursor.decided_ns else None
        for i, slot_ns in enumerate(cursor.missed):
            slot = from_ns(slot_ns)
            reason = rule.why_missed(slot, decided or slot + rule.starting_deadline + _EPSILON)
            if cursor.missed_status == "skipped":
                reason = (
                    "skipped: the previous execution was still running and the job's concurrency is forbid "
                    f"(then the misfire_policy {rule.policy} decided: {reason.removeprefix('missed: ')})"
                )
            if cursor.earlier_missed and i == 0:
                reason += "; earlier slots were missed too and are not listed one by one"
            await self._record(spec, slot_ns, cursor.missed_status, reason, only_missing)

    async def _record(
        self, spec: JobSpec, slot_ns: int, status: str, reason: str, only_missing: bool
    ) -> None:
        if only_missing:
            exec_id = execution_id(slot_ns, status if status in ("missed", "skipped") else "none")
            if await self.launcher.executions.get(spec.name, exec_id) is not None:
                return
        await self.launcher.record_outcome(spec, slot_ns, from_ns(slot_ns), status, reason)
