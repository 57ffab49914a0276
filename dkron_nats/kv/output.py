"""Live execution output: the agent publishes chunks as the job prints them; any server reads them back.

One subject per execution, `dkron.output.<job key>.<execution id>`, in the `DKRON_OUTPUT` stream (limited by
age and bytes, oldest dropped first). The chunks are plain core-NATS publishes, in order on the agent's one
connection; the last message of an execution is an empty one with the header `Dkron-Output-End`, published
with a JetStream acknowledgement so that every chunk before it is stored once it returns. A reader follows
the subject from its first message with an ordered consumer, so several readers, late joiners and readers on
another server all see the whole output.

What one execution publishes is bounded (LIVE_LIMIT); output beyond it, or after NATS failed, is dropped and
counted, never held in memory, and the live copy ends with a line saying how many bytes were dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from dkron_nats.kv.executions import EXECUTION_ID
from dkron_nats.kv.typed import TRANSIENT, with_retry
from dkron_nats.names import job_key

logger = logging.getLogger(__name__)
OUTPUT_STREAM = "DKRON_OUTPUT"
OUTPUT_SUBJECTS = "dkron.output.>"
END_HEADER = "Dkron-Output-End"
CHUNK_BYTES = 16 * 1024
FLUSH_INTERVAL = 0.1
"""Seconds a partial chunk may wait: short enough to look live, long enough to batch small writes."""
LIVE_LIMIT = 16 * 1024 * 1024
"""Bytes of one execution kept in the stream; the record keeps the tail beyond that."""
PUBLISH_ERRORS = (NatsError, *TRANSIENT, OSError)
"""What a publish raises when NATS is unavailable (nats-py errors all derive from nats.errors.Error)."""


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit:,}-byte"


def output_subject(job: str, execution_id: str) -> str:
    """The subject of one execution's output; ValueError for an id that is not an execution id."""
    if EXECUTION_ID.fullmatch(execution_id) is None:
        raise ValueError(f"{execution_id!r} is not an execution id")
    return f"dkron.output.{job_key(job)}.{execution_id}"


class OutputPublisher:
    """An OutputSink that publishes what it is given in chunks of at most CHUNK_BYTES.

    Run `flush_periodically` beside the execution so that a partial chunk never waits longer than
    FLUSH_INTERVAL; `close` publishes the rest and the end marker. Publishing never fails the job: when NATS
    is unavailable the live copy is incomplete and the execution record still keeps the tail. At most
    `limit` bytes are published; `dropped` counts the rest, which is never buffered.
    """

    def __init__(self, nc: Client, js: JetStreamContext, subject: str, limit: int = LIVE_LIMIT) -> None:
        self.nc = nc
        self.js = js
        self.subject = subject
        self.limit = limit
        self.sent = 0
        self.dropped = 0
        self._pending = bytearray()
        self._stopped = ""
        """Why nothing more is published ("" while it is): output from then on is only counted."""

    async def write(self, data: bytes) -> None:
        if self._stopped:
            self.dropped += len(data)
            return
        room = self.limit - self.sent - len(self._pending)
        if len(data) <= room:
            self._pending += data
            if len(self._pending) >= CHUNK_BYTES:
                await self.flush()
            return
        # Keep what fits, so the live copy is exactly the first `limit` bytes; a follower learns at once.
        self._pending += data[:room]
        self.dropped += len(data) - room
        self._stopped = f"past the {_size(self.limit)} live-output limit"
        await self.flush()
        await self._note(
            f"\n[dkron-nats: live output stops here, {self._stopped}; the record keeps the end]\n"
        )

    async def flush(self) -> None:
        while self._pending:
            chunk = bytes(self._pending[:CHUNK_BYTES])
            del self._pending[:CHUNK_BYTES]
            try:
                await self.nc.publish(self.subject, chunk)
                self.sent += len(chunk)
                if self.nc.pending_data_size > 1024 * 1024:
                    await self.nc.flush(timeout=10)  # let the socket catch up with a fast writer
            except PUBLISH_ERRORS as exc:  # the job goes on without its live copy
                logger.warning("live output of %s stopped: %s", self.subject, exc)
                self.dropped += len(self._pending)
                self._pending.clear()
                self._stopped = self._stopped or "after NATS failed"

    async def _note(self, text: str) -> None:
        """A line of dkron-nats's own in the live copy (where output stops, how much was dropped)."""
        try:
            await self.nc.publish(self.subject, text.encode())
        except PUBLISH_ERRORS as exc:
            logger.warning("live output of %s: %s", self.subject, exc)

    async def flush_periodically(self) -> None:
        while True:
            await anyio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def close(self) -> None:
        await self.flush()
        if self.sent == 0 and not self._stopped:
            # Nothing was published: no end marker either (a JetStream write per execution saved). A
            # follower ends when the record says the execution is over; a plain read finds no output.
            return
        if self.dropped:
            await self._note(f"\n[dkron-nats: {self.dropped:,} bytes of output dropped {self._stopped}]\n")
        try:
            await with_retry(
                lambda: self.js.publish(self.subject, b"", headers={END_HEADER: "1"}),
                attempts=5,
                what="output end",
            )
        except PUBLISH_ERRORS as exc:
            logger.warning("could not mark the end of %s: %s", self.subject, exc)


async def read_output(
    js: JetStreamContext,
    subject: str,
    follow: bool,
    finished: Callable[[], Awaitable[bool]],
    idle_check: float = 1.0,
) -> AsyncIterator[bytes]:
    """The execution's output chunks from the first one.

    Without `follow`, what is stored now. With it, chunks as they come until the end marker; when nothing
    arrives for `idle_check` seconds and `finished()` says the execution is over (its agent died before
    marking the end), the stream ends too.
    """
    if not follow and not await has_output(js, subject):
        return
    sub = await with_retry(
        lambda: js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL),
        what="output reader",
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_check)
            except (NatsTimeoutError, TimeoutError):
                if not follow or await finished():
                    return
                continue
            if msg.headers and msg.headers.get(END_HEADER):
                return
            if msg.data:
                yield msg.data
            if not follow and _caught_up(msg):
                return
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(*TRANSIENT, NatsError):
            await sub.unsubscribe()


def _caught_up(msg: Msg) -> bool:
    return msg.metadata.num_pending == 0


async def has_output(js: JetStreamContext, subject: str) -> bool:
    """Whether the stream holds anything for this execution (it may have aged out)."""
    try:
        await js.get_last_msg(OUTPUT_STREAM, subject)
    except NotFoundError:
        return False
    return True
