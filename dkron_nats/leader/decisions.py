"""The decision log: each job's last decided slot, as one compare-and-set chain per partition.

The scheduler records every decision (a job's new launch cursor) here *before* acting on it. Decisions made
while an append is in flight wait and go out together in the next one (group commit), so a tick that decides
a thousand jobs costs a handful of writes, not a thousand, and no decision waits for more than one append.

Every append names the log's last sequence (`Nats-Expected-Last-Subject-Sequence`), so the log is a chain
that only one writer can extend. A new leader first reads the whole log, then appends a `takeover` batch:
from then on every append of an earlier leader is refused, whatever its clock says, and a decision that
landed before the takeover was read with the rest and is concluded by the new leader. (Until 0.1.x each job
had its own cursor key, which fenced a job only once the new leader had written that job's cursor: a paused
leader that woke up could still land decisions for the others.)

Every few thousand decisions the log restates every live cursor (`checkpoint`) and purges what came before,
so a takeover reads about two cursors per job at most. Every server keeps reading the log while another one
leads (`LogTail`), so a takeover reads only the last moment's appends, by direct message gets: right after
the leader's death, creating a consumer waits for the JetStream meta leader's election, a get does not.
The cursors of 0.1.x (KV `dkron-cursors`) are merged in at a takeover, newest slot wins, and their bucket
is then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from dkron_nats.errors import LeadershipLostError
from dkron_nats.failpoints import stall_point
from dkron_nats.kv.buckets import DECISIONS_STREAM, LEGACY_CURSORS
from dkron_nats.kv.publisher import MSG_ID, JsPublisher
from dkron_nats.kv.typed import TRANSIENT, TypedKV, read_to_end, with_retry
from dkron_nats.metrics import DECISION_APPENDS, DECISIONS
from dkron_nats.models import DecisionBatch, LaunchCursor, decode, encode
from dkron_nats.subjects import ALL_DECISIONS, decisions_subject

logger = logging.getLogger(__name__)
BATCH_BYTES = 256 * 1024
"""About the most one append carries: well under NATS's default 1 MB message limit on any server (a cursor
is ~150 bytes, but one that records 100 missed slots of a job with many targets is a few KB)."""
CHECKPOINT_AFTER = 4096
"""Cursors appended since the last checkpoint before the next one (at least twice the live cursors)."""
FOLLOW_INTERVAL = 1.0
"""How often a server that does not lead reads what was appended to the log since it last looked."""
_writers = itertools.count()


class LogTail:
    """A server's own copy of one partition's log (each job's last cursor, the last sequence), read as the
    log grows while another server leads and handed to this server's `DecisionLog` when it takes over."""

    def __init__(self, js: JetStreamContext, partition: int = 0) -> None:
        self.js = js
        self.subject = decisions_subject(partition)
        self.cursors: dict[str, LaunchCursor] = {}
        self.last_seq = 0
        self.warm = False
        """Read to the end at least once: a takeover needs only the appends since, by message gets."""
        self.no_legacy = False
        """The cursors of 0.1.x are known to be gone: a takeover need not look for them."""
        self.leading = False
        """This server's leader session writes the log: nothing to follow meanwhile."""
        self.behind = False
        """Handed back by a leader session: appends another leader made meanwhile may not be read yet."""

    async def catch_up(self) -> None:
        """Read every batch appended after `last_seq` (after a purge, the checkpoint that restates all)."""
        while True:
            try:
                msg = await self.js.get_msg(
                    DECISIONS_STREAM, seq=self.last_seq + 1, subject=self.subject, next=True
                )
            except NotFoundError:
                return
            seq = int(msg.seq or 0)
            if seq <= self.last_seq:  # a stale answer from a replica: never read backwards
                return
            self.apply(seq, msg.data or b"")

    async def read_rest(self) -> None:
        """Read every batch after `last_seq` through one consumer: fast for a whole log read cold."""
        async for msg in read_to_end(
            self.js, DECISIONS_STREAM, self.subject, DeliverPolicy.BY_START_SEQUENCE, self.last_seq + 1
        ):
            self.apply(msg.metadata.sequence.stream, msg.data)
        self.warm = True

    def apply(self, seq: int, data: bytes) -> None:
        self.cursors.update(decode(data, DecisionBatch).cursors)
        self.last_seq = seq

    def hand_back(self, cursors: dict[str, LaunchCursor], last_seq: int) -> None:
        """The log as a leader session of this server left it: followed from there on."""
        self.cursors, self.last_seq, self.leading, self.behind = dict(cursors), last_seq, False, True


class LogTails:
    """Every partition's `LogTail`, followed by one reader. An ordered consumer pushes each append as it
    lands (a pushed message costs a fraction of a get); a round every FOLLOW_INTERVAL reads by gets whatever
    the consumer has not delivered (none, unless it stalled), what another leader appended to a partition
    this server led meanwhile, and looks once whether 0.1.x's cursors are there."""

    def __init__(self, js: JetStreamContext, partitions: int) -> None:
        self.js = js
        self.tails = [LogTail(js, partition) for partition in range(partitions)]
        self._by_subject = {tail.subject: tail for tail in self.tails}
        self.read_seq = 0
        """Every append up to here was read (and given to its tail unless that tail led)."""

    def __getitem__(self, partition: int) -> LogTail:
        return self.tails[partition]

    async def follow(self) -> None:
        await self.read_round()  # the log so far, by gets
        sub = await with_retry(
            lambda: self.js.subscribe(
                ALL_DECISIONS,
                stream=DECISIONS_STREAM,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.read_seq + 1
                ),
                cb=self._pushed,
            ),
            attempts=60,
            what="decision log follower",
        )
        try:
            while True:
                await anyio.sleep(FOLLOW_INTERVAL)
                await self.read_round()
        finally:
            with anyio.move_on_after(2, shield=True), contextlib.suppress(NatsError):
                await sub.unsubscribe()

    async def _pushed(self, msg: Msg) -> None:
        self._read(msg.metadata.sequence.stream, msg.subject, msg.data)

    def _read(self, seq: int, subject: str, data: bytes) -> None:
        """The append at `seq`, read by the consumer or by a get: whichever comes second is ignored."""
        if seq <= self.read_seq:
            return
        self.read_seq = seq
        owner = self._by_subject.get(subject)
        if owner is not None and not owner.leading and seq > owner.last_seq:
            owner.apply(seq, data)

    async def read_round(self) -> None:
        """Give each partition's tail what was appended since the last round (unless this server leads it)."""
        following = [tail for tail in self.tails if not tail.leading]
        if not following:
            return
        try:
            await self._catch_up(following)
            no_legacy = not await _has_legacy_cursors(self.js)
        except NatsError as exc:  # JetStream busy: read again in the next round
            no_legacy = False
            logger.debug("could not follow the decision logs: %s", exc)
        else:
            for tail in following:
                tail.warm = True
        for tail in following:
            # Looked at every round: a 0.1.x leader of a rolling upgrade may make the bucket.
            tail.no_legacy = no_legacy

    async def _catch_up(self, following: list[LogTail]) -> None:
        for tail in following:
            if tail.behind:  # its own subject, from where its leader session left it
                tail.behind = False
                await tail.catch_up()
        while True:
            try:
                msg = await self.js.get_msg(
                    DECISIONS_STREAM, seq=self.read_seq + 1, subject=ALL_DECISIONS, next=True
                )
            except NotFoundError:
                return
            seq = int(msg.seq or 0)
            if seq <= self.read_seq:  # a stale answer from a replica, or pushed meanwhile
                return
            self._read(seq, msg.subject or "", msg.data or b"")


