"""A new leader makes every agent's run consumer before scheduling: a request lost as a JetStream leader
moves (right after a NATS node died with the old leader) must cost a fraction of a second, not 5 s a node."""

from __future__ import annotations

import time
from typing import Any, cast

import anyio
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, ConsumerInfo
from nats.js.errors import NotFoundError

from dkron_nats.leader.runconsumers import RunConsumers
from dkron_nats.models import Member
from dkron_nats.timefmt import utcnow

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LosesFirstRequests:
    """JetStream whose first request for each of `lost` gets no answer (it waits out its timeout), and that
    never answers for `stuck` (their raft group's leader was on the nats-server that died with the leader)."""

    def __init__(self, lost: set[str], stuck: frozenset[str] = frozenset()) -> None:
        self.lost = set(lost)
        self.stuck = stuck
        self.made: list[str] = []
        self.asked: list[str] = []

    async def add_consumer(
        self,
        stream: str,
        config: ConsumerConfig,
        timeout: float = 5.0,  # noqa: ASYNC109  (nats-py's)
    ) -> None:
        name = str(config.durable_name)
        self.asked.append(name)
        if name in self.lost or name in self.stuck:
            self.lost.discard(name)
            await anyio.sleep(timeout)
            raise NatsTimeoutError
        self.made.append(name)


class Registry:
    def __init__(self, names: list[str], gone: frozenset[str] | set[str] = frozenset()) -> None:
        self.gone = gone
        now = utcnow()
        self.members = [
            Member(name=n, addr="", port=0, tags={}, server=False, version="", started_at=now) for n in names
        ]
        self.cache = self

    def listen(self, callback: Any) -> Any:
        return lambda: None

    def alive(self) -> list[Member]:
        return self.members

    def reachable(self) -> list[Member]:
        return [m for m in self.members if m.name not in self.gone]

    def failed(self) -> list[Member]:
        return []


async def _first_pass(consumers: RunConsumers) -> float:
    """Seconds until the consumers are started: their first pass is over."""
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        await tg.start(consumers.run)
        took = time.monotonic() - started
        tg.cancel_scope.cancel()
    return took


async def test_lost_requests_are_sent_again_soon_and_together() -> None:
    nodes = ["s1", "s2", "web1", "web2", "web3"]
    js = LosesFirstRequests({"run-web1", "run-web2", "run-web3"})
    registry = Registry(nodes)
    consumers = RunConsumers(cast(Any, js), cast(Any, registry), "global")
    took = await _first_pass(consumers)
    assert sorted(js.made) == [f"run-{n}" for n in sorted(nodes)]
    assert all(consumers.ready(m) for m in registry.members), "a node is no target after the first pass"
    # About one lost request's wait (0.3 s; a second before), not one per node (nats-py's default: 5 s each).
    assert took < 0.9, f"the first pass took {took:.1f}s"


async def test_a_takeover_does_not_wait_for_the_consumer_of_the_leader_it_replaced() -> None:
    js = LosesFirstRequests(set(), stuck=frozenset({"run-s1"}))
    registry = Registry(["s1", "s2", "web1"], gone={"s1"})  # s1 led, and was killed
    consumers = RunConsumers(cast(Any, js), cast(Any, registry), "global")
    took = await _first_pass(consumers)
    assert "run-s1" not in js.asked, "the first pass waited on the gone leader's consumer"
    assert sorted(js.made) == ["run-s2", "run-web1"]
    assert took < 1.0, f"the first pass took {took:.1f}s"  # FIRST_PASS_LIMIT (1.5 s) before


class KnowsConsumers(LosesFirstRequests):
    """JetStream holding consumers already (a previous leader made them): their filters by name."""

    def __init__(self, existing: dict[str, list[str]], stuck: frozenset[str] = frozenset()) -> None:
        super().__init__(set(), stuck)
        self.existing = existing
        self.looked: list[str] = []

    async def consumer_info(
        self,
        stream: str,
        consumer: str,
        timeout: float = 5.0,  # noqa: ASYNC109  (nats-py's)
    ) -> Any:
        self.looked.append(consumer)
        if consumer not in self.existing:
            raise NotFoundError
        return ConsumerInfo(
            name=consumer,
            stream_name=stream,
            config=ConsumerConfig(filter_subjects=self.existing[consumer]),
            created=utcnow(),
        )


async def test_a_follower_knows_the_consumers_that_exist_so_a_takeover_does_not_wait_to_make_them() -> None:
    """The consumers of web1 and web2 exist as they should; web3's has the filters of tags it no longer
    has. After following, the takeover's first pass makes only web3's: it does not wait on the others
    (whose JetStream leader was on the nats-server that died with the old leader), and makes them again
    only once scheduling has started."""
    registry = Registry(["web1", "web2", "web3"])
    consumers = RunConsumers(cast(Any, None), cast(Any, registry), "global")
    existing = {f"run-{m.name}": list(consumers.filters(m)) for m in registry.members}
    existing["run-web3"] = ["dkron.run.node.web3", "dkron.run.tags.global.role.db"]
    js = KnowsConsumers(existing, stuck=frozenset({"run-web1", "run-web2"}))
    consumers.js = cast(Any, js)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumers.follow)
        with anyio.fail_after(5):
            while len(js.looked) < 3:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [consumers.ready(m) for m in registry.members] == [True, True, False]
    took = await _first_pass(consumers)
    assert took < 0.5, f"the takeover waited {took:.1f}s for consumers that exist"
    assert js.made == ["run-web3"]
    assert all(consumers.ready(m) for m in registry.members)


async def test_a_follower_forgets_the_consumer_of_a_node_gone() -> None:
    """The leader removes a gone node's consumer: a follower must not take it for ready when it leads."""
    registry = Registry(["web1"])
    consumers = RunConsumers(cast(Any, None), cast(Any, registry), "global")
    js = KnowsConsumers({"run-web1": list(consumers.filters(registry.members[0]))})
    consumers.js = cast(Any, js)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumers.follow)
        with anyio.fail_after(5):
            while not consumers.ready(registry.members[0]):
                await anyio.sleep(0.01)
        registry.failed = lambda: registry.members  # type: ignore[method-assign]
        registry.gone = {"web1"}
        with anyio.fail_after(5):
            while consumers.ready(registry.members[0]):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
