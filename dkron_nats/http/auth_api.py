"""Who may call which route (the auth guard), /v1/tokens to manage API tokens, and /v1/audit to read the log.

A route names the role it needs in its Litestar `opt`: `{"role": "operator"}`, or `{"public": True}` for
routes anyone may call (`/health`). Without either, reads (GET, HEAD) need `read` and every other method
`admin`, so a new route is admin-only until someone decides otherwise. CORS preflight requests never reach
the guard (`BrowserGuard` answers them first).

A token that is sent but refused (unknown, revoked, expired, malformed) is logged and audited with the
client's address, never the token; at most `FAILED_LOGINS_PER_SECOND` of them (bursts of
`FAILED_LOGINS_BURST`), each saying how many were left out before it, so a flood cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.types import Guard

from dkron_nats import audit
from dkron_nats.audit import AuditLog
from dkron_nats.auth import (
    ANONYMOUS,
    BOOTSTRAP_ENV,
    READ_METHODS,
    Authenticator,
    Principal,
    Role,
    allows,
    check_token_request,
    parse_role,
    parse_ttl,
    token_json,
)
from dkron_nats.errors import PayloadError
from dkron_nats.http.ratelimit import TokenBucket
from dkron_nats.http.responses import json_response, list_response
from dkron_nats.http.services import Services

logger = logging.getLogger(__name__)

AnyRequest = Request[Any, Any, Any]
AnyConnection = ASGIConnection[Any, Any, Any, Any]
ADMIN: dict[str, Any] = {"role": "admin"}
OPERATOR: dict[str, Any] = {"role": "operator"}
PUBLIC: dict[str, Any] = {"public": True}
AUDIT_PAGE = 50
"""Entries `GET /v1/audit` returns when `_end` is not given."""
FAILED_LOGINS_PER_SECOND = 1.0
FAILED_LOGINS_BURST = 20
UNAUTHENTICATED = Principal(name="(unauthenticated)", role="read")
"""Who a refused token's audit entry names: not a token name (those cannot hold parentheses)."""


def principal_of(connection: AnyConnection) -> Principal:
    """Who sent this request (set by the guard); `anonymous` when authentication is off."""
    found = connection.scope.get("user")
    return found if isinstance(found, Principal) else ANONYMOUS


def needed_role(method: str, handler: BaseRouteHandler) -> Role | None:
    """The role a route needs for `method`; None for a public route."""
    if handler.opt.get("public"):
        return None
    declared = handler.opt.get("role")
    if declared is None:
        return "read" if method in READ_METHODS else "admin"
    role = parse_role(str(declared))
    if role is None:
        raise AssertionError(f"route {handler.paths} declares an unknown role {declared!r}")
    return role


class FailedLogins:
    """Logs and audits refused tokens, at most `rate` a second (bursts of `burst`)."""

    def __init__(
        self, audit: AuditLog, rate: float = FAILED_LOGINS_PER_SECOND, burst: int = FAILED_LOGINS_BURST
    ) -> None:
        self.audit = audit
        self._bucket = TokenBucket(rate, burst, time.monotonic())
        self._left_out = 0

    async def record(self, connection: AnyConnection, why: str) -> None:
        if self._bucket.take(time.monotonic()) > 0:
            self._left_out += 1
            return
        left_out, self._left_out = self._left_out, 0
        client = connection.scope.get("client")
        address = client[0] if client else "unknown"
        method, path = connection.scope.get("method", "GET"), connection.scope["path"]
        more = f" ({left_out} more refused since the last one logged)" if left_out else ""
        logger.warning("refused an API token from %s for %s %s: %s%s", address, method, path, why, more)
        details = {"method": method, "path": path, "reason": why, "not_logged_before": left_out}
        await self.audit.record(UNAUTHENTICATED, audit.LOGIN_FAILED, address, after=details)


