"""Cluster and auxiliary endpoints: /v1, members, leader, busy, pause, stats, leave, /health, /."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response, get, post

from dkron_nats import audit
from dkron_nats.errors import ValidationError
from dkron_nats.http.auth_api import PUBLIC, principal_of
from dkron_nats.http.render import execution_json, member_json
from dkron_nats.http.responses import json_response, list_response, text_response
from dkron_nats.http.services import PAUSED_KEY, SCHEDULING_PAUSED_KEY, Services

AnyRequest = Request[Any, Any, Any]
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


@get(["/v1", "/v1/"])
async def index(request: AnyRequest, services: Services) -> Response[bytes]:
    alive = services.registry.alive()
    serf = {
        "members": str(len(alive)),
        "failed": str(len(services.registry.failed())),
        "left": "0",
        "health_score": "0",
        "member_time": "0",
        "event_time": "0",
        "query_time": "0",
        "intent_queue": "0",
        "event_queue": "0",
        "query_queue": "0",
        "encrypted": "false",
        "coordinate_resets": "0",
    }
    body = {
        "agent": {"name": services.node_name, "version": services.version},
        "serf": serf,
        "tags": services.tags,
    }
    return json_response(request, body)


@get("/v1/members")
async def members(request: AnyRequest, services: Services) -> Response[bytes]:
    registry = services.registry
    listed = [(m, "alive") for m in registry.alive()] + [(m, "failed") for m in registry.failed()]
    listed.sort(key=lambda pair: pair[0].name)
    return list_response(request, [member_json(m, status=status) for m, status in listed], len(listed))


@get("/v1/leader")
async def leader(request: AnyRequest, services: Services) -> Response[bytes]:
    member = await services.leader()
    if member is None:
        return text_response("no leader: no server holds the scheduler lease right now", 500)
    return json_response(request, member_json(member, with_ids=False))


@get("/v1/isleader")
async def is_leader(request: AnyRequest, services: Services) -> Response[bytes]:
    if services.is_leader():
        return json_response(request, "I am a leader")
    return json_response(request, "I am a follower", status=404)


@get("/v1/partitions")
async def partition_table(request: AnyRequest, services: Services) -> Response[bytes]:
    table = [msgspec.to_builtins(row) for row in await services.partition_table()]
    return list_response(request, table, len(table))


@post("/v1/leave", status_code=200)
async def leave(request: AnyRequest, services: Services) -> Response[bytes]:
    peers = {m.name: m.addr for m in services.registry.alive() if m.server}
    await services.audit.record(principal_of(request), audit.LEAVE, services.node_name)
    services.request_shutdown()
    return json_response(request, peers)


@get("/v1/busy")
async def busy(request: AnyRequest, services: Services) -> Response[bytes]:
    running = await services.busy()
    return list_response(request, [execution_json(ex) for ex in running], len(running))


def _pause_json(services: Services) -> dict[str, bool]:
    return {
        "paused": services.is_paused(),
        "scheduling_paused": services.is_paused(SCHEDULING_PAUSED_KEY),
    }


def _pause_key(request: AnyRequest) -> str:
    """`?scheduling=true` pauses scheduling (persisted, cluster-wide); without it, submissions (Dkron's)."""
    value = request.query_params.get("scheduling", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ValidationError(f"scheduling must be true or false, got {value!r}")
    return SCHEDULING_PAUSED_KEY if value in ("true", "1") else PAUSED_KEY


@get("/v1/pause")
async def pause_status(request: AnyRequest, services: Services) -> Response[bytes]:
    return json_response(request, _pause_json(services))


@post("/v1/pause", status_code=200)
async def pause(request: AnyRequest, services: Services) -> Response[bytes]:
    return await _set_paused(request, services, True)


@post("/v1/unpause", status_code=200)
async def unpause(request: AnyRequest, services: Services) -> Response[bytes]:
    return await _set_paused(request, services, False)


async def _set_paused(request: AnyRequest, services: Services, paused: bool) -> Response[bytes]:
    key = _pause_key(request)
    before = _pause_json(services)
    await services.set_paused(paused, key)
    after = _pause_json(services)
    kind = "scheduling" if key == SCHEDULING_PAUSED_KEY else "submissions"
    action = audit.PAUSE if paused else audit.UNPAUSE
    await services.audit.record(principal_of(request), action, kind, before, after)
    return json_response(request, after)


@get("/v1/stats")
async def stats(request: AnyRequest, services: Services) -> Response[bytes]:
    days = _days(request.query_params.get("days", ""))
    rows = await services.stats.days(days)
    out = [
        {
            "date": f"{day.isoformat()}T00:00:00Z",
            "success_count": s.success_count,
            "failed_count": s.failed_count,
        }
        for day, s in rows
    ]
    return json_response(request, {"stats": out})


def _days(raw: str) -> int:
    """Dkron's `days`: default 30; not a number or <= 0 gives 30; at most 365."""
    if not _INTEGER.fullmatch(raw):
        return 30
    days = int(raw)
    return 30 if days <= 0 else min(days, 365)


@get("/health", opt=PUBLIC)
async def health(request: AnyRequest, services: Services) -> Response[bytes]:
    body: dict[str, Any] = {"status": "healthy"}
    if services.lease is not None:
        body["leader"] = services.is_leader()
    return json_response(request, body)


@get("/", include_in_schema=False)
async def root(request: AnyRequest) -> Response[bytes]:
    if "text/html" in request.headers.get("accept", ""):
        return Response(content=b"", status_code=303, headers={"Location": "/ui/"})
    return text_response("404 page not found", 404)


ROUTES = [
    index,
    members,
    leader,
    is_leader,
    partition_table,
    leave,
    busy,
    pause_status,
    pause,
    unpause,
    stats,
    health,
    root,
]
