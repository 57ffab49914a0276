"""The HTTP listener of an agent (a node without `--server`, given `--http-addr`): `/health`, `/metrics` and
`/debug/vars`, nothing of the API, so that agents can be health-checked and scraped.

It has no authentication (an agent cannot read the API tokens) and shows nothing an agent keeps secret: its
metrics carry no job names and `/debug/vars` masks the command line's secrets. `BrowserGuard` still refuses
foreign `Host` names on a loopback listener and pages of other origins, as on the API.

`/health` answers 200 `{"status": "healthy", "nats": "connected"}` while the agent's NATS connection is up,
and 503 `{"status": "unhealthy", "nats": "disconnected"}` while it is down (the agent then receives no run
requests, and reconnects by itself). A probe that should restart only a hung process uses `/metrics`, which
answers 200 whenever the process does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.handlers import HTTPRouteHandler

from dkron_nats.http import debugvars_api, metrics_api
from dkron_nats.http.middleware import BrowserGuard, BrowserPolicy, dkron_headers
from dkron_nats.http.responses import JSON, text_response

Connected = Callable[[], bool]
HEALTHY = b'{"status":"healthy","nats":"connected"}'
UNHEALTHY = b'{"status":"unhealthy","nats":"disconnected"}'


def _health_route(connected: Connected) -> HTTPRouteHandler:
    @get("/health", sync_to_thread=False)
    def health() -> Response[bytes]:
        up = connected()
        return Response(HEALTHY if up else UNHEALTHY, status_code=200 if up else 503, media_type=JSON)

    return health


def _not_found(_: Request[Any, Any, Any], __: Exception) -> Response[bytes]:
    return text_response("404 page not found: an agent serves only /health, /metrics and /debug/vars", 404)


def create_agent_app(node_name: str, connected: Connected, browsers: BrowserPolicy | None = None) -> Litestar:
    """The agent's listener; `connected` says whether its NATS connection is up now."""
    app = Litestar(
        route_handlers=[_health_route(connected), *metrics_api.ROUTES, *debugvars_api.ROUTES],
        exception_handlers={404: _not_found, 405: _not_found},
        before_send=[dkron_headers(node_name)],
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.asgi_handler = BrowserGuard(app.asgi_handler, browsers or BrowserPolicy())
    return app
