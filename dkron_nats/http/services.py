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

from dkron_nats.agent.registry import ExecutorRegistry, ProcessorRegistry
from dkron_nats.audit import AuditLog
from dkron_nats.auth import Authenticator
from dkron_nats.errors import ConflictError, NoLeaderError, RunError
from dkron_nats.joblist import JobLister
from dkron_nats.jobs import JobService
from dkron_nats.kv.cache import KVCache
from dkron_nats.kv.executions import ExecutionStore
from dkron_nats.leader.lease import Lease
from dkron_nats.leader.session import RunNow, RunNowReply
from dkron_nats.leader.stats import Stats
from dkron_nats.members import Registry
from dkron_nats.models import Execution, Member
from dkron_nats.nextfire import NextFireCache
from dkron_nats.subjects import AGENT_BUSY, LEADER_RUN

logger = logging.getLogger(__name__)


class Flag(msgspec.Struct, kw_only=True):
    value: bool = False


PAUSED_KEY = "paused"
"""New and changed jobs are refused (Dkron's pause)."""
SCHEDULING_PAUSED_KEY = "scheduling_paused"
"""The leader launches no scheduled slot; on resume each job's misfire policy decides what runs."""


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
    max_body_bytes: int = 1_048_576
    max_executions: int = 100
    """Execution records kept per job (`--max-executions`), unless the job sets `history_limit`."""

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

    async def run_now(
        self, job: str, force: bool = False, deadline: float = 10.0, env: dict[str, str] | None = None
    ) -> RunNowReply:
        """Ask the leader to launch a job now (`env`: the run's parameters); waits through a leader
        election up to `deadline`."""
        request = msgspec.json.encode(RunNow(job=job, force=force, env=env or {}))
        with anyio.move_on_after(deadline):
            while True:
                try:
                    msg = await self.nc.request(LEADER_RUN, request, timeout=5)
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
