"""Pipelined JetStream publishes: core publishes whose acks all come back to one shared inbox subscription.

`js.publish` makes a request per message (a future, an inbox token and a timeout wrapper each), which costs
~120 µs of Python one at a time and ~30 µs with 64 in flight. Here a publish is a core publish with a reply
subject under one wildcard subscription of this node's inbox, a future in a dict, and a shared clock for
timeouts: ~10 µs. At most `window` publishes are in flight; more wait for room.

Errors are the ones nats-py raises for the same write, so callers keep their `except` clauses: a
compare-and-set or create-only refusal is `KeyWrongLastSequenceError`, no stream is `NoStreamResponseError`,
no ack in time is nats' `TimeoutError`. A publish sent on a connection that has since been lost fails at once
with `AckLostError` (a `TimeoutError`): its ack cannot arrive any more. A resend with the same `Nats-Msg-Id`
is answered as a duplicate if the first copy was stored, except for a conditional write: JetStream checks
the expected revision before the Msg-Id, so TypedKV looks for its Msg-Id on the key instead (kv/typed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyWrongLastSequenceError, NoStreamResponseError

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE_CODES = (10071, 10164)
"""JetStream's refusal of a write whose subject's last sequence is not the expected one (10164: the same,
reported without the sequence)."""
NO_RESPONDERS = "503"
DEFAULT_WINDOW = 256
DEFAULT_TIMEOUT = 5.0
CHECK_INTERVAL = 0.1
"""How often timeouts and lost connections are looked for (only one clock task for all publishes)."""


class AckLostError(NatsTimeoutError):
    """The connection a publish went out on was lost before its ack came back: resend it (same Msg-Id)."""

    def __str__(self) -> str:
        return "nats: JetStream publish not acknowledged: the NATS connection was lost (resend it)"


class Ack(msgspec.Struct, frozen=True):
    """JetStream's answer to a stored publish: the stream and its sequence (a KV key's revision)."""

    stream: str
    seq: int
    duplicate: bool = False
    """The Msg-Id was stored before (a resend after a lost ack): it is stored once, at `seq`."""


class ApiError(msgspec.Struct):
    """The error of a refused JetStream request."""

    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    """JetStream's answer to a publish: the stored sequence, or the error."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_decode_reply = msgspec.json.Decoder(PubAck).decode


@dataclass(slots=True)
class _InFlight:
    future: asyncio.Future[Msg]
    deadline: float
    connection: int
    """Which connection of the client it goes out on (0: the first, 1 after the first reconnect, ...)."""


