"""Runs the executions the leader sends to this node.

Run requests come from this node's consumer of DKRON_RUNS (pulled by `kv/puller.py`): those for this node
by name and those on the tag subjects its tags match. A request is claimed by creating its execution record
(create-if-absent), then acknowledged, then executed. A repeated request for the same execution finds the
record and is dropped as a duplicate, so no node ever runs the same launch twice; a `value:N` launch has N
lanes, and a node claims at most one of them.

Before that, a request must come from the current leader: its fencing token must be the term of the lease
this agent follows in KV (a deposed leader's older one, or a forged higher one, is refused and changes
nothing), and it must be signed with the key that lease names (`leader/lease.py`).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from dkron_nats.agent.beside import Beside
from dkron_nats.agent.executor import ExecutionContext, OutputBuffer
from dkron_nats.agent.journal import RunJournal
from dkron_nats.agent.processor import Processor
from dkron_nats.agent.registry import ExecutorRegistry, ProcessorRegistry
from dkron_nats.agent.slots import SlotGate
from dkron_nats.events import execution_event
from dkron_nats.failpoints import crash_point
from dkron_nats.http.render import execution_json
from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.kv.executions import ExecutionStore, execution_id, is_lane
from dkron_nats.kv.locks import LOCKED, JobLocks
from dkron_nats.kv.output import OutputPublisher, output_subject
from dkron_nats.kv.publisher import JsPublisher, publish_call
from dkron_nats.kv.puller import Puller
from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.kv.watch import next_entry
from dkron_nats.kv.watch import stop as stop_watch
from dkron_nats.leader.lease import SIGNATURE_HEADER, LeaseRecord, signature_refusal, term_of
from dkron_nats.logformat import about
from dkron_nats.members import Pulse
from dkron_nats.metrics import EXECUTION_SECONDS, EXECUTION_SLOTS, EXECUTIONS_QUEUED, RUNNING
from dkron_nats.models import (
    CancelLaunch,
    Execution,
    ExecutionResult,
    JobSpec,
    RunRequest,
    decode,
    encode,
)
from dkron_nats.names import job_key
from dkron_nats.secrets import StreamRedactor, job_secrets, node_secrets
from dkron_nats.subjects import AGENT_BUSY, AGENT_CANCEL, lease_key, result_subject, run_consumer
from dkron_nats.timefmt import utcnow
from dkron_nats.tracing import extract, inject, traceparent, tracer

logger = logging.getLogger(__name__)
BUSY_OUTPUT_TAIL = 4096
PROCESSOR_DEADLINE = 60.0
"""Seconds one processor may take: the result is published even when a destination hangs."""
CLAIM_GRACE = 5.0
"""How long a stopping agent waits for its claims in progress before it cancels them."""
CLAIMS_AT_ONCE = 256
"""Run requests being claimed at once: claims wait on NATS, so they overlap; more wait in the subscription."""


async def apply_processors(
    execution: Execution,
    configs: Mapping[str, Mapping[str, str]],
    registry: ProcessorRegistry,
    ctx: ExecutionContext,
    deadline: float = PROCESSOR_DEADLINE,
) -> Execution:
    """Run the job's processors in order; a missing or failing one adds a line and the next one runs."""
    for name, config in configs.items():
        processor = registry.get(name)
        if processor is None:
            note = f"processor {name} is not installed on node {ctx.node_name}; skipped"
            logger.warning("job %s: %s", ctx.job_name, note)
            execution = _with_note(execution, note)
            continue
        execution = await _apply_processor(processor, name, execution, config, ctx, deadline)
    return execution


