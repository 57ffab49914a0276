"""Headers Dkron sends on every response: `X-Whom` (the answering node) and permissive CORS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"X-Total-Count, X-Whom, Location, *"),
]
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"*, Authorization, Content-Type"),
    (b"access-control-max-age", b"43200"),
]


def dkron_headers(node_name: str) -> type:
    whom = (b"x-whom", node_name.encode())

    class DkronHeaders:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            if scope["method"] == "OPTIONS":
                await _preflight(send, whom)
                return

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers.append(whom)
                    headers.extend(CORS_HEADERS)
                    message["headers"] = headers
                await send(message)

            await self.app(scope, receive, send_with_headers)

    return DkronHeaders


async def _preflight(send: Send, whom: tuple[bytes, bytes]) -> None:
    headers = [whom, *CORS_HEADERS, *PREFLIGHT_HEADERS, (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
