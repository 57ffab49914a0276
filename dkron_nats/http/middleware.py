"""What the API answers browsers before any route runs: who may call it from a web page, and under which name.

- `X-Whom` (the answering node) on every response, as Dkron sends it. `dkron_headers` is a `before_send`
  hook, so it also covers answers that never reach a route (unknown routes, refusals below, request-size
  errors).
- `BrowserGuard` wraps the whole app, so it decides before routing, authentication or reading the body:
  - On a loopback listener, a `Host` that is not a loopback name (`localhost`, `127.x.x.x`, `[::1]`) or an
    `--allowed-host` gets 403: a web page that points its own domain at 127.0.0.1 (DNS rebinding) reaches
    the port but is refused.
  - A request whose `Origin` is neither the UI's own (the request's scheme and `Host`) nor a
    `--cors-origin` gets 403. Browsers send `Origin` with every cross-site POST, even the "simple" ones
    (`text/plain`, form types) that skip the CORS preflight, so another site's page cannot create or run
    jobs on a server it can reach. curl and other clients send no `Origin` and are not affected.
  - CORS headers go only to `--cors-origin`s: the origin echoed, `Vary: Origin`, and the preflight
    (`OPTIONS`) answered 204 with the methods and headers allowed. There is no `*`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from litestar.datastructures import MutableScopeHeaders

from dkron_nats.config import is_loopback_host, normal_origin

Scope = Any
Message = Any
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
BeforeSend = Callable[[Message, Scope], Awaitable[None]]

METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
EXPOSED = b"X-Total-Count, X-Whom, X-Error-Field, Location, Retry-After"
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", METHODS),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Accept"),
    (b"access-control-max-age", b"43200"),
]


def dkron_headers(node_name: str) -> BeforeSend:
    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        MutableScopeHeaders.from_message(message)["X-Whom"] = node_name

    return add_headers


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    cors_origins: frozenset[str] = frozenset()
    """Normalised (`config.check_origin`) origins whose pages may call the API."""
    allowed_hosts: frozenset[str] = frozenset()
    """Host names (lower case) a loopback API answers to besides the loopback ones."""
    loopback: bool = True
    """The API listens on a loopback address only: check `Host` (DNS rebinding)."""

    @classmethod
    def of(cls, cors_origins: Iterable[str], allowed_hosts: Iterable[str], listen_host: str) -> BrowserPolicy:
        return cls(frozenset(cors_origins), frozenset(allowed_hosts), is_loopback_host(listen_host))


class BrowserGuard:
    """Refuses foreign `Host` names and `Origin`s with 403; answers CORS for the configured origins."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host, origin = _header(scope, b"host"), _header(scope, b"origin")
        refusal = self._refusal(scope, host, origin)
        if refusal:
            await _answer(send, 403, [(b"content-type", b"text/plain; charset=utf-8")], refusal.encode())
            return
        cors = origin is not None and _origin_key(origin) in self.policy.cors_origins
        if scope["method"] == "OPTIONS":
            headers = [(b"allow", METHODS)]
            if cors and origin is not None:
                headers += [*_cors_headers(origin), *PREFLIGHT_HEADERS]
            await _answer(send, 204, headers, b"")
            return
        if not cors or origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_cors_headers(allowed)]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _refusal(self, scope: Scope, host: str | None, origin: str | None) -> str:
        """Why the request is refused, or "" when it may go on."""
        if self.policy.loopback and host is not None and not self._host_allowed(host):
            return (
                f"refused: this API listens on loopback and answers only to localhost names, not to Host "
                f"{host!r} (a web page reaching it under another name may be a DNS rebinding attack); "
                "to reach it under that name, start the server with --allowed-host NAME"
            )
        if origin is None:
            return ""
        key = _origin_key(origin)
        if key is not None and (key in self.policy.cors_origins or key == _own_origin(scope, host)):
            return ""
        return (
            f"refused: a web page from {origin} may not call this API (only the UI's own pages and "
            "--cors-origin origins may)"
        )

    def _host_allowed(self, host: str) -> bool:
        name = urlsplit(f"//{host}").hostname or ""
        return is_loopback_host(name) or name in self.policy.allowed_hosts


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _origin_key(origin: str) -> str | None:
    """`scheme://host:port` of an `Origin` header, None for `null` or anything unparsable."""
    parts = urlsplit(origin.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return normal_origin(parts.scheme, parts.hostname, port)


def _own_origin(scope: Scope, host: str | None) -> str | None:
    """The origin of the API itself as the client addressed it: the UI's pages come from there."""
    if not host:
        return None
    return _origin_key(f"{scope.get('scheme', 'http')}://{host}")


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSED),
        (b"vary", b"Origin"),
    ]


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A whole answer from here; a refusal closes the connection, so an unread body is never read."""
    if status >= 400:
        headers = [*headers, (b"connection", b"close")]
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
