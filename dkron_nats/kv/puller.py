"""Pulling from a durable JetStream consumer, as many messages as the caller has room for.

An agent pulls its run requests from its consumer of DKRON_RUNS this way, and a partition owner its results
from its consumer of DKRON_RESULTS. Pull requests are sent by hand, each with a reply subject of its own under
one inbox subscription, rather than with nats-py's `fetch()`, which makes a task, an inbox and a timeout per
message. The credit (messages asked for and not yet delivered) goes down by one per delivered message
(delivered messages carry their stream subject, so they cannot be told apart by pull), and a status message on
a pull's reply subject (408: expired) gives back what that pull did not deliver (`Nats-Pending-Messages`). A
pull can also end with no word at all: filled (a full pull has no status), or lost with the NATS server that
held it. Either way it is over once it has expired, so the credit is never more than what the pulls not yet
expired asked for. So the puller never asks for more than `room()`, and never waits for a pull that will not
come: an agent with execution slots leaves the requests it has no slot for in the stream, where any other
matching agent can take them.

A pull refused (409 when the consumer goes, 503 when no server serves it) holds new pulls back for a moment,
while the puller looks for its consumer: pulling again at once makes a storm. One hold covers every refusal of
the pulls sent before it, and the messages that arrive meanwhile are taken as they come. When the consumer's
leader moves, the new leader ends every pull still out (409 Leadership Change): that is no refusal, and the
puller asks the new leader at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from dkron_nats.kv.typed import LOST_REQUEST_TIMEOUT, TRANSIENT

logger = logging.getLogger(__name__)

PULL_EXPIRES = 5.0
LOST_AFTER = 2.0
"""A pull with no end this long after its expiry is over (filled, or lost with its server): forgotten."""
CONSUMER_POLL = 0.2
"""How often the puller looks for its consumer until a server has made it."""
TOP_UP_INTERVAL = 0.5
LEADER_MOVED = "Leadership Change"
"""The 409 that ends every pull still out when the consumer's leader moves (its NATS server stopped)."""
MIN_BATCH = 16
"""Ask for at least this many at once when there is room (fewer only when that is all the room)."""


HAND_BACK_WITHIN = 1.0
"""How long a stopping puller spends handing back what it was delivered and had not read."""


async def hand_back(msg: Msg) -> None:
    """Nak `msg` now, so that the consumer redelivers it at once rather than after its ack_wait (bounded:
    a connection that is going may not take it, and then ack_wait it is)."""
    with anyio.move_on_after(1, shield=True), contextlib.suppress(*TRANSIENT, NatsError):
        await msg.nak()


async def _hand_back_unread(sub: Subscription) -> None:
    """Nak the messages delivered to `sub` that nobody read: unread, each would come back only after the
    consumer's ack_wait, and meanwhile a later message of the same job could be applied before it (a
    result counted out of order is not counted: results.py's sequence guard)."""
    while sub.pending_msgs:
        msg = await sub.next_msg(timeout=0.1)
        if not (msg.headers or {}).get("Status"):
            await hand_back(msg)


class Pull(NamedTuple):
    expires: float
    batch: int
    era: int
    """How many holds had ended when it was sent: a refusal of a pull sent before a hold is old news."""


class Puller:
    def __init__(
        self, nc: Client, js: JetStreamContext, stream: str, consumer: str, room: Callable[[], int]
    ) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream
        self.consumer = consumer
        self.room = room
        """How many more messages the caller can take now."""
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._prefix = nc.new_inbox()
        self._ids = itertools.count()
        self._open: dict[str, Pull] = {}
        """Reply subject of each pull request not known to have ended -> that pull."""
        self.credit = 0
        """Messages asked for and not delivered yet."""
        self._asked = 0
        """What the pulls in `_open` asked for together: the most they can still deliver."""
        self._era = 0
        self._refused = anyio.Event()
        """A pull sent since the last hold was refused (not simply expired): hold new pulls back."""
        self._connection = nc.stats["reconnects"]

    async def wait_for_consumer(self) -> None:
        """Until the consumer exists (a server makes an agent's right after the node's first heartbeat)."""
        announced = False
        while True:
            try:
                # A short wait: the messages already pulled wait behind this look.
                await self.js.consumer_info(self.stream, self.consumer, timeout=LOST_REQUEST_TIMEOUT)
                return
            except NotFoundError:
                if not announced:
                    logger.info("waiting for a server to make consumer %s of %s", self.consumer, self.stream)
                    announced = True
            except TRANSIENT:
                pass
            await anyio.sleep(CONSUMER_POLL)

    async def top_up(self) -> None:
        """Ask for what there is room for and is not asked for already."""
        if self._refused.is_set():
            return  # held back until the consumer is found again
        now = time.monotonic()
        if self.nc.stats["reconnects"] != self._connection:
            # The pulls of the connection before are gone with it (the server ends them at their expiry).
            self._connection = self.nc.stats["reconnects"]
            self._open.clear()
            self.credit = self._asked = 0
        # Oldest first (they expire in the order they were sent): filled, or lost with its server.
        while self._open and now > next(iter(self._open.values())).expires + LOST_AFTER:
            self._asked -= self._open.pop(next(iter(self._open))).batch
        self.credit = min(self.credit, self._asked)  # only pulls not yet expired can still deliver
        want = self.room() - self.credit
        if want <= 0 or (want < MIN_BATCH and self.credit >= MIN_BATCH):  # enough asked for: batch up
            return
        reply = f"{self._prefix}.{next(self._ids)}"
        self._open[reply] = Pull(now + PULL_EXPIRES, want, self._era)
        self.credit += want
        self._asked += want
        body = b'{"batch":%d,"expires":%d}' % (want, int(PULL_EXPIRES * 1e9))
        await self.nc.publish(self._next_subject, body, reply=reply)

    async def run(self, deliver: Callable[[Msg], Awaitable[None]]) -> None:
        """Hand every message to `deliver`, one after the other, while there is room for them."""
        await self.wait_for_consumer()
        sub = await self.nc.subscribe(f"{self._prefix}.*", pending_msgs_limit=1_000_000)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_asking)
                async for msg in sub.messages:
                    if self._delivered(msg):
                        await deliver(msg)
                    await self.top_up()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(HAND_BACK_WITHIN):
                await sub.unsubscribe()
                await _hand_back_unread(sub)

    async def _keep_asking(self) -> None:
        """Pulls end (expire, get lost) while nothing is delivered: ask again for the room there is. After a
        refusal, hold new pulls back for a moment and until the consumer is found."""
        while True:
            with anyio.move_on_after(TOP_UP_INTERVAL):
                await self._refused.wait()
            if self._refused.is_set():
                await anyio.sleep(CONSUMER_POLL)  # an answer that comes at once would make a storm
                await self.wait_for_consumer()
                self._era += 1
                self._refused = anyio.Event()
            await self.top_up()

    def _delivered(self, msg: Msg) -> bool:
        """Account for one message of a pull: a stream message (True) or the end of a pull."""
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            self.credit = max(0, self.credit - 1)
            return True
        pull = self._open.pop(msg.subject, None)
        if pull is None:
            return False  # the end of a pull already written off
        self._asked -= pull.batch
        undelivered = int(headers.get("Nats-Pending-Messages", pull.batch))
        self.credit = max(0, self.credit - undelivered)
        if status == "408" or headers.get("Description") == LEADER_MOVED:
            return False  # an end, not a refusal: the next pull goes to the consumer's new leader
        if pull.era == self._era and not self._refused.is_set():
            logger.warning("pulling from %s: %s %s", self.consumer, status, headers.get("Description", ""))
            self._refused.set()
        return False