async def _apply_processor(
    processor: Processor,
    name: str,
    execution: Execution,
    config: Mapping[str, str],
    ctx: ExecutionContext,
    deadline: float,
) -> Execution:
    try:
        with anyio.fail_after(deadline):
            processed = await processor.process(execution, config, ctx)
        if not isinstance(processed, Execution):
            raise TypeError(f"it returned {type(processed).__name__}, not an Execution")
    except TimeoutError:
        logger.error("job %s: processor %s took more than %gs", ctx.job_name, name, deadline)
        return _with_note(execution, f"processor {name} failed: no result within {deadline:g}s")
    except Exception as exc:
        # A plugin that raises loses its own effect only: the run and the other processors stand.
        logger.exception("job %s: processor %s failed", ctx.job_name, name)
        return _with_note(execution, f"processor {name} failed: {exc}")
    # What the run was and which record it is are not a processor's to change.
    return msgspec.structs.replace(
        processed,
        id=execution.id,
        job_name=execution.job_name,
        group=execution.group,
        attempt=execution.attempt,
        node_name=execution.node_name,
        fence=execution.fence,
        partition=execution.partition,
        success=execution.success,
        status=execution.status,
    )


def _with_note(execution: Execution, note: str) -> Execution:
    output = execution.output
    if output and not output.endswith("\n"):
        output += "\n"
    return msgspec.structs.replace(execution, output=f"{output}{note}\n")


@dataclass(frozen=True, slots=True)
class LeaderTerm:
    """A partition owner's term, as the lease this agent follows says."""

    term: int
    key: str
    """The owner's public key: its run requests carry its signature."""
    revision: int
    """The lease revision the term was read at: an older entry (a lagging watch) never moves it back."""


NO_TERM = LeaderTerm(0, "", 0)


@dataclass(slots=True)
class Running:
    """An execution in progress; it is the executor's OutputSink: the record's tail and the live copy."""

    execution: Execution
    output: OutputBuffer
    live: OutputPublisher | None = None
    trace: Context | None = None
    """The trace context the run request carried (the leader's dispatch span)."""
    cancel: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    beside: Beside | None = None
    """Tasks that live as long as the execution (the lease renewal, the live output's flusher)."""
    streaming: bool = False
    """The executor runs: its first live output starts the flusher beside it."""
    redactor: StreamRedactor | None = None
    """Masks the job's secrets before the output is kept or published (a secret split across writes too)."""
    holds_slot: bool = False
    """It holds one of the agent's execution slots (taken at the claim, or after waiting for one)."""
    claimed_at: int = 0
    """The revision of its claim: the leader stores the final record over exactly that one."""
    _flushing: bool = False

    @property
    def queued(self) -> bool:
        """Claimed, waiting for a free slot: its executor has not started."""
        return self.execution.started_at is None

    async def write(self, data: bytes) -> None:
        if self.redactor is not None:
            data = self.redactor.feed(data)
        self.output.append(data)
        if self.live is not None:
            await self.live.write(data)
            if self.streaming and not self._flushing and self.beside is not None:
                # Started at the first output, not per execution: most executions print little or nothing.
                self._flushing = True
                self.beside.start_soon(self.live.flush_periodically)

    async def end_output(self) -> None:
        """Write what the redactor held back in case it began a secret: the output has ended."""
        redactor, self.redactor = self.redactor, None
        if redactor is not None and (held := redactor.flush()):
            await self.write(held)


