"""A bounded buffer for each Server-Sent Events client, so a client that stops reading costs at most 1 MiB.

`BoundedStream` is the middleware of the SSE routes (`/v1/events`, live output). Once a response turns out
to be `text/event-stream`, what the route sends goes into a queue of its own and a writer task passes it on
to the client as fast as the client reads; the route never waits for a slow client (its NATS subscription
would fill up instead). When more than `limit` bytes wait in the queue, the queue is dropped, the route is
told the client left (it ends and unsubscribes), and the client gets one last event,
`event: error` / `data: {"error": "client too slow: ..."}`, after what it already has, and the end of the
stream. A client that reads nothing at all is cut off by the server's write timeout (`http/server.py`).
Other responses of these routes (the plain-text output) pass straight through.
"""

from __future__ import annotations

import logging
from collections import deque

import anyio
import msgspec
from anyio.abc import TaskGroup

from dkron_nats.http.middleware import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

LIMIT = 1 << 20
"""Bytes of events one client may have waiting."""
DISCONNECT: Message = {"type": "http.disconnect"}


def too_slow_event(limit: int) -> bytes:
    error = f"client too slow: more than {_size(limit)} of events were waiting for it; the stream is closed"
    return b"event: error\r\ndata: " + msgspec.json.encode({"error": error}) + b"\r\n\r\n"


class BoundedStream:
    """Route middleware: SSE responses go through a per-client queue of at most `limit` bytes."""

    limit = LIMIT

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with anyio.create_task_group() as tg:
            relay = _Relay(scope, send, tg, self.limit)
            try:
                await self.app(scope, relay.receive(receive), relay.send)
            finally:
                relay.close()


class _Relay:
    def __init__(self, scope: Scope, send: Send, tg: TaskGroup, limit: int) -> None:
        self.scope = scope
        self._send = send
        self._tg = tg
        self._limit = limit
        self._streaming = False
        self._queue: deque[Message] = deque()
        self._size = 0
        self._closed = False
        self._more = anyio.Event()
        self.cut = anyio.Event()

    async def send(self, message: Message) -> None:
        if not self._streaming:
            if message["type"] == "http.response.start" and _is_event_stream(message):
                self._streaming = True
                self._tg.start_soon(self._write)
            await self._send(message)
            return
        if self.cut.is_set():
            return
        self._queue.append(message)
        self._size += len(message.get("body", b""))
        if self._size > self._limit:
            self._cut_off()
        self._more.set()

    def receive(self, receive: Receive) -> Receive:
        """The route's `receive`, which also says the client left once it is cut off."""

        async def guarded() -> Message:
            if self.cut.is_set():
                return DISCONNECT
            found = DISCONNECT
            async with anyio.create_task_group() as tg:

                async def real() -> None:
                    nonlocal found
                    found = await receive()
                    tg.cancel_scope.cancel()

                tg.start_soon(real)
                await self.cut.wait()
                tg.cancel_scope.cancel()
            return found

        return guarded

    def close(self) -> None:
        """The route is done: the writer sends what is queued, then stops."""
        self._closed = True
        self._more.set()

    def _cut_off(self) -> None:
        client = self.scope.get("client")
        logger.warning(
            "cut off a slow event-stream client %s (%s): more than %s waited for it",
            client[0] if client else "?",
            self.scope.get("path"),
            _size(self._limit),
        )
        farewell = too_slow_event(self._limit)
        self._queue.clear()
        self._queue.append({"type": "http.response.body", "body": farewell, "more_body": False})
        self._size = len(farewell)
        self.cut.set()

    async def _write(self) -> None:
        """Pass the queue on until the response's last message (the route's, or the farewell)."""
        while True:
            while not self._queue:
                if self._closed:  # the route stopped without ending the response: the client left
                    await self._send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                await self._more.wait()
                self._more = anyio.Event()
            message = self._queue.popleft()
            self._size -= len(message.get("body", b""))
            await self._send(message)
            if not message.get("more_body", False):
                return


def _is_event_stream(message: Message) -> bool:
    for key, value in message.get("headers", []):
        if key.lower() == b"content-type":
            return bytes(value).startswith(b"text/event-stream")
    return False


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and limit % (1 << 20) == 0 else f"{limit} bytes"
