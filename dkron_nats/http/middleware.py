"""Headers Dkron sends on every response: `X-Whom` (the answering node) and permissive CORS.

`dkron_headers` is a `before_send` hook, so it also covers answers that never reach a route (unknown
routes, 405s turned into 404s, request-size errors). `preflight` answers CORS preflight requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.datastructures import MutableScopeHeaders

Scope = Any
Message = Any
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
BeforeSend = Callable[[Message, Scope], Awaitable[None]]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Total-Count, X-Whom, X-Error-Field, Location, *",
}
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"*, Authorization, Content-Type"),
    (b"access-control-max-age", b"43200"),
]


def dkron_headers(node_name: str) -> BeforeSend:
    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        headers["X-Whom"] = node_name
        for key, value in CORS_HEADERS.items():
            headers[key] = value

    return add_headers


class Preflight:
    """Answers every OPTIONS request with 204 and the allowed methods and headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = [*PREFLIGHT_HEADERS, (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
