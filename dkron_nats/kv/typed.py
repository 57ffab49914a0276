"""A KV bucket holding one msgspec Struct type, with compare-and-set that reports conflicts as None."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from dkron_nats.models import decode, encode

T = TypeVar("T", bound=msgspec.Struct)
R = TypeVar("R")
logger = logging.getLogger(__name__)

TRANSIENT = (NoStreamResponseError, ServiceUnavailableError, NatsTimeoutError, TimeoutError)
"""What JetStream returns while a stream leader is being elected: retry, do not fail."""


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
    def __init__(self, kv: KeyValue, kind: type[T]) -> None:
        self.kv = kv
        self.kind = kind

    @property
    def bucket(self) -> str:
        return str(self.kv._name)

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
        rev: int = await with_retry(lambda: self.kv.put(key, data))
        return rev

    async def create(self, key: str, value: T) -> int | None:
        """Create the key if absent; None if it exists already."""
        data = encode(value)
        try:
            rev: int = await with_retry(lambda: self.kv.create(key, data))
        except KeyWrongLastSequenceError:
            return None
        return rev

    async def update(self, key: str, value: T, revision: int) -> int | None:
        """Compare-and-set on the revision; None if someone else wrote first."""
        data = encode(value)
        try:
            rev: int = await with_retry(lambda: self.kv.update(key, data, last=revision))
        except KeyWrongLastSequenceError:
            return None
        return rev

    async def swap(self, key: str, value: T, revision: int | None) -> int | None:
        """Compare-and-set against `revision`, where None means "the key must not exist yet"."""
        if revision is None:
            return await self.create(key, value)
        return await self.update(key, value, revision)

    async def delete(self, key: str) -> None:
        await with_retry(lambda: self.kv.delete(key))

    async def scan(self, pattern: str = ">") -> AsyncIterator[tuple[str, T, int]]:
        """Every live key matching `pattern` once, from an ephemeral pull consumer.

        Pull, not a KV watch: a pull consumer delivers nothing before it is asked, so the number of pending
        messages read right after creating it is exact. (nats-py's watch can report "no values" when the
        server has already pushed them but the client has not processed them yet.)
        """
        js = self.kv._js
        stream = f"KV_{self.bucket}"
        prefix = f"$KV.{self.bucket}."
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60,
            mem_storage=True,
        )
        sub = await with_retry(
            lambda: js.pull_subscribe(prefix + pattern, stream=stream, config=config),
            attempts=30,
            what="KV scan",
        )
        try:
            remaining = int(
                (await with_retry(sub.consumer_info, attempts=30, what="KV scan")).num_pending or 0
            )
            while remaining > 0:
                fetch = partial(sub.fetch, min(remaining, 512), timeout=10)
                for msg in await with_retry(fetch, attempts=30, what="KV scan"):
                    remaining = int(msg.metadata.num_pending or 0)
                    if msg.data and not (msg.headers and "KV-Operation" in msg.headers):
                        yield (
                            msg.subject[len(prefix) :],
                            decode(msg.data, self.kind),
                            msg.metadata.sequence.stream,
                        )
        finally:
            with anyio.move_on_after(5, shield=True):
                await _delete_consumer(js, stream, sub)


async def _delete_consumer(js: Any, stream: str, sub: Any) -> None:
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


WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code when a compare-and-set finds another revision."""


async def delete_at(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete `key` if its last revision is still `revision`; False if it has moved on.

    nats-py maps this conflict to KeyWrongLastSequenceError for updates but to a plain APIError (10071)
    for deletes, so both are checked.
    """
    try:
        await kv.delete(key, last=revision)
    except KeyWrongLastSequenceError:
        return False
    except APIError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            return False
        raise
    return True
