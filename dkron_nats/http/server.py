"""The HTTP server below the ASGI app: uvicorn's h11 protocol with the limits uvicorn 0.55 does not have.

- **Header deadline.** A request's headers must be complete `header_timeout` seconds after its first byte
  (for a new connection: after it opened), else the connection is closed. uvicorn's `timeout_keep_alive`
  only runs between requests and stops at the first byte, so without this a client that sends part of a
  request line and then nothing holds its connection for ever (slowloris).
- **Connection limit.** With `max_connections` open, a new connection makes room by closing the oldest one
  that has no request in progress (half-open, or idle between requests); when every one is busy with a
  request, the new one is answered 503 and closed. uvicorn's `limit_concurrency` is not used: it counts
  half-open connections too and answers 503 to every real request while they are held.
- **Write deadline.** A client that takes nothing of a response for `write_timeout` seconds (the socket's
  buffers stay full) is cut off, so a stalled reader does not hold its connection and buffers for ever.
- Headers are at most `MAX_HEADER_BYTES` (h11's incomplete-event limit; more is a 400).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE = 5
"""Seconds an idle connection is kept open between requests (uvicorn's default)."""
_BUSY_TEXT = b"every connection is busy with a request (--http-max-connections); try again later"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"retry-after: 1\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout: float = 10.0
    max_connections: int = 1000
    write_timeout: float = 60.0


class GuardedH11Protocol(H11Protocol):
    """One connection. `limits`, `_open` and `_idle` are set per server by `protocol_for`."""

    limits: ClassVar[HttpLimits]
    _open: ClassVar[set[GuardedH11Protocol]]
    _idle: ClassVar[dict[GuardedH11Protocol, None]]
    """Connections with no request in progress, oldest first: the ones closed to make room."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self._open) >= self.limits.max_connections and not self._make_room():
            self.transport.write(BUSY)
            self.transport.close()
            return
        self._open.add(self)
        self._idle[self] = None
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:  # a new request begins
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        _cancel(self._write_timer)
        self._write_timer = None

    def _follow_request(self) -> None:
        """Keep `_idle` and the header timer in step with h11's view of the client's request."""
        if self.transport.is_closing() or self not in self._open:
            return
        if self.conn.their_state is h11.IDLE:  # between requests, or the next one's headers still coming
            if self not in self._idle:
                self._idle[self] = None
            if self._header_timer is None and self.conn.trailing_data[0]:
                self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)
        else:  # the headers are in: the request is being served
            self._idle.pop(self, None)
            _cancel(self._header_timer)
            self._header_timer = None

    def _make_room(self) -> bool:
        """Close the oldest connection that is not serving a request; False when there is none."""
        for oldest in self._idle:
            oldest._forget()
            oldest.transport.close()
            return True
        return False

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._forget()
            self.transport.close()

    def _write_stalled(self) -> None:
        self._write_timer = None
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        logger.info("cut off HTTP client %s: it read nothing for %ss", client, self.limits.write_timeout)
        self.transport.abort()

    def _forget(self) -> None:
        self._open.discard(self)
        self._idle.pop(self, None)
        for timer in (self._header_timer, self._write_timer):
            _cancel(timer)
        self._header_timer = self._write_timer = None


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()


def protocol_for(limits: HttpLimits) -> type[asyncio.Protocol]:
    """A protocol class for one server: its connections share one count and one idle list."""
    shared = {"limits": limits, "_open": set(), "_idle": {}}
    return cast(type[asyncio.Protocol], type("GuardedH11Protocol", (GuardedH11Protocol,), shared))


def server_config(app: Any, host: str, port: int, limits: HttpLimits) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=port,
        http=protocol_for(limits),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE,
        log_config=None,  # its records go to the node's handlers, through the secret-redacting filter
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
