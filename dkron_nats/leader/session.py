"""Everything a server does while it owns one partition of the job space, started and stopped as one unit.

The owner of partition 0 is "the leader" of Dkron's API and also does the cluster-wide chores: it makes
the agents' consumers of run requests, moves raft leaders off its own embedded nats-server and keeps the
partitions balanced over the servers by their jobs (balance.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from dkron_nats.jobs import JobService
from dkron_nats.leader.balance import Planner
from dkron_nats.leader.launcher import JobBusy, Launcher
from dkron_nats.leader.placement import RaftLeadersElsewhere
from dkron_nats.leader.results import ResultProcessor
from dkron_nats.leader.scheduler import Scheduler
from dkron_nats.leader.watchdog import AgentWatchdog
from dkron_nats.names import job_key
from dkron_nats.parameters import run_env_error
from dkron_nats.triggers import Trigger, consume_triggers

logger = logging.getLogger(__name__)


class RunNow(msgspec.Struct, kw_only=True):
    job: str
    force: bool = False
    """Run even if the job's concurrency is forbid and a previous launch still runs."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """Values of the job's parameters for this run (checked by the API, again here: the job may change)."""


class RunNowReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    ok: bool
    error: str = ""
    not_found: bool = False
    busy: bool = False
    targets: list[str] = msgspec.field(default_factory=list)
    executions: list[str] = msgspec.field(default_factory=list)
    """The ids of the launch's executions, one per target."""


@dataclass(slots=True)
class LeaderSession:
    nc: Client
    jobs: JobService
    launcher: Launcher
    scheduler: Scheduler
    results: ResultProcessor
    watchdog: AgentWatchdog
    placement: RaftLeadersElsewhere | None = None
    """With an embedded nats-server, which dies with this process: its raft leaders move to the peers."""
    planner: Planner | None = None
    """Of a cluster of several partitions: balances them over the servers by their jobs."""
    chores: bool = True
    """The cluster-wide chores are this session's (partition 0's)."""

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            if self.chores and self.launcher.consumers is not None:
                # Before the scheduler: a node is a target only once its consumer of run requests is ready.
                await tg.start(self.launcher.consumers.run)
            # Side by side: right after a NATS node loss, creating the results consumer can wait for its
            # stream to elect a leader, and the scheduler must not wait for that.
            async with anyio.create_task_group() as starting:
                starting.start_soon(tg.start, self.results.run)
                starting.start_soon(tg.start, self.scheduler.run)
            await tg.start(consume_triggers, self.launcher.js, self._launch_trigger, self.launcher.partition)
            tg.start_soon(self.results.age_out_idle_jobs)
            tg.start_soon(self.watchdog.run)
            tg.start_soon(self.launcher.watch_dispatches)
            if self.placement is not None:
                tg.start_soon(self.placement.run)
            if self.planner is not None:
                tg.start_soon(self.planner.run)
            await self._serve_run_requests()

    async def _launch_trigger(self, trigger: Trigger) -> None:
        """A NATS trigger, as a manual run with its launch id (sent again after a crash: same nodes); or a
        parent's ended launch, handed over by the owner of the parent's partition."""
        if trigger.parent:
            await self.results.parent_finished(trigger.job, trigger.parent, trigger.launch, trigger.status)
            return
        spec = self.jobs.jobs.get(job_key(trigger.job))
        if spec is None or spec.disabled:
            logger.warning(
                "trigger %d of %s dropped: the job is gone or disabled", trigger.launch, trigger.job
            )
            return
        refused = run_env_error(spec, trigger.env)  # the job may have changed since the trigger was taken
        if refused is not None:
            await self.launcher.record_outcome(spec, trigger.launch, None, "failed", refused[0])
            return
        outcome = await self.launcher.launch_now(
            spec, group=trigger.launch, force=trigger.force, env=trigger.env
        )
        if isinstance(outcome, JobBusy):
            reason = (
                f"skipped: triggered over NATS while launch {outcome.group} still runs and the job's "
                'concurrency is forbid (send {"force": true} to run it anyway)'
            )
            await self.launcher.record_outcome(spec, trigger.launch, None, "skipped", reason)

    async def _serve_run_requests(self) -> None:
        sub = await self.nc.subscribe(self.launcher.partition.manual_runs, queue="leader")
        try:
            async with anyio.create_task_group() as tg:
                async for msg in sub.messages:
                    tg.start_soon(self._answer_run, msg)
        finally:
            with anyio.move_on_after(2, shield=True):
                await sub.unsubscribe()

    async def _answer_run(self, msg: Msg) -> None:
        reply = await self._run(msg.data)
        await msg.respond(msgspec.json.encode(reply))

    async def _run(self, data: bytes) -> RunNowReply:
        try:
            request = msgspec.json.decode(data, type=RunNow)
        except msgspec.DecodeError as exc:
            return RunNowReply(ok=False, error=f"bad run request: {exc}")
        spec = self.jobs.jobs.get(job_key(request.job))
        if spec is None:
            return RunNowReply(ok=False, not_found=True, error=f"job {request.job} not found")
        if spec.disabled and not spec.parent_job:
            return RunNowReply(ok=False, not_found=True, error=f"job {request.job} is disabled")
        refused = run_env_error(spec, request.env)
        if refused is not None:
            return RunNowReply(ok=False, error=refused[0])
        launched = await self.launcher.launch_now(spec, force=request.force, env=request.env)
        if isinstance(launched, str):
            return RunNowReply(ok=False, not_found=True, error=launched)
        if isinstance(launched, JobBusy):
            error = (
                f"job {spec.name} is still running (launch {launched.group}) and its concurrency is forbid; "
                "run it anyway with ?force=true"
            )
            return RunNowReply(ok=False, busy=True, error=error)
        return RunNowReply(ok=True, targets=launched.targets, executions=launched.execution_ids)