def auth_guard(auth: Authenticator, audit_log: AuditLog) -> Guard:
    """401 without a valid token, 403 when the token's role may not use the route."""
    failed = FailedLogins(audit_log)

    async def guard(connection: AnyConnection, handler: BaseRouteHandler) -> None:
        if not auth.enabled:
            return
        needed = needed_role(str(connection.scope.get("method", "GET")), handler)
        if needed is None:
            return
        authorization = connection.headers.get("authorization")
        principal = auth.identify(authorization)
        if not isinstance(principal, Principal):
            if authorization is not None:
                await failed.record(connection, principal)
            raise NotAuthorizedException(
                detail=_why_unauthorized(connection), headers={"WWW-Authenticate": "Bearer"}
            )
        if not allows(principal.role, needed):
            raise PermissionDeniedException(
                detail=f"forbidden: this needs the {needed} role or higher; "
                f"token {principal.name!r} has the {principal.role} role"
            )
        connection.scope["user"] = principal

    return guard


def _why_unauthorized(connection: AnyConnection) -> str:
    if "authorization" not in connection.headers:
        return (
            "authentication required: send 'Authorization: Bearer <token>' (tokens are made with "
            f"`dkron-nats token create`; the first admin token comes from {BOOTSTRAP_ENV})"
        )
    return "the bearer token is not valid: it is unknown, revoked or expired, or not sent as 'Bearer <token>'"


class TokenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    role: str
    ttl: str | None = None
    """How long the token lives (`720h`, `P30D`); None: until revoked."""


@post("/v1/tokens", status_code=201, opt=ADMIN)
async def create_token(request: AnyRequest, services: Services) -> Response[bytes]:
    try:
        wanted = msgspec.json.decode(await request.body(), type=TokenRequest)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise PayloadError(
            f'{exc}; send {{"name": "...", "role": "read|operator|admin"}} and optionally "ttl": "720h"'
        ) from None
    role = check_token_request(wanted.name, wanted.role)
    ttl = parse_ttl(wanted.ttl) if wanted.ttl is not None else None
    who = principal_of(request)
    stored, token = await services.auth.create(wanted.name, role, who.name, ttl)
    await services.audit.record(who, audit.TOKEN_CREATE, stored.name, after=token_json(stored))
    shown = token_json(stored)
    body = {"name": stored.name, "role": stored.role, "token": token, "expires_at": shown["expires_at"]}
    return json_response(request, body, status=201)


@get("/v1/tokens", opt=ADMIN)
async def list_tokens(request: AnyRequest, services: Services) -> Response[bytes]:
    tokens = [token_json(stored) for stored in services.auth.listed()]
    return list_response(request, tokens, len(tokens))


@delete("/v1/tokens/{name:str}", status_code=200, opt=ADMIN)
async def revoke_token(request: AnyRequest, services: Services, name: str) -> Response[bytes]:
    who = principal_of(request)
    stored = await services.auth.revoke(name, who.name)
    await services.audit.record(who, audit.TOKEN_REVOKE, name, before=token_json(stored))
    return json_response(request, token_json(stored))


@get("/v1/me")
async def who_am_i(request: AnyRequest, services: Services) -> Response[bytes]:
    """The caller's token name and role, and whether authentication is on (the UI hides what it may
    not do)."""
    who = principal_of(request)
    return json_response(request, {"name": who.name, "role": who.role, "auth": services.auth.enabled})


@get("/v1/audit", opt=ADMIN)
async def audit_log(request: AnyRequest, services: Services) -> Response[bytes]:
    """The audit log, newest first, paged like the other lists (`_start`, `_end`, `X-Total-Count`)."""
    start = _index(request, "_start", 0)
    end = _index(request, "_end", start + AUDIT_PAGE)
    total, entries = await services.audit.page(start, end)
    return list_response(request, entries, total)


def _index(request: AnyRequest, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if not text:
        return default
    if not text.isdigit():
        raise ClientException(detail=f"{name} must be a whole number, got {text!r}")
    return int(text)


ROUTES = [create_token, list_tokens, revoke_token, who_am_i, audit_log]
