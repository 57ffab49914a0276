"""Noticing dead agents: an execution whose agent vanished or restarted ends as failed ("agent lost").

Every agent lists its running executions in its registry heartbeat. When a node's heartbeats stop (its
record is older than the member TTL) or it comes back as a new process, the executions it last listed are
checked and, if still running, ruled lost. Bound: member TTL + one check interval after the agent died.
"""

from __future__ import annotations

import logging
from datetime import datetime

import anyio

from dkron_nats.leader.launcher import Launcher
from dkron_nats.members import Registry

logger = logging.getLogger(__name__)


class AgentWatchdog:
    def __init__(self, registry: Registry, launcher: Launcher, interval: float = 1.0) -> None:
        self.registry = registry
        self.launcher = launcher
        self.interval = interval
        self._seen: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._ruled: set[tuple[str, datetime]] = set()

    async def run(self) -> None:
        while True:
            await self.check()
            await anyio.sleep(self.interval)

    async def check(self) -> None:
        alive = {m.name for m in self.registry.alive()}
        for name, member in list(self.registry.cache.items()):
            previous = self._seen.get(name)
            if previous is not None and previous[0] != member.started_at:
                await self._rule_lost(name, previous[1], "restarted")
            # What the agent last reported, plus what was sent to it since (it may die before reporting).
            running = frozenset(member.running) | self.launcher.sent_to(name)
            if name in alive:
                self._seen[name] = (member.started_at, running)
            elif (name, member.started_at) not in self._ruled:
                self._ruled.add((name, member.started_at))
                self._seen.pop(name, None)
                await self._rule_lost(name, running, "is gone")

    async def _rule_lost(self, node: str, keys: frozenset[str], why: str) -> None:
        for key in keys:
            if not self.launcher.partition.owns(key.partition(".")[0]):
                continue  # the owner of the job's partition rules on it
            found = await self.launcher.executions.typed.get(key)
            if found is not None and not found[0].finished:
                logger.warning("node %s %s: execution %s is lost", node, why, key)
                await self.launcher.rule_lost(*found, why)
