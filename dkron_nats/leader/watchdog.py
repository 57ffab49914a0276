"""Noticing dead agents: an execution whose agent vanished or restarted ends as failed ("agent lost").

Every agent lists its running executions in its registry heartbeat. When a node's heartbeats stop (its
record is older than the member TTL) or it comes back as a new process, the executions it last listed are
checked and, if still running, ruled lost. Bound: member TTL + one check interval after the agent died.

Not while results the node published to this partition wait in DKRON_RESULTS unapplied (up to
`RESULTS_WAIT`): of a ruling and a result the first applied counts, and a node that stops gracefully runs
what it had claimed and reports it before it leaves. A result delivered and not acknowledged (its owner's
writes waiting for a JetStream election after that node's nats-server stopped with it, or the partition
handed over meanwhile) comes back only after ack_wait (10 s): seen in CI, the ruling came first and a run that
succeeded was recorded as failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import anyio
from nats.errors import NoRespondersError
from nats.js.errors import APIError

from dkron_nats.kv.typed import TRANSIENT
from dkron_nats.leader.launcher import Launcher
from dkron_nats.members import Registry

logger = logging.getLogger(__name__)

RESULTS_WAIT = 15.0
"""How long a ruling waits at most for a lost node's unapplied results (longer than the results' ack_wait)."""


class AgentWatchdog:
    def __init__(
        self,
        registry: Registry,
        launcher: Launcher,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.launcher = launcher
        self.interval = interval
        self.clock = clock
        self._seen: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._ruled: set[tuple[str, datetime]] = set()
        self._waiting: dict[str, float] = {}
        """Node -> when a ruling on it began to wait for its unapplied results."""

    async def run(self) -> None:
        while True:
            await self.check()
            await anyio.sleep(self.interval)

    async def check(self) -> None:
        alive = {m.name for m in self.registry.alive()}
        for name, member in list(self.registry.cache.items()):
            previous = self._seen.get(name)
            if previous is not None and previous[0] != member.started_at:
                if not await self._results_applied(name):
                    continue  # the previous process's results first: looked at again next round
                await self._rule_lost(name, previous[1], "restarted")
            # What the agent last reported, plus what was sent to it since (it may die before reporting).
            running = frozenset(member.running) | self.launcher.sent_to(name)
            if name in alive:
                self._seen[name] = (member.started_at, running)
            elif (name, member.started_at) not in self._ruled:
                if not await self._results_applied(name):
                    continue
                self._ruled.add((name, member.started_at))
                self._seen.pop(name, None)
                await self._rule_lost(name, running, "is gone")

    async def _results_applied(self, node: str) -> bool:
        """Whether every result `node` published to this partition is applied (or RESULTS_WAIT is over)."""
        began = self._waiting.setdefault(node, self.clock())
        try:
            waiting = await self.launcher.results_waiting_from(node)
        except (*TRANSIENT, NoRespondersError, APIError):
            waiting = True  # JetStream re-electing: look again next round
        if waiting and self.clock() - began < RESULTS_WAIT:
            return False
        del self._waiting[node]
        return True

    async def _rule_lost(self, node: str, keys: frozenset[str], why: str) -> None:
        for key in keys:
            if not self.launcher.partition.owns(key.partition(".")[0]):
                continue  # the owner of the job's partition rules on it
            found = await self.launcher.executions.typed.get(key)
            if found is not None and not found[0].finished:
                logger.warning("node %s %s: execution %s is lost", node, why, key)
                await self.launcher.rule_lost(*found, why)
