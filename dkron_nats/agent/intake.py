"""Pulling run requests from this agent's consumer of DKRON_RUNS, as many as it has room for.

Pull requests are sent by hand, each with a reply subject of its own under one inbox subscription, rather
than with nats-py's `fetch()`, which makes a task, an inbox and a timeout per message. The credit (messages
asked for and not yet delivered) is tracked per pull request: a status message (408: expired) ends one and
gives back what it did not deliver, and one whose answer never came (the connection dropped) is written off
a little after it expired. So the agent never asks for more than `room()`: with execution slots, the
requests it has no slot for stay in the stream, where any other matching agent can take them.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from dkron_nats.kv.buckets import RUNS_STREAM
from dkron_nats.kv.typed import TRANSIENT
from dkron_nats.subjects import run_consumer

logger = logging.getLogger(__name__)

PULL_EXPIRES = 5.0
LOST_AFTER = PULL_EXPIRES + 2.0
"""A pull request with no end after this long was lost with a connection: its credit is written off."""
CONSUMER_POLL = 0.2
"""How often an agent looks for its consumer until a server has made it."""
TOP_UP_INTERVAL = 0.5
MIN_BATCH = 16
"""Ask for at least this many at once when there is room (fewer only when that is all the room)."""


class _Pull(msgspec.Struct):
    expires_at: float
    remaining: int


class RunPuller:
    def __init__(self, nc: Client, js: JetStreamContext, node: str, room: Callable[[], int]) -> None:
        self.nc = nc
        self.js = js
        self.consumer = run_consumer(node)
        self.room = room
        """How many more requests this agent can take now."""
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{RUNS_STREAM}.{self.consumer}"
        self._prefix = nc.new_inbox()
        self._ids = itertools.count()
        self._open: dict[str, _Pull] = {}
        self._consumer_gone = False

    async def wait_for_consumer(self) -> None:
        """Until a server has made this node's consumer (right after the node's first heartbeat)."""
        announced = False
        while True:
            try:
                await self.js.consumer_info(RUNS_STREAM, self.consumer)
                return
            except NotFoundError:
                if not announced:
                    logger.info("waiting for a server to make consumer %s of %s", self.consumer, RUNS_STREAM)
                    announced = True
            except TRANSIENT:
                pass
            await anyio.sleep(CONSUMER_POLL)

    @property
    def credit(self) -> int:
        return sum(pull.remaining for pull in self._open.values())

    async def top_up(self) -> None:
        """Ask for what there is room for and is not asked for already."""
        now = time.monotonic()
        for subject in [s for s, pull in self._open.items() if now > pull.expires_at + LOST_AFTER]:
            del self._open[subject]
        want = self.room() - self.credit
        if want <= 0 or (want < MIN_BATCH and self.credit >= MIN_BATCH):  # enough asked for: batch up
            return
        reply = f"{self._prefix}.{next(self._ids)}"
        self._open[reply] = _Pull(now + PULL_EXPIRES, want)
        body = b'{"batch":%d,"expires":%d}' % (want, int(PULL_EXPIRES * 1e9))
        await self.nc.publish(self._next_subject, body, reply=reply)

    async def run(self, deliver: Callable[[Msg], Awaitable[None]]) -> None:
        """Hand every run request to `deliver`, one after the other, while there is room for them."""
        await self.wait_for_consumer()
        sub = await self.nc.subscribe(f"{self._prefix}.*", pending_msgs_limit=1_000_000)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_asking)
                async for msg in sub.messages:
                    if self._delivered(msg):
                        await deliver(msg)
                    elif self._consumer_gone:
                        self._consumer_gone = False
                        await self.wait_for_consumer()
                    await self.top_up()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _keep_asking(self) -> None:
        """Pulls end (expire, get lost) while nothing is delivered: ask again for the room there is."""
        while True:
            await anyio.sleep(TOP_UP_INTERVAL)
            await self.top_up()

    def _delivered(self, msg: Msg) -> bool:
        """Account for one message on a pull's reply subject: a run request (True) or the pull's end."""
        pull = self._open.get(msg.subject)
        status = (msg.headers or {}).get("Status")
        if status is None:
            if pull is not None:
                pull.remaining -= 1
                if pull.remaining <= 0:
                    del self._open[msg.subject]
            return True
        self._open.pop(msg.subject, None)
        description = (msg.headers or {}).get("Description", "")
        if status == "409" and "deleted" in description.lower():
            self._consumer_gone = True
        if status not in ("408", "404"):
            logger.warning("pulling run requests: %s %s", status, description)
        return False