@dataclass(slots=True)
class _Pending:
    key: str
    cursor: LaunchCursor
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class DecisionLog:
    """One partition's log. `open` it when leadership starts, run `run` in the scheduler's task group, then
    `record` decisions from any task; `cursors` is the map they build (job key -> last decided cursor)."""

    def __init__(
        self,
        js: JetStreamContext,
        publisher: JsPublisher,
        *,
        ensure_leader: Callable[[], None],
        is_live: Callable[[str], bool] = lambda key: True,
        partition: int = 0,
        checkpoint_after: int = CHECKPOINT_AFTER,
        tail: LogTail | None = None,
    ) -> None:
        self.js = js
        self.publisher = publisher
        self.ensure_leader = ensure_leader
        """Checked right before every append: a leader past its lease does not even try."""
        self.is_live = is_live
        """Whether a job key still names a job: a checkpoint leaves the cursors of deleted jobs out."""
        self.subject = decisions_subject(partition)
        self._decided = DECISIONS.labels(str(partition))
        self._appended = DECISION_APPENDS.labels(str(partition))
        self.checkpoint_after = checkpoint_after
        self.tail = tail or LogTail(js, partition)
        """This server's copy of the log, read while another server led (if it was: else at takeover)."""
        self.cursors: dict[str, LaunchCursor] = {}
        self.fence = 0
        self.last_seq = 0
        """The sequence of the log's last message as this leader knows it: the next append expects it."""
        self.appends = 0
        """Appends this leader made (a group commit is one): the figure that shows batching works."""
        self._writer = f"{os.getpid()}-{next(_writers)}"
        self._msg_ids = itertools.count()
        self._pending: list[_Pending] = []
        self._has_pending = anyio.Event()
        self._since_checkpoint = 0
        self._deposed = False

    # -- taking over ---------------------------------------------------------------------------

    async def open(self, fence: int) -> None:
        """Read the log, merge 0.1.x's cursors if any, and append the takeover batch that fences every
        earlier leader. Decisions an earlier leader appended before it are in `cursors` when this returns."""
        self.fence = fence
        tail = self.tail
        tail.leading = True
        if tail.warm:
            await with_retry(tail.catch_up, attempts=30, what="decision log read")
        else:
            await tail.read_rest()
        self.cursors, self.last_seq = dict(tail.cursors), tail.last_seq
        legacy = None if tail.no_legacy else await _legacy_cursors(self.js)
        newer = (
            {}
            if legacy is None
            else {
                k: c
                for k, c in legacy.items()
                if k not in self.cursors or c.slot_ns > self.cursors[k].slot_ns
            }
        )
        while True:
            try:
                await self._append(DecisionBatch(fence=fence, kind="takeover"))
                break
            except KeyWrongLastSequenceError:  # another leader appended meanwhile: read it too
                await tail.read_rest()
                self.cursors, self.last_seq = dict(tail.cursors), tail.last_seq
        if newer:
            logger.info("moving %d launch cursors of an earlier version into the decision log", len(newer))
            await self._append_all(newer, "checkpoint")
        if legacy is not None:
            await _delete_legacy_cursors(self.js)
        logger.info(
            "decision log %s taken over at sequence %d with %d cursors",
            self.subject,
            self.last_seq,
            len(self.cursors),
        )

    def close(self) -> None:
        """This leader session is over: this server follows the log again from where it left it."""
        self.tail.hand_back(self.cursors, self.last_seq)

    # -- appending -----------------------------------------------------------------------------

    async def record(self, key: str, cursor: LaunchCursor) -> None:
        """Append the decision (with whatever else is waiting); return once it is stored.

        Raises LeadershipLostError if this leader was fenced (a newer leader appended)."""
        if self._deposed:
            raise LeadershipLostError
        pending = _Pending(key, cursor)
        self._pending.append(pending)
        self._has_pending.set()
        await pending.done

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The one writer: appends what is pending, one append at a time (the chain allows no other)."""
        task_status.started()
        try:
            while True:
                await self._has_pending.wait()
                self._has_pending = anyio.Event()
                while self._pending:
                    pending, self._pending = self._pending, []
                    await self._commit({p.key: p for p in pending})
                if self._since_checkpoint >= max(self.checkpoint_after, 2 * len(self.cursors)):
                    await self._checkpoint()
        finally:
            _settle(self._pending, LeadershipLostError())

    async def _commit(self, pending: dict[str, _Pending]) -> None:
        """Append what is pending (in several appends if it is large) and wake each caller once its own
        decision is stored, or has failed."""
        batch = DecisionBatch(fence=self.fence, cursors={key: p.cursor for key, p in pending.items()})
        parts = _fitting(batch)
        for done, (part, payload) in enumerate(parts, 1):
            waiting = [pending[key] for key in part.cursors]
            try:
                await self._append(part, payload)
            except KeyWrongLastSequenceError:
                self._deposed = True
                logger.warning(
                    "a newer leader appended to %s: this leader's decisions are refused", self.subject
                )
                later = [pending[key] for rest, _ in parts[done:] for key in rest.cursors]
                _settle([*waiting, *later, *self._pending], LeadershipLostError())
                self._pending = []
                return
            except (LeadershipLostError, NatsError) as exc:  # the lease lapsed, or JetStream refused it
                _settle(waiting, exc)
                continue
            self._since_checkpoint += len(waiting)
            self._decided.inc(len(waiting))
            _settle(waiting, None)

    async def _append(self, batch: DecisionBatch, payload: bytes | None = None) -> None:
        """One compare-and-set append (`payload`: the batch encoded, if it was already), resent with the same
        Msg-Id until stored or the lease lapses.

        A resend after a lost ack is refused like a foreign append (JetStream checks the expected sequence
        before the Msg-Id), so a refused resend looks for its own Msg-Id at the end of the log first."""
        payload = payload or encode(batch)
        msg_id, sent, delay = f"{self._writer}-{next(self._msg_ids)}", 0, 0.1
        while True:
            self.ensure_leader()
            stall_point("before-decision-append")  # after the lease check: the window a paused leader hits
            sent += 1
            try:
                self.last_seq = await self._publish_once(payload, msg_id, resend=sent > 1)
            except TRANSIENT:
                logger.warning("decision log %s unavailable (JetStream election?); retrying", self.subject)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.appends += 1
            self._appended.inc()
            self.cursors.update(batch.cursors)
            return

    async def _publish_once(self, payload: bytes, msg_id: str, resend: bool) -> int:
        try:
            ack = await self.publisher.publish(
                self.subject, payload, msg_id=msg_id, expected_last_subject_seq=self.last_seq
            )
        except KeyWrongLastSequenceError:
            stored = await self._stored_as(msg_id) if resend else None
            if stored is None:
                raise
            return stored
        return ack.seq

    async def _stored_as(self, msg_id: str) -> int | None:
        """The sequence of the log's last message if this leader wrote it as `msg_id`."""
        try:
            last = await self.js.get_msg(DECISIONS_STREAM, subject=self.subject)
        except NotFoundError:
            return None
        return int(last.seq or 0) if (last.headers or {}).get(MSG_ID) == msg_id else None

    async def _append_all(self, cursors: dict[str, LaunchCursor], kind: str) -> int:
        """Append `cursors` in appends of at most about BATCH_BYTES; the sequence of the first."""
        first = 0
        for part, payload in _fitting(DecisionBatch(fence=self.fence, kind=kind, cursors=cursors)):
            await self._append(part, payload)
            first = first or self.last_seq
        return first

    async def _checkpoint(self) -> None:
        """Restate every live cursor, then purge what came before: the log stays about a cursor per job."""
        live = {key: cursor for key, cursor in self.cursors.items() if self.is_live(key)}
        self.ensure_leader()
        first = await self._append_all(live, "checkpoint")
        self.cursors = live
        self._since_checkpoint = 0
        await with_retry(
            lambda: self.js.purge_stream(DECISIONS_STREAM, subject=self.subject, seq=first),
            what="decision log purge",
        )
        logger.debug(
            "decision log %s checkpointed: %d cursors from sequence %d", self.subject, len(live), first
        )


