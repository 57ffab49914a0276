"""While this server leads, the JetStream raft groups are led by the other servers' nats-servers.

A leader's process and its embedded nats-server die together. Every stream or consumer that nats-server
led must then elect a new leader before it takes a write again, and the takeover needs them at once: the
lease bucket for the successor's steal, the decision log for its takeover append, the run queue and the
agents' consumers for its first launch. The chaos run's logs showed that election adding about half a
second to half the takeovers. So the leader asks every replicated stream it leads, and every consumer of the
run and result streams, to elect a leader elsewhere: once soon after it takes over (not at once: the
takeover's first launches come first), then again every CHECK_INTERVAL, since a restarted server can be
elected again. A step-down costs the group a moment without a leader while nobody is dying, instead of
an election on the takeover's path.
"""

from __future__ import annotations

import logging

import anyio
import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo

from dkron_nats.kv.buckets import RESULTS_STREAM, RUNS_STREAM
from dkron_nats.kv.typed import LOST_REQUEST_TIMEOUT

logger = logging.getLogger(__name__)

FIRST_CHECK_AFTER = 3.0
CHECK_INTERVAL = 10.0
"""Often enough to catch the consumers of partitions that move here; a round is a few API requests."""
STEP_DOWN_SPACING = 0.1
"""Between two step-downs: one group at a time without a leader, not all of them at once."""
HOT_CONSUMERS_OF = (RUNS_STREAM, RESULTS_STREAM)
"""Streams whose consumers the takeover path uses (the agents' pulls, the leader's results)."""


class _StepDownReply(msgspec.Struct):
    success: bool = False
    error: dict[str, object] | None = None


class RaftLeadersElsewhere:
    """Moves the raft leaders of this server's own nats-server (named `server_name`) to its peers."""

    def __init__(self, nc: Client, js: JetStreamContext, server_name: str) -> None:
        self.nc = nc
        self.js = js
        self.server_name = server_name

    async def run(self) -> None:
        await anyio.sleep(FIRST_CHECK_AFTER)
        while True:
            try:
                await self.move_off()
            except NatsError as exc:  # JetStream busy: looked at again in the next round
                logger.debug("could not look at the raft leaders: %s", exc)
            await anyio.sleep(CHECK_INTERVAL)

    async def move_off(self) -> int:
        """Ask every group led here to elect a leader elsewhere; how many were asked."""
        asked = 0
        for stream in await self.js.streams_info():
            name = stream.config.name or ""
            if self._led_here(stream.cluster):
                asked += await self._step_down(f"STREAM.LEADER.STEPDOWN.{name}", f"stream {name}")
            if name in HOT_CONSUMERS_OF:
                for consumer in await self.js.consumers_info(name):
                    if self._led_here(consumer.cluster):
                        what = f"consumer {consumer.name} of {name}"
                        asked += await self._step_down(
                            f"CONSUMER.LEADER.STEPDOWN.{name}.{consumer.name}", what
                        )
        return asked

    def _led_here(self, cluster: ClusterInfo | None) -> bool:
        """Led by this server's nats-server, with a replica elsewhere to take over."""
        return cluster is not None and cluster.leader == self.server_name and bool(cluster.replicas)

    async def _step_down(self, api: str, what: str) -> int:
        try:
            msg = await self.nc.request(f"$JS.API.{api}", b"", timeout=LOST_REQUEST_TIMEOUT)
            reply = msgspec.json.decode(msg.data, type=_StepDownReply)
        except (NatsError, msgspec.DecodeError) as exc:
            logger.debug("could not move the leader of %s: %s", what, exc)
            return 0
        if not reply.success:
            logger.debug("the leader of %s stays: %s", what, reply.error)
            return 0
        logger.info("%s: its raft leader moves off this leader's nats-server", what)
        await anyio.sleep(STEP_DOWN_SPACING)
        return 1
