"""What the API handlers use, built once by the node and injected into Litestar."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError, NotFoundError

from dkron_nats.agent.registry import ExecutorRegistry, ProcessorRegistry
from dkron_nats.audit import AuditLog
from dkron_nats.auth import Authenticator
from dkron_nats.errors import ConflictError, NoLeaderError, RunError
from dkron_nats.joblist import JobLister
from dkron_nats.jobs import JobService
from dkron_nats.kv.buckets import DECISIONS_STREAM
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.executions import ExecutionStore
from dkron_nats.kv.typed import with_retry
from dkron_nats.leader.lease import Lease, LeaseRecord, term_of
from dkron_nats.leader.session import RunNow, RunNowReply
from dkron_nats.leader.stats import Stats
from dkron_nats.members import Registry
from dkron_nats.models import DecisionBatch, Execution, Member, decode
from dkron_nats.names import job_key
from dkron_nats.nextfire import NextFireCache
from dkron_nats.subjects import AGENT_BUSY, decisions_subject, partition_for
from dkron_nats.subjects import partitions as all_partitions

logger = logging.getLogger(__name__)


class Flag(msgspec.Struct, kw_only=True):
    value: bool = False


PAUSED_KEY = "paused"
"""New and changed jobs are refused (Dkron's pause)."""
SCHEDULING_PAUSED_KEY = "scheduling_paused"
"""The leader launches no scheduled slot; on resume each job's misfire policy decides what runs."""


class PartitionStatus(msgspec.Struct):
    """One row of `GET /v1/partitions`."""

    partition: int
    owner: str
    """The server holding the partition's lease ("" while nobody does)."""
    term: int
    """The fencing token of the owner's term."""
    jobs: int
    lag_ms: int
    """How late after its slot the partition's latest decision was taken."""
    assignee: str = ""
    """The server the partition is assigned to now: its owner hands it over to it ("": not split)."""


@dataclass(slots=True)
class Services:
    node_name: str
    version: str
    tags: dict[str, str]
    nc: Client
    jobs: JobService
    lister: JobLister
    nexts: NextFireCache
    executions: ExecutionStore
    registry: Registry
    lease: Lease | None
    settings: KVCache[Flag]
    stats: Stats
    executors: ExecutorRegistry
    processors: ProcessorRegistry
    request_shutdown: Callable[[], None]
    auth: Authenticator
    audit: AuditLog
    jobs_per_partition: Callable[[], list[int]]
    """How many jobs each partition holds (leader/balance.py's JobsPerPartition)."""
    partitions: int = 1
    """The cluster's partition count: a manual run goes to the owner of its job's partition."""
    max_body_bytes: int = 1_048_576
    max_executions: int = 100
    """Execution records kept per job (`--max-executions`), unless the job sets `history_limit`."""
    assignees: Callable[[], dict[int, str]] = dict
    """Partition -> the server it is assigned to now (leader/partitions.py; empty: one partition)."""

    def is_paused(self, key: str = PAUSED_KEY) -> bool:
        flag = self.settings.get(key)
        return bool(flag and flag.value)

    async def set_paused(self, paused: bool, key: str = PAUSED_KEY) -> None:
        rev = await self.settings.store.put(key, Flag(value=paused))
        self.settings.apply(key, Flag(value=paused), rev)

    def is_leader(self) -> bool:
        return self.lease is not None and self.lease.valid()

    async def leader(self) -> Member | None:
        if self.lease is None:
            return None
        holder = await self.lease.holder()
        if holder is None:
            return None
        return self.registry.get(holder.node)

    async def partition_table(self) -> list[PartitionStatus]:
        """Every partition: its owner and term (from its lease), its jobs, and how late its latest decision
        was taken after its slot."""
        counts = self.jobs_per_partition()
        assignees = self.assignees()
        table = []
        for part in all_partitions(self.partitions):
            owner, term = await self._owner_of(part.lease_key)
            lag = await self._decision_lag_ms(part.index)
            assignee = assignees.get(part.index, "")
            table.append(PartitionStatus(part.index, owner, term, counts[part.index], lag, assignee))
        return table

    async def _owner_of(self, lease_key: str) -> tuple[str, int]:
        """The node holding a partition's lease and its term ("", 0: nobody)."""
        if self.lease is None:
            return "", 0
        kv = self.lease.kv
        try:
            entry = await with_retry(lambda: kv.get(lease_key), attempts=3, what="lease read")
        except KeyNotFoundError:
            return "", 0
        if not entry.value or entry.operation:
            return "", 0
        record = decode(entry.value, LeaseRecord)
        return record.node, term_of(record, int(entry.revision or 0))

    async def _decision_lag_ms(self, partition: int) -> int:
        js = self.nc.jetstream()
        subject = decisions_subject(partition)
        try:
            msg = await with_retry(
                lambda: js.get_last_msg(DECISIONS_STREAM, subject), attempts=3, what="decision log read"
            )
        except NotFoundError:
            return 0  # nothing decided yet
        batch = decode(msg.data or b"", DecisionBatch)
        if batch.kind != "decisions" or not batch.cursors:
            return 0  # a takeover or a checkpoint: nothing late
        return max((c.decided_ns - c.slot_ns) // 1_000_000 for c in batch.cursors.values())

    async def run_now(
        self, job: str, force: bool = False, deadline: float = 10.0, env: dict[str, str] | None = None
    ) -> RunNowReply:
        """Ask the leader to launch a job now (`env`: the run's parameters); waits through a leader
        election up to `deadline`."""
        request = msgspec.json.encode(RunNow(job=job, force=force, env=env or {}))
        owner = partition_for(job_key(job), self.partitions).manual_runs
        with anyio.move_on_after(deadline):
            while True:
                try:
                    msg = await self.nc.request(owner, request, timeout=5)
                except (NoRespondersError, NatsTimeoutError):
                    await anyio.sleep(0.25)
                    continue
                reply = msgspec.json.decode(msg.data, type=RunNowReply)
                if reply.busy:
                    raise ConflictError(reply.error)
                if not reply.ok:
                    raise RunError(reply.error)
                return reply
        raise NoLeaderError

    async def busy(self, wait: float = 0.5) -> list[Execution]:
        """Running executions cluster-wide: every agent answers; stop when all alive nodes did."""
        expected = len(self.registry.alive())
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        found: list[Execution] = []
        try:
            await self.nc.publish(AGENT_BUSY, b"", reply=inbox)
            answered = 0
            with anyio.move_on_after(wait):
                async for msg in sub.messages:
                    found.extend(msgspec.json.decode(msg.data, type=list[Execution]))
                    answered += 1
                    if answered >= expected:
                        break
        finally:
            await sub.unsubscribe()
        found.sort(key=lambda ex: ex.started_at.isoformat() if ex.started_at else "")
        return found