class JsPublisher:
    """Started in the node's task group with `await tg.start(publisher.run)`; then `publish` may be called
    from any task until that group ends (publishes still waiting then fail with AckLostError)."""

    def __init__(
        self, nc: Client, *, window: int = DEFAULT_WINDOW, ack_timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._nc = nc
        self._window = window
        self._timeout = ack_timeout
        self._prefix = ""
        """`<inbox>.`: replies come to `<inbox>.<n>`, all read by one `<inbox>.*` subscription."""
        self._tokens = itertools.count()
        self._ids = itertools.count()
        self._id_prefix = ""
        self._in_flight: dict[str, _InFlight] = {}
        self._room: anyio.Event | None = None
        self._running = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read the acks until cancelled: one subscription in this client's inbox (`_INBOX.<node>.<id>.*`,
        within the node's NATS permissions) and one clock for every publish's timeout."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox + ".*", cb=self._on_reply)
        self._prefix, self._id_prefix = inbox + ".", inbox.rpartition(".")[2] + "-"
        self._running = True
        try:
            task_status.started()
            while True:
                await anyio.sleep(CHECK_INTERVAL)
                self._expire(time.monotonic(), self._connection_of_next_write())
        finally:
            self._close()
            with anyio.move_on_after(2, shield=True), contextlib.suppress(NatsError):
                await sub.unsubscribe()  # fails only when the connection is closed: nothing to undo then

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def new_msg_id(self) -> str:
        """A `Nats-Msg-Id` for one logical write: pass the same one to every resend of that write."""
        return f"{self._id_prefix}{next(self._ids)}"

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        expected_last_subject_seq: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Ack:
        """Store `payload` on `subject`; with `expected_last_subject_seq`, only if the subject's last
        message has that sequence (0: none, i.e. create-only, refused over a delete marker too)."""
        while len(self._in_flight) >= self._window:
            await self._wait_for_room()
        if not self._running:
            raise AckLostError  # not started, or its task group has ended
        hdrs = dict(headers) if headers else {}
        if msg_id is not None:
            hdrs[MSG_ID] = msg_id
        if expected_last_subject_seq is not None:
            hdrs[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_last_subject_seq)
        reply = f"{self._prefix}{next(self._tokens)}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        deadline = time.monotonic() + self._timeout
        self._in_flight[reply] = _InFlight(future, deadline, self._connection_of_next_write())
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=hdrs or None)
        except BaseException:
            self._forget(reply)
            raise
        return _ack_of(await future)

    def _connection_of_next_write(self) -> int:
        reconnects = int(self._nc.stats["reconnects"])
        return reconnects if self._nc.is_connected else reconnects + 1  # buffered until reconnected

    async def _wait_for_room(self) -> None:
        if self._room is None:
            self._room = anyio.Event()
        await self._room.wait()

    def _forget(self, reply: str) -> _InFlight | None:
        entry = self._in_flight.pop(reply, None)
        if self._room is not None and len(self._in_flight) < self._window:
            self._room.set()
            self._room = None
        return entry

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._forget(msg.subject)
        if entry is not None and not entry.future.done():  # not timed out, nor its caller cancelled
            entry.future.set_result(msg)

    def _fail(self, reply: str, error: Exception) -> None:
        entry = self._forget(reply)
        if entry is not None and not entry.future.done():
            entry.future.set_exception(error)

    def _expire(self, now: float, live_connection: int) -> None:
        # In-flight publishes are in the order they were sent, so in deadline order (one timeout for all).
        expired = list(itertools.takewhile(lambda r: self._in_flight[r].deadline <= now, self._in_flight))
        for reply in expired:
            self._fail(reply, NatsTimeoutError())
        lost = [r for r, e in self._in_flight.items() if e.connection < live_connection]
        for reply in lost:
            self._fail(reply, AckLostError())

    def _close(self) -> None:
        self._running = False
        for reply in list(self._in_flight):
            self._fail(reply, AckLostError())
        if self._room is not None:
            self._room.set()


def _ack_of(msg: Msg) -> Ack:
    if not msg.data and msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
        raise NoStreamResponseError
    try:
        reply = _decode_reply(msg.data)
    except msgspec.DecodeError:
        raise APIError(description=f"not a JetStream publish answer: {msg.data[:80]!r}") from None
    if reply.error is not None:
        raise api_error(reply.error)
    return Ack(reply.stream, reply.seq, reply.duplicate)


def api_error(error: ApiError) -> APIError:
    """The exception nats-py raises for this error: kv.create/update's for a wrong last sequence, else
    js.publish's (by HTTP-like code: ServiceUnavailableError, BadRequestError, ...)."""
    if error.err_code in WRONG_LAST_SEQUENCE_CODES:
        refused = KeyWrongLastSequenceError(description=error.description)
        refused.code, refused.err_code = error.code, error.err_code
        return refused
    try:
        APIError.from_error(
            {"code": error.code, "err_code": error.err_code, "description": error.description}
        )
    except APIError as exc:
        return exc
    raise AssertionError("APIError.from_error always raises")


def publish_call(
    publisher: JsPublisher | None, js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str]
) -> Callable[[], Awaitable[object]]:
    """One JetStream publish, to give `with_retry`: through the node's pipelined publisher when it has one
    (the same exceptions either way), else through nats-py's."""
    if publisher is not None:
        return functools.partial(publisher.publish, subject, payload, headers=headers)
    return functools.partial(js.publish, subject, payload, headers=headers)
