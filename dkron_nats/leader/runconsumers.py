"""Every agent's durable consumer of DKRON_RUNS, made by the leader from the agent's member record.

An agent takes run requests from its own node subject and from the tag subject of every subset of its
tags (`subjects.agent_run_filters`). Servers create these consumers, not agents: a consumer's filters are
in the body of the API request, which no NATS permission can restrict, so an agent allowed to create its own
could read every run request (job definitions and their environments included). An agent may only pull
from and acknowledge on its own consumer (`natsroles.agent`).

A node is a dispatch target only once its consumer has the filters of its current tags (`ready`): a run
request published before would reach no consumer and, the stream keeping messages only for interested
consumers, be dropped. Every server learns in advance which consumers exist as they should (`follow`), so
a takeover starts scheduling without making them first: right after the leader's death, a JetStream request
can wait seconds for the election of a raft group its nats-server led. The new leader makes them again in
the background, as it would any missing one.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.kv.typed import LOST_REQUEST_TIMEOUT
from dkron_nats.members import Registry
from dkron_nats.models import Member
from dkron_nats.subjects import agent_run_filters, run_consumer

logger = logging.getLogger(__name__)

ACK_WAIT = 30.0
"""An agent acknowledges a request as soon as its claim is decided; one it took and never acknowledged (it
died first) goes to its next process after this long."""
MAX_ACK_PENDING = 4096
INACTIVE_THRESHOLD = 3600.0
"""A consumer nobody pulled from for an hour is deleted by NATS (its node is gone); it is made again
when the node comes back."""
RETRY_INTERVAL = 1.0
FIRST_PASS_LIMIT = 1.5
"""A takeover waits this long at most for the consumers (a request lost, sent again); a node whose consumer
cannot be made by then is no target until it is, and the others are scheduled meanwhile."""
FOLLOW_INTERVAL = 1.0
"""How often a server that does not lead looks for the consumers of nodes it does not know ready."""
FIRST_PASS_RETRY = 0.1
FIRST_PASS_REQUEST_TIMEOUT = 0.3
"""A takeover's requests are sent again after this long: one lost as the JetStream leader of a consumer
moves (it was on the nats-server of the leader just killed) cost the whole takeover a second."""


class RunConsumers:
    def __init__(self, js: JetStreamContext, registry: Registry, region: str) -> None:
        self.js = js
        self.registry = registry
        self.region = region
        self._made: dict[str, tuple[dict[str, str], object]] = {}
        """Node -> the tags its consumer was made for, and the node's start time then."""
        self._changed = anyio.Event()
        self._removed: set[str] = set()
        """Gone nodes whose consumer this server has removed (made again when they come back)."""
        self._learned: set[str] = set()
        """Nodes whose consumer was found, not made, by this server: made again once it leads."""

    def filters(self, member: Member) -> tuple[str, ...]:
        region = member.tags.get("region", self.region)
        tags = {k: v for k, v in member.tags.items() if k != "region"}
        return tuple(agent_run_filters(member.name, region, tags))

    def ready(self, member: Member) -> bool:
        """True when run requests published now reach this node's consumer."""
        return self._made.get(member.name) == (member.tags, member.started_at)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Make the consumers of every reachable node, then follow the registry: new nodes, new tags.

        Started once every reachable node's consumer is made (a node without one is no target), or after
        FIRST_PASS_LIMIT with those that could be made by then."""
        unlisten = self.registry.cache.listen(lambda key, member: self._changed.set())
        try:
            with anyio.move_on_after(FIRST_PASS_LIMIT):
                while True:  # tried again after a pause: no event says when JetStream answers again
                    if await self._make_missing(FIRST_PASS_REQUEST_TIMEOUT):
                        break
                    await anyio.sleep(FIRST_PASS_RETRY)
            task_status.started()
            while True:
                await self._make_missing(also_learned=True)
                with anyio.move_on_after(RETRY_INTERVAL):
                    await self._changed.wait()
                self._changed = anyio.Event()
        finally:
            unlisten()

    async def follow(self) -> None:
        """Learn which reachable nodes' consumers exist with the filters of their tags of now, and forget
        those of nodes gone (the leader removes their consumers)."""
        while True:
            for member in self.registry.failed():
                self._made.pop(member.name, None)
            async with anyio.create_task_group() as tg:
                for member in self.registry.reachable():
                    if not self.ready(member):
                        tg.start_soon(self._learn, member)
            await anyio.sleep(FOLLOW_INTERVAL)

    async def _learn(self, member: Member) -> None:
        try:
            info = await self.js.consumer_info(
                RUNS_STREAM, run_consumer(member.name), timeout=LOST_REQUEST_TIMEOUT
            )
        except NatsError:  # not made yet, or JetStream busy: asked again in the next round
            return
        config = info.config
        found = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
        if sorted(found) == sorted(self.filters(member)):
            self._made[member.name] = (member.tags, member.started_at)
            self._learned.add(member.name)

    async def _make_missing(
        self, give_up_after: float = LOST_REQUEST_TIMEOUT, also_learned: bool = False
    ) -> bool:
        """Make the consumers not made yet (`also_learned`: and those only found by `follow`), all at once
        (a request lost as a JetStream leader moves costs one `give_up_after`, not one per node); whether
        every reachable node's is ready now.

        Not the consumer of a node confirmed gone (the leader whose lease was just taken over): its
        requests can wait for a JetStream election on the raft group its own nats-server led, and the
        takeover would spend FIRST_PASS_LIMIT on a node that is no target anyway."""
        async with anyio.create_task_group() as tg:
            for member in self.registry.reachable():
                if not self.ready(member) or (also_learned and member.name in self._learned):
                    tg.start_soon(self._try_to_make, member, give_up_after)
        for member in self.registry.failed():
            if member.name not in self._removed:
                await self._remove(member.name)
        return all(self.ready(member) for member in self.registry.reachable())

    async def _try_to_make(self, member: Member, give_up_after: float) -> None:
        try:
            await self.make(member, give_up_after)
        except NatsError as exc:
            logger.warning("could not make the run consumer of %s (retrying): %s", member.name, exc)

    async def _remove(self, node: str) -> None:
        """A node that is gone (no heartbeat for the member TTL) loses its consumer: requests on the tag
        subjects it matches would otherwise pile up in the stream for it. The leader targets only alive
        nodes, and one that comes back gets a new consumer before it is a target again."""
        try:
            await self.js.delete_consumer(RUNS_STREAM, run_consumer(node))
        except NotFoundError:
            pass
        except NatsError as exc:
            logger.warning("could not remove the run consumer of %s (retrying): %s", node, exc)
            return
        self._removed.add(node)
        if self._made.pop(node, None) is not None:
            logger.info("node %s is gone: its consumer of run requests is removed", node)

    async def make(self, member: Member, give_up_after: float = LOST_REQUEST_TIMEOUT) -> None:
        """Create the node's consumer, or update its filters to the node's tags of now."""
        filters = self.filters(member)
        config = ConsumerConfig(
            durable_name=run_consumer(member.name),
            filter_subjects=list(filters),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING,
            inactive_threshold=INACTIVE_THRESHOLD,
        )
        await self.js.add_consumer(RUNS_STREAM, config, timeout=give_up_after)
        self._removed.discard(member.name)
        self._learned.discard(member.name)
        self._made[member.name] = (member.tags, member.started_at)
        logger.debug("run consumer of %s takes %s", member.name, ", ".join(filters))