class Agent:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        node: str,
        executions: ExecutionStore,
        executors: ExecutorRegistry,
        shutdown_grace: float = 30.0,
        lease_kv: KeyValue | None = None,
        journal: RunJournal | None = None,
        locks: JobLocks | None = None,
        processors: ProcessorRegistry | None = None,
        env_passthrough: tuple[str, ...] = (),
        publisher: JsPublisher | None = None,
        max_concurrent_executions: int = 0,
        tags: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.nc = nc
        self.js = js
        self.publisher = publisher
        """Pipelined JetStream writes (the result); without one, `js.publish`."""
        self.node = node
        self.executions = executions
        self.executors = executors
        self.shutdown_grace = shutdown_grace
        self.lease_kv = lease_kv
        self.journal = journal
        self.locks = locks
        self.processors = processors or ProcessorRegistry({})
        self.env_passthrough = env_passthrough
        """Names of this process's environment that jobs also get (`--job-env-passthrough`)."""
        self._own_secrets = node_secrets(os.environ)
        """This node's credentials: a job that reads them (from /proc) must not show them."""
        self.terms: dict[str, LeaderTerm] = {}
        """Each partition's current owner, by lease key, from the leases this agent follows."""
        self._lease_read = anyio.Lock()
        self.running: dict[str, Running] = {}
        self.listed = Pulse()
        """Set when `running` grows: the heartbeat lists the new execution soon, not in a few seconds."""
        self._intake = anyio.CancelScope()
        self._claims = anyio.Semaphore(CLAIMS_AT_ONCE, fast_acquire=True)
        """Taken by the intake for each request, given back by its task once the claim is decided."""
        self._claiming: set[anyio.CancelScope] = set()
        """The claims in progress: a stop lets them finish, and cancels those NATS leaves unanswered."""
        self._idle = anyio.Event()
        self.slots = SlotGate(max_concurrent_executions)
        """Executors that may run at once (`--max-concurrent-executions`); claimed runs wait for one."""
        self.puller = Puller(nc, js, RUNS_STREAM, run_consumer(node), self.room)
        self.tags = tags
        """This node's tags of now (a reload may change them)."""
        self._export_gauges()

    def _export_gauges(self) -> None:
        """Read at scrape time, so they are always this instant's figures."""
        RUNNING.set_function(lambda: len(self.running) - self.slots.queued)
        EXECUTION_SLOTS.labels("limit").set_function(lambda: self.slots.limit)
        EXECUTION_SLOTS.labels("used").set_function(lambda: self.slots.used)
        EXECUTIONS_QUEUED.set_function(lambda: self.slots.queued)

    def running_keys(self) -> list[str]:
        """Executions this agent has claimed and not ended (those waiting for a slot too)."""
        return list(self.running)

    async def _follow_lease(self, kv: KeyValue) -> None:
        """Learn each partition owner's term as soon as it is elected, so a deposed one is refused at once."""
        watcher = await with_retry(kv.watchall, attempts=60, what="lease watch")
        try:
            while True:
                entry = await next_entry(watcher, None)
                if entry is not None:
                    self._learn_lease(entry)
        finally:
            with anyio.CancelScope(shield=True):
                await stop_watch(watcher)

    def _learn_lease(self, entry: KeyValue.Entry) -> None:
        # A deleted or expired lease keeps the last term: only a new lease names a new owner.
        revision = int(entry.revision or 0)
        known = self.terms.get(entry.key)
        if entry.operation is None and entry.value and (known is None or revision > known.revision):
            record = decode(entry.value, LeaseRecord)
            self.terms[entry.key] = LeaderTerm(term_of(record, revision), record.key, revision)

    async def _read_lease(self, kv: KeyValue, key: str) -> None:
        try:
            entry = await with_retry(lambda: kv.get(key), attempts=3, what="lease read")
        except (KeyNotFoundError, *TRANSIENT):
            return  # no lease (or no answer): the request is judged on the term known so far
        self._learn_lease(entry)

    async def _term_refusal(self, ex: Execution) -> tuple[str, LeaderTerm]:
        """Why a request of `ex` is not from its partition's current owner ("" if it is), and that owner."""
        key, fence = lease_key(ex.partition), ex.fence
        if fence > self.terms.get(key, NO_TERM).term and self.lease_kv is not None:
            # A new owner's request may outrun the watch: read the lease once before refusing it.
            async with self._lease_read:
                if fence > self.terms.get(key, NO_TERM).term:
                    await self._read_lease(self.lease_kv, key)
        owner = self.terms.get(key, NO_TERM)
        if fence == owner.term:
            return "", owner
        if fence < owner.term:
            return f"stale leader: fence {fence} is older than the current term {owner.term}", owner
        return f"fence {fence} is not the current leader's term ({owner.term})", owner

    def stop(self) -> None:
        """Stop taking run requests; `run` then drains the running executions and returns."""
        self._intake.cancel()

    def room(self) -> int:
        """How many more run requests this agent takes now: up to its free execution slots (less those
        being claimed), else up to the claims it makes at once."""
        claiming = CLAIMS_AT_ONCE - int(self._claims.value)
        if self.slots.limit:
            return max(0, self.slots.limit - self.slots.used - self.slots.queued - claiming)
        return CLAIMS_AT_ONCE - claiming

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        busy = await self.nc.subscribe(AGENT_BUSY)
        cancels = await self.nc.subscribe(AGENT_CANCEL)
        async with anyio.create_task_group() as work:
            with self._intake:
                async with anyio.create_task_group() as intake:
                    intake.start_soon(self._serve_busy, busy)
                    intake.start_soon(self._serve_cancels, cancels)
                    if self.lease_kv is not None:
                        intake.start_soon(self._follow_lease, self.lease_kv)
                    task_status.started()

                    async def take(msg: Msg) -> None:
                        # One task per request, from its claim to its result; the claims are bounded.
                        await self._claims.acquire()
                        work.start_soon(self._take, msg, work)

                    await self.puller.run(take)
            with anyio.CancelScope(shield=True):
                await busy.unsubscribe()
                await cancels.unsubscribe()
            await self._settle_claims()
            await self._drain()
            with anyio.CancelScope(shield=True):
                await self.executors.aclose()
                await self.processors.aclose()

    async def _drain(self) -> None:
        """End the executions still waiting for a slot at once (none may start now); give the running ones
        the shutdown grace, then cancel them. Their results say why."""
        self._cancel_each(b"execution cancelled: the agent is shutting down before a slot came free\n", True)
        if not self.running:
            return
        logger.info("waiting up to %gs for %d running executions", self.shutdown_grace, len(self.running))
        with anyio.move_on_after(self.shutdown_grace):
            await self._idle.wait()
        self._cancel_each(b"\nexecution cancelled: the agent is shutting down\n", False)

    def _cancel_each(self, note: bytes, queued: bool) -> None:
        """Cancel the executions waiting for a slot (`queued`) or the others, adding `note` to the output."""
        for running in self.running.values():
            if running.queued == queued and not running.cancel.cancel_called:
                running.output.append(note)
                running.cancel.cancel()

    async def _settle_claims(self) -> None:
        """Let the claims in progress finish, so that each claimed run runs (within the shutdown grace).
        Cancelled, a claim already written stood with no run behind it, and the run was ruled lost a while
        later: "failed" for a slot that should have run. Only claims NATS leaves unanswered are cancelled."""
        with anyio.move_on_after(CLAIM_GRACE):
            await self._claims_decided()
            return
        for claim in self._claiming:
            claim.cancel()
        await self._claims_decided()

    async def _claims_decided(self) -> None:
        """Wait until no claim is in progress (a stop cancelled them): every claimed run is in `running`."""
        for _ in range(CLAIMS_AT_ONCE):
            await self._claims.acquire()
        for _ in range(CLAIMS_AT_ONCE):
            self._claims.release()

    async def _take(self, msg: Msg, work: TaskGroup) -> None:
        """Claim a run request, acknowledge it and run it, all in this one task."""
        try:
            accepted = await self._accept_unless_stopped(msg, work)
        finally:
            self._claims.release()
        if accepted is not None:
            request, running = accepted
            siblings = [i for i in request.siblings if i != running.execution.id]
            await self._execute(request.job, running, siblings, request.env)
        with anyio.CancelScope(shield=True):
            await self.puller.top_up()  # room again (a claim decided, a slot free): ask for more

    async def _accept_unless_stopped(self, msg: Msg, work: TaskGroup) -> tuple[RunRequest, Running] | None:
        """The request and its registered execution if it was claimed; a stop cancels the claim."""
        if self._intake.cancel_called:
            return None  # stopped before this request's turn came: it is not taken
        claim = anyio.CancelScope()
        self._claiming.add(claim)
        try:
            with claim:
                return await self._accept(msg, work)
        except Exception:
            # One request must never end the node (NATS gone mid-claim, a refusal that cannot be sent): the
            # leader's dispatch timeout or its lost-agent check settles that execution.
            logger.exception("could not take a run request on %s", self.node)
        finally:
            self._claiming.discard(claim)
        return None

    async def _accept(self, msg: Msg, work: TaskGroup) -> tuple[RunRequest, Running] | None:
        """Claim the request's execution here; acknowledge the request once that is decided either way (a
        request is not acknowledged when NATS fails mid-claim: it comes again)."""
        try:
            request = decode(msg.data, RunRequest)
        except msgspec.DecodeError as exc:
            logger.warning("dropped an undecodable run request: %s", exc)
            await msg.term()
            return None
        error, owner = await self._term_refusal(request.execution)
        if not error:
            signature = (msg.headers or {}).get(SIGNATURE_HEADER)
            error = signature_refusal(owner.key, msg.data, signature)
        if error:
            ex = request.execution
            logger.warning("refused a run request for %s/%s: %s", ex.job_name, ex.id or ex.group, error)
            await msg.term()
            return None
        holds_slot = self.slots.try_acquire()  # else the run waits for a slot once claimed: it never fails
        claimed: tuple[Execution, int] | None = None
        try:
            claimed = await self._claim(request, msg, holds_slot)
        finally:
            if holds_slot and claimed is None:
                self.slots.release()  # nothing runs here for a duplicate (or a claim that failed)
        if claimed is not None:
            crash_point("run-claimed")  # claimed, not acknowledged: the request comes back to the next one
        await _acknowledge(msg)
        if claimed is None:
            return None
        execution, revision = claimed
        live = OutputPublisher(self.nc, self.js, output_subject(execution.job_name, execution.id))
        redactor = StreamRedactor(job_secrets(request.job, request.env) | self._own_secrets)
        running = Running(
            execution,
            OutputBuffer(),
            live,
            extract(msg.headers),
            beside=Beside(work),
            redactor=redactor,
            holds_slot=holds_slot,
            claimed_at=revision,
        )
        # Registered with no await before this task runs it: every entry of `running` has its task.
        self.running[ExecutionStore.key(execution.job_name, execution.id)] = running
        self.listed.now()
        return request, running

    async def _claim(self, request: RunRequest, msg: Msg, holds_slot: bool) -> tuple[Execution, int] | None:
        """The execution this node claimed for the request and its revision; None if it is not this node's
        (another node's, a duplicate, every lane taken)."""
        ex = request.execution
        if not request.targets:  # sent to this node by name
            return await self._claim_id(ex, ex.id, holds_slot)
        if not is_lane(request.targets[0]):
            if self.node not in request.targets:
                return None  # on a tag subject this node matches, but the leader chose other nodes
            return await self._claim_id(ex, execution_id(ex.group, self.node), holds_slot)
        if not request.job.runs_on(self.tags()):
            return None  # a consumer of every tag subject (a node with very many tags) sees others' lanes
        if (_redelivered(msg) or request.resent) and await self._holds_a_lane(ex, request.targets):
            return None  # this node (or its previous process) claimed a lane of this launch already
        # Start at a lane of our own so that the nodes of a launch rarely try the same one.
        start = zlib.crc32(self.node.encode()) % len(request.targets)
        for lane in request.targets[start:] + request.targets[:start]:
            if (found := await self._claim_id(ex, execution_id(ex.group, lane), holds_slot)) is not None:
                return found
        return None

    async def _holds_a_lane(self, ex: Execution, lanes: list[str]) -> bool:
        for lane in lanes:
            found = await self.executions.get(ex.job_name, execution_id(ex.group, lane))
            if found is not None and found.node_name == self.node:
                return True
        return False

    async def _claim_id(
        self, template: Execution, exec_id: str, holds_slot: bool
    ) -> tuple[Execution, int] | None:
        execution = msgspec.structs.replace(
            template,
            id=exec_id,
            node_name=self.node,
            started_at=utcnow() if holds_slot else None,  # None: queued, its record shows it has not started
            status="running",
        )
        key = ExecutionStore.key(execution.job_name, execution.id)
        if self.journal is not None:
            self.journal.add(key)  # before the claim: a crash right after it must not go unnoticed
        claimed = await self.executions.claim(execution)
        if claimed is None:
            if self.journal is not None:
                self.journal.remove(key)
            return None
        return execution, claimed

    async def _execute(
        self, job: JobSpec, running: Running, siblings: list[str], env: dict[str, str]
    ) -> None:
        ex = running.execution
        attributes = {"dkron.job": job.name, "dkron.execution": ex.id, "dkron.node": self.node}
        with (
            about(job=job.name, execution=ex.id),
            tracer().start_as_current_span(
                "execute", context=running.trace, kind=SpanKind.CONSUMER, attributes=attributes
            ),
        ):
            await self._execute_traced(job, running, siblings, env)

    async def _execute_traced(
        self, job: JobSpec, running: Running, siblings: list[str], env: dict[str, str]
    ) -> None:
        ex = running.execution
        success, error = False, ""
        try:
            with running.cancel:
                if self.locks is not None and job.concurrency in LOCKED and running.beside is not None:
                    running.beside.start_soon(self._keep_lease, self.locks, ex)  # held while queued too
                await self._start(running)
                running.streaming = True  # the live output's flusher starts at its first write
                try:
                    success, error = await self._run_executor(job, running, env)
                finally:
                    running.streaming = False  # later output (the error line) is flushed at close
            if running.cancel.cancelled_caught:
                error = "cancelled"
        finally:
            if running.beside is not None:
                await running.beside.stop()  # before the slot and the result, as a task group's end was
            if running.holds_slot:  # the next queued execution starts while this one reports
                running.holds_slot = False
                self.slots.release()
            ex = running.execution  # with its real start
            with anyio.CancelScope(shield=True):
                key = ExecutionStore.key(ex.job_name, ex.id)
                try:
                    await self._report(running, success, error, siblings, job)
                    if self.journal is not None:
                        self.journal.remove(key)
                except Exception:
                    # Isolate this execution: the agent goes on; the leader's lost-agent check (or this
                    # node's next process, from the journal) ends it.
                    logger.exception("could not report the result of %s/%s", ex.job_name, ex.id)
                if running.live is not None:
                    await running.live.close()  # after the result, so a reader at the end finds it
                del self.running[key]
                if not self.running:
                    self._idle.set()
                    self._idle = anyio.Event()

    async def _start(self, running: Running) -> None:
        """Wait for a free slot if the execution has none (a cancel ends the wait), then announce it."""
        if not running.holds_slot:
            await self.slots.acquire()
            running.holds_slot = True  # released by the caller, whatever happens next
            await anyio.lowlevel.checkpoint_if_cancelled()  # handed a slot as it was cancelled: no start
            running.execution = msgspec.structs.replace(running.execution, started_at=utcnow())
        ex = running.execution
        try:
            await self.nc.publish(*execution_event("started", execution_json(ex)))
        except NatsError as exc:
            logger.warning("no started event for %s/%s: %s", ex.job_name, ex.id, exc)

    async def _run_executor(self, job: JobSpec, running: Running, env: dict[str, str]) -> tuple[bool, str]:
        ex = running.execution
        executor = self.executors.get(job.executor)
        if executor is None:
            return False, f"Specified executor is not present: {job.executor or '(none)'}"
        started, success, error = time.monotonic(), False, ""
        try:
            ctx = self._context(job, ex, env)
            result = await executor.execute(job.executor_config or {}, ctx, running)
            success, error = result.success, result.error
        except Exception as exc:
            # A plugin that raises fails its execution, never the agent.
            logger.exception("executor %s raised while running %s", job.executor, job.name)
            error = f"executor {job.executor} failed: {exc}"
        finally:  # a cancelled execution counts as a failure
            outcome = "success" if success else "failure"
            EXECUTION_SECONDS.labels(job.executor, outcome).observe(time.monotonic() - started)
        return success, error

    def _context(self, job: JobSpec, ex: Execution, env: dict[str, str] | None = None) -> ExecutionContext:
        current = traceparent()  # the job can continue the trace
        extra = {**(env or {}), **({"TRACEPARENT": current} if current else {})}
        return ExecutionContext(
            job_name=job.name,
            execution_id=ex.id,
            node_name=self.node,
            attempt=ex.attempt,
            scheduled_at=ex.scheduled_at,
            env=extra,
            job=job,
            nc=self.nc,
            env_passthrough=self.env_passthrough,
        )

    async def _report(
        self, running: Running, success: bool, error: str, siblings: list[str], job: JobSpec
    ) -> None:
        ex, output = running.execution, running.output
        if error:
            await running.write(f"\n{error}\n".encode() if output.text() else f"{error}\n".encode())
        await running.end_output()
        done = msgspec.structs.replace(
            ex,
            finished_at=utcnow(),
            success=success,
            output=output.text(),
            status="success" if success else "failed",
        )
        if job.processors:
            done = await self._process(job, done)
        await self._publish(ExecutionResult(execution=done, siblings=siblings, claimed_at=running.claimed_at))

    async def _process(self, job: JobSpec, done: Execution) -> Execution:
        """Apply the job's processors here, on the node that ran it (Dkron applies them on the leader)."""
        with tracer().start_as_current_span("processors", attributes={"dkron.job": job.name}):
            return await apply_processors(
                done, job.processors or {}, self.processors, self._context(job, done)
            )

    async def _publish(self, result: ExecutionResult) -> None:
        payload = encode(result)
        headers = {**inject({}), "Nats-Msg-Id": result.msg_id}  # the leader records it in the same trace
        subject = result_subject(self.node, result.execution.partition)  # to the owner that launched it
        send = publish_call(self.publisher, self.js, subject, payload, headers)
        await with_retry(send, attempts=30, what="result publish")

    async def conclude_previous_process(self, keys: list[str]) -> None:
        """End what this node's previous process was running when it died: it can never report it.

        `keys` come from the run journal and the registry record that process left behind, read before
        this process took any run request; a graceful stop leaves none.
        """
        for key in keys:
            found = await self.executions.typed.get(key)
            if found is not None and not found[0].finished and found[0].node_name == self.node:
                logger.warning("execution %s was left running by this node's previous process", key)
                verdict = found[0].lost("restarted", utcnow())
                await self._publish(msgspec.structs.replace(verdict, claimed_at=found[1]))
            if self.journal is not None:
                self.journal.remove(key)

    async def _keep_lease(self, locks: JobLocks, ex: Execution) -> None:
        """Renew the job's concurrency lease while this execution runs (it expires if the agent dies)."""
        key = job_key(ex.job_name)
        while True:
            await anyio.sleep(locks.ttl / 3)
            try:
                await locks.renew(key, ex.job_name, ex.group)
            except TRANSIENT:
                logger.warning("could not renew the concurrency lease of %s (NATS unavailable)", ex.job_name)

    async def _serve_cancels(self, sub: object) -> None:
        async for msg in sub.messages:  # type: ignore[attr-defined]
            try:
                cancel = decode(msg.data, CancelLaunch)
            except msgspec.DecodeError:
                logger.warning("ignoring an undecodable cancel request")
                continue
            for running in list(self.running.values()):
                ex = running.execution
                if ex.job_name == cancel.job and ex.group == cancel.group:
                    if cancel.execution and cancel.execution != ex.id:
                        continue
                    await running.write(f"\n{cancel.reason}\n".encode())
                    running.cancel.cancel()

    async def _serve_busy(self, sub: object) -> None:
        async for msg in sub.messages:  # type: ignore[attr-defined]
            busy = []
            for running in self.running.values():
                tail = running.output.text()[-BUSY_OUTPUT_TAIL:]
                busy.append(msgspec.structs.replace(running.execution, output=tail))
            await msg.respond(encode(busy))


def _redelivered(msg: Msg) -> bool:
    try:
        return msg.metadata.num_delivered > 1
    except ValueError:  # not a JetStream message
        return False


async def _acknowledge(msg: Msg) -> None:
    try:
        await msg.ack()
    except NatsError as exc:
        # The claim stands either way: a request that comes again finds it and is dropped.
        logger.warning("could not acknowledge a run request: %s", exc)
