"""create_app(services) -> Litestar: routes, who may call them, Dkron's error bodies and headers.

Outermost, before routing, `BrowserGuard` refuses foreign `Host` names and web pages of other origins
(`http/middleware.py`); then the guards check the token (`http/auth_api.py`) and the caller's rate of runs
and job changes (`http/ratelimit.py`), both before a body is read.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from dkron_nats.auth import TokenExistsError, TokenInputError, TokenNotFoundError
from dkron_nats.errors import (
    ConflictError,
    DkronError,
    ExecutionNotFoundError,
    HasDependentsError,
    JobNotFoundError,
    NoLeaderError,
    ParentNotFoundError,
    PausedError,
    PayloadError,
    RunError,
    ValidationError,
)
from dkron_nats.http import (
    auth_api,
    cluster_api,
    debugvars_api,
    events_api,
    executions_api,
    jobs_api,
    metrics_api,
    openapi,
    output_api,
    ui_api,
)
from dkron_nats.http.middleware import BrowserGuard, BrowserPolicy, dkron_headers
from dkron_nats.http.ratelimit import RateLimiter, rate_guard
from dkron_nats.http.responses import TEXT, text_response
from dkron_nats.http.services import Services
from dkron_nats.jobinput import error_field
from dkron_nats.joblist import BadSortError
from dkron_nats.kv.typed import TRANSIENT

logger = logging.getLogger(__name__)

STATUS_OF: list[tuple[type[DkronError], int]] = [
    (PayloadError, 400),
    (ValidationError, 400),
    (BadSortError, 400),
    (ParentNotFoundError, 404),
    (JobNotFoundError, 404),
    (ExecutionNotFoundError, 404),
    (HasDependentsError, 404),
    (RunError, 404),
    (PausedError, 503),
    (NoLeaderError, 503),
    (ConflictError, 409),
    (TokenInputError, 400),
    (TokenNotFoundError, 404),
    (TokenExistsError, 409),
]
BODYLESS_404 = (JobNotFoundError, ExecutionNotFoundError)
ERROR_FIELD_HEADER = "X-Error-Field"
"""On a 400 for a job: the field the message is about (`schedule`, `retry_backoff.initial`...)."""


def _dkron_error(_: Request[Any, Any, Any], exc: DkronError) -> Response[bytes]:
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            response = text_response("" if isinstance(exc, BODYLESS_404) else str(exc), status)
            field = (exc.field or error_field(exc.detail)) if isinstance(exc, ValidationError) else None
            if field:  # Dkron's plain-text body stays; a form can put the message beside this field
                response.headers[ERROR_FIELD_HEADER] = field
            return response
    return text_response(str(exc), 500)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if isinstance(exc, NotFoundException) or exc.status_code == 405:
        return text_response("404 page not found", 404)
    if exc.status_code == 413:
        return text_response("request body too large: the limit is set by --max-body-size", 413)
    # Keeps the exception's headers: a 401 must say `WWW-Authenticate: Bearer`, a 429 `Retry-After`.
    return Response(
        content=(exc.detail or "error").encode(),
        status_code=exc.status_code,
        media_type=TEXT,
        headers=exc.headers or {},
    )


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, TRANSIENT):  # a stream electing its leader (a NATS node was lost): soon over
        logger.warning("an API request met JetStream unavailable: %s", exc)
        return text_response(f"JetStream is unavailable right now ({exc}); try again in a few seconds", 503)
    logger.exception("unhandled error in the API", exc_info=exc)
    return text_response(f"internal error: {exc}", HTTP_500_INTERNAL_SERVER_ERROR)


ROUTE_HANDLERS = [
    *cluster_api.ROUTES,
    *jobs_api.ROUTES,
    *executions_api.ROUTES,
    *output_api.ROUTES,
    *metrics_api.ROUTES,
    *debugvars_api.ROUTES,
    *auth_api.ROUTES,
    *openapi.ROUTES,
    *events_api.ROUTES,
    *ui_api.ROUTES,
]
"""Every route of the API (the auth tests walk this list, so a new route cannot be left unchecked)."""


def create_app(
    services: Services, browsers: BrowserPolicy | None = None, limiter: RateLimiter | None = None
) -> Litestar:
    """The API; without `limiter`, runs and job changes are not rate-limited."""
    app = Litestar(
        route_handlers=ROUTE_HANDLERS,
        guards=[
            auth_api.auth_guard(services.auth, services.audit),
            rate_guard(limiter or RateLimiter(rate=0, burst=1)),
        ],
        dependencies={"services": Provide(lambda: services, use_cache=True, sync_to_thread=False)},
        exception_handlers={
            DkronError: _dkron_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        before_send=[dkron_headers(services.node_name)],
        request_max_body_size=services.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    # Around the router itself, so that it also decides for unknown paths and before any route's middleware;
    # Litestar's `before_send` hooks (X-Whom) still wrap it.
    app.asgi_handler = BrowserGuard(app.asgi_handler, browsers or BrowserPolicy())
    return app
