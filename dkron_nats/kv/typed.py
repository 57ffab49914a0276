"""A KV bucket holding one msgspec Struct type, with compare-and-set that reports conflicts as None."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import (
    APIError,
    InvalidKeyError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from dkron_nats.kv.publisher import MSG_ID, WRONG_LAST_SEQUENCE_CODES, JsPublisher
from dkron_nats.models import decode, encode

T = TypeVar("T", bound=msgspec.Struct)
R = TypeVar("R")
logger = logging.getLogger(__name__)

_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")
"""The characters of a KV key (nats-py's rule); a key also neither starts nor ends with a dot."""


def _valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None and not key.startswith(".") and not key.endswith(".")


TRANSIENT = (NoStreamResponseError, ServiceUnavailableError, NatsTimeoutError, TimeoutError)
"""What JetStream returns while a stream leader is being elected: retry, do not fail."""
LOST_REQUEST_TIMEOUT = 1.0
"""For a JetStream API request worth sending again rather than waiting for: one sent as a stream or meta
leader moved (right after a NATS node died) gets no answer at all, and nats-py waits 5 s by default."""


async def with_retry(op: Callable[[], Awaitable[R]], *, attempts: int = 8, what: str = "KV write") -> R:
    """Retry an idempotent or compare-and-set operation through a JetStream leader election."""
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except TRANSIENT:
            if attempt == attempts:
                raise
            logger.warning("%s failed (JetStream unavailable), retrying in %.1fs", what, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


class TypedKV(Generic[T]):
    """Typed reads and writes of one bucket; writes go through `publisher` (pipelined) when one is given,
    else through nats-py's KV calls, with the same results and exceptions either way."""

    def __init__(self, kv: KeyValue, kind: type[T], publisher: JsPublisher | None = None) -> None:
        self.kv = kv
        self.kind = kind
        self.publisher = publisher

    @property
    def bucket(self) -> str:
        return str(self.kv._name)

    def _subject(self, key: str) -> str:
        if not _valid_key(key):
            raise InvalidKeyError(key)
        return f"{self.kv._pre}{key}"

    async def get(self, key: str) -> tuple[T, int] | None:
        try:
            entry = await with_retry(lambda: self.kv.get(key), what="KV read")
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.operation is not None:
            return None
        return decode(entry.value, self.kind), int(entry.revision or 0)

    async def put(self, key: str, value: T) -> int:
        data = encode(value)
        if (publisher := self.publisher) is None:
            rev: int = await with_retry(lambda: self.kv.put(key, data))
            return rev
        publish, subject = publisher.publish, self._subject(key)
        # No Msg-Id: a resend after a lost ack at worst stores the same value twice (history is 1).
        return (await with_retry(lambda: publish(subject, data))).seq

    async def create(self, key: str, value: T) -> int | None:
        """Create the key if absent or deleted (a delete marker counts as absent); None if it exists."""
        data = encode(value)
        if (publisher := self.publisher) is None:
            try:
                rev: int = await with_retry(lambda: self.kv.create(key, data))
            except KeyWrongLastSequenceError:
                return None
            return rev
        created = await self._write_if(publisher, key, data, 0)
        if created is not None:
            return created
        marker = await self._marker_revision(key)
        return None if marker is None else await self._write_if(publisher, key, data, marker)

    async def create_only(self, key: str, value: T) -> int | None:
        """Create the key only if it has no message at all: None if it exists, and also if it was deleted
        (a delete marker stays), so a deleted key is never created again (unlike nats-py's kv.create)."""
        data = encode(value)
        if (publisher := self.publisher) is None:
            try:
                rev: int = await with_retry(lambda: self.kv.update(key, data, last=0))
            except KeyWrongLastSequenceError:
                return None
            return rev
        return await self._write_if(publisher, key, data, 0)

    async def update(self, key: str, value: T, revision: int) -> int | None:
        """Compare-and-set on the revision; None if someone else wrote first."""
        data = encode(value)
        if (publisher := self.publisher) is None:
            try:
                rev: int = await with_retry(lambda: self.kv.update(key, data, last=revision))
            except KeyWrongLastSequenceError:
                return None
            return rev
        return await self._write_if(publisher, key, data, revision)

    async def swap(self, key: str, value: T, revision: int | None) -> int | None:
        """Compare-and-set against `revision`, where None means "the key must not exist yet"."""
        if revision is None:
            return await self.create(key, value)
        return await self.update(key, value, revision)

    async def _write_if(self, publisher: JsPublisher, key: str, data: bytes, last: int) -> int | None:
        """Write if the key's last revision is `last` (0: the key has no message); None if it is not.

        A resend after a lost ack is refused like a conflict when the first copy was stored: JetStream
        checks the expected revision before the Msg-Id. So a resend that is refused looks at the key's
        last message: if it carries this write's Msg-Id, the write is stored, and that is its revision.
        """
        publish, subject, msg_id = publisher.publish, self._subject(key), publisher.new_msg_id()
        sent = 0

        async def once() -> int | None:
            nonlocal sent
            sent += 1
            try:
                return (await publish(subject, data, msg_id=msg_id, expected_last_subject_seq=last)).seq
            except KeyWrongLastSequenceError:
                return await self._revision_written_as(subject, msg_id) if sent > 1 else None

        return await with_retry(once)

    async def _revision_written_as(self, subject: str, msg_id: str) -> int | None:
        """The revision of the key's last message if that message was written with `msg_id`."""
        try:
            last = await self.kv._js.get_msg(self.kv._stream, subject=subject, direct=self.kv._direct)
        except NotFoundError:
            return None
        return int(last.seq or 0) if (last.headers or {}).get(MSG_ID) == msg_id else None

    async def _marker_revision(self, key: str) -> int | None:
        """The revision of the key's delete or purge marker; None if the key holds a value (or nothing)."""
        try:
            await with_retry(lambda: self.kv._get(key), what="KV read")
        except KeyDeletedError as deleted:
            return int(deleted.entry.revision or 0)
        except KeyNotFoundError:
            return None
        return None

    async def delete(self, key: str) -> None:
        await with_retry(lambda: self.kv.delete(key))

    async def scan(self, pattern: str = ">") -> AsyncIterator[tuple[str, T, int]]:
        """Every live key matching `pattern` once (`read_to_end`: exact, unlike a KV watch)."""
        prefix = f"$KV.{self.bucket}."
        messages = read_to_end(
            self.kv._js, f"KV_{self.bucket}", prefix + pattern, DeliverPolicy.LAST_PER_SUBJECT
        )
        async for msg in messages:
            if msg.data and not (msg.headers and "KV-Operation" in msg.headers):
                yield msg.subject[len(prefix) :], decode(msg.data, self.kind), msg.metadata.sequence.stream


async def read_to_end(
    js: Any, stream: str, subject: str, deliver: DeliverPolicy, start_seq: int | None = None
) -> AsyncIterator[Msg]:
    """The stream's messages on `subject` as they are now, from an ephemeral pull consumer (deleted after).

    Pull, not a push consumer or a KV watch: a pull consumer delivers nothing before it is asked, so the
    number of pending messages read right after creating it is exact. (nats-py's watch can report "no
    values" when the server has already pushed them but the client has not processed them yet.)"""
    config = ConsumerConfig(
        deliver_policy=deliver,
        opt_start_seq=start_seq,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60,
        mem_storage=True,
    )
    sub = await with_retry(
        lambda: js.pull_subscribe(subject, stream=stream, config=config), attempts=30, what=f"{stream} read"
    )
    try:
        remaining = int(
            (await with_retry(sub.consumer_info, attempts=30, what=f"{stream} read")).num_pending or 0
        )
        while remaining > 0:
            fetch = partial(sub.fetch, min(remaining, 512), timeout=10)
            for msg in await with_retry(fetch, attempts=30, what=f"{stream} read"):
                remaining = int(msg.metadata.num_pending or 0)
                yield msg
    finally:
        with anyio.move_on_after(5, shield=True):
            name = (await sub.consumer_info()).name
            await sub.unsubscribe()
            await js._jsm.delete_consumer(stream, name)


def decode_entry(kind: type[T], value: bytes | None) -> T | None:
    if not value:
        return None
    try:
        return decode(value, kind)
    except msgspec.DecodeError:
        logger.exception("undecodable value in a %s bucket", kind.__name__)
        return None


Listener = Callable[[str, Any], None]


async def delete_at(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete `key` if its last revision is still `revision`; False if it has moved on.

    nats-py maps this conflict to KeyWrongLastSequenceError for updates but to a plain APIError for deletes
    (10071, or 10164 from newer servers), so all are checked.
    """
    try:
        await kv.delete(key, last=revision)
    except KeyWrongLastSequenceError:
        return False
    except APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE_CODES:
            return False
        raise
    return True