def _fitting(batch: DecisionBatch) -> list[tuple[DecisionBatch, bytes]]:
    """The batch with its encoding, or, when that is over BATCH_BYTES, its halves (and so on): the usual
    batch is encoded once, and only a rare large one again for each cut."""
    payload = encode(batch)
    if len(payload) <= BATCH_BYTES or len(batch.cursors) <= 1:
        return [(batch, payload)]
    items = list(batch.cursors.items())
    half = len(items) // 2
    return [
        fitted
        for part in (items[:half], items[half:])
        for fitted in _fitting(msgspec.structs.replace(batch, cursors=dict(part)))
    ]


def _settle(waiting: list[_Pending], error: BaseException | None) -> None:
    """Wake the callers of `record` (a caller that was cancelled meanwhile is not waiting any more)."""
    for pending in waiting:
        if pending.done.done():
            continue
        if error is None:
            pending.done.set_result(None)
        else:
            pending.done.set_exception(error)


async def _legacy_bucket(js: JetStreamContext) -> KeyValue | None:
    """The bucket of the per-job cursors 0.1.x kept (KV `dkron-cursors`); None if it is gone."""
    try:
        return await js.key_value(LEGACY_CURSORS)
    except (BucketNotFoundError, NotFoundError):
        return None


async def _has_legacy_cursors(js: JetStreamContext) -> bool:
    return await _legacy_bucket(js) is not None


async def _legacy_cursors(js: JetStreamContext) -> dict[str, LaunchCursor] | None:
    kv = await _legacy_bucket(js)
    if kv is None:
        return None
    return {key: cursor async for key, cursor, _ in TypedKV(kv, LaunchCursor).scan()}


async def _delete_legacy_cursors(js: JetStreamContext) -> None:
    try:
        await js.delete_key_value(LEGACY_CURSORS)
    except (BucketNotFoundError, NotFoundError):
        return
    logger.info("deleted the bucket %s: its cursors are in the decision log now", LEGACY_CURSORS)
