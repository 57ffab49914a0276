"""The agent-loss watchdog: when an execution whose node is gone is ruled lost, and when not yet."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import anyio
import msgspec

from dkron_nats.leader.launcher import Launcher
from dkron_nats.leader.watchdog import RESULTS_WAIT, AgentWatchdog
from dkron_nats.members import Registry
from dkron_nats.models import Member
from tests.members import server_member

KEY = "job1.1796695408739371000-_1"


def _member(name: str, running: list[str]) -> Member:
    return server_member(name, running=running)


@dataclass
class _Registry:
    members: dict[str, Member]
    live: set[str]

    @property
    def cache(self) -> _Registry:
        return self

    def items(self) -> list[tuple[str, Member]]:
        return list(self.members.items())

    def alive(self) -> list[Member]:
        return [m for name, m in self.members.items() if name in self.live]


@dataclass
class _Launcher:
    """The partition owner's side: one execution still running on s2, and s2's results in DKRON_RESULTS."""

    waiting: list[bool]
    """What each look at s2's unapplied results answers, in turn (then: none)."""
    ruled: list[tuple[str, str]] = field(default_factory=list)
    partition: Any = field(default_factory=lambda: SimpleNamespace(owns=lambda job: True))

    def __post_init__(self) -> None:
        running = SimpleNamespace(finished=False)
        self.executions = SimpleNamespace(typed=SimpleNamespace(get=self._get))
        self._running = running

    async def _get(self, key: str) -> tuple[Any, int]:
        return self._running, 7

    def sent_to(self, node: str) -> frozenset[str]:
        return frozenset()

    async def results_waiting_from(self, node: str) -> bool:
        return self.waiting.pop(0) if self.waiting else False

    async def rule_lost(self, ex: Any, revision: int, why: str) -> None:
        self.ruled.append((why, str(revision)))


def _watchdog(launcher: _Launcher, registry: _Registry) -> AgentWatchdog:
    return AgentWatchdog(cast(Registry, registry), cast(Launcher, launcher))


def test_a_gone_nodes_execution_is_ruled_lost_only_once_its_published_results_are_applied() -> None:
    """s2 stopped gracefully after it ran its claim and published the result; the result waits in
    DKRON_RESULTS (delivered to a pull of the partition's previous owner, it comes back after ack_wait).
    Ruled lost at once, the run that succeeded was recorded as failed ("agent lost")."""
    registry = _Registry({"s2": _member("s2", [KEY])}, live={"s2"})
    launcher = _Launcher(waiting=[True, True])
    watchdog = _watchdog(launcher, registry)

    async def checks() -> None:
        await watchdog.check()  # s2 alive: seen running
        registry.live.clear()  # s2 gone
        await watchdog.check()  # its result waits
        await watchdog.check()  # still
        assert launcher.ruled == []
        await watchdog.check()  # applied: the execution is finished by then, or it is lost
        await watchdog.check()  # ruled once

    anyio.run(checks)
    assert launcher.ruled == [("is gone", "7")]


def test_results_that_never_come_delay_the_ruling_by_results_wait_at_most() -> None:
    registry = _Registry({"s2": _member("s2", [KEY])}, live=set())
    launcher = _Launcher(waiting=[True] * 1000)
    now = [1000.0]
    watchdog = AgentWatchdog(cast(Registry, registry), cast(Launcher, launcher), clock=lambda: now[0])

    async def checks() -> None:
        await watchdog.check()
        now[0] += RESULTS_WAIT - 1
        await watchdog.check()
        assert launcher.ruled == []
        now[0] += 1
        await watchdog.check()

    anyio.run(checks)
    assert launcher.ruled == [("is gone", "7")]


def test_a_restarted_nodes_previous_executions_wait_for_its_results_too() -> None:
    registry = _Registry({"s2": _member("s2", [KEY])}, live={"s2"})
    launcher = _Launcher(waiting=[True])
    watchdog = _watchdog(launcher, registry)

    async def checks() -> None:
        await watchdog.check()
        previous = registry.members["s2"]
        registry.members["s2"] = msgspec.structs.replace(
            previous, running=[], started_at=previous.started_at + timedelta(seconds=1)
        )
        await watchdog.check()
        assert launcher.ruled == []
        await watchdog.check()

    anyio.run(checks)
    assert launcher.ruled == [("restarted", "7")]
