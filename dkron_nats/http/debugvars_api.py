"""`GET /debug/vars`: Dkron's expvar page, `cmdline` with its secrets masked and `memstats` (`debugvars.py`).

On servers it needs the `read` role like `/metrics`; agents serve it on their own listener (`agent_app.py`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from dkron_nats.debugvars import debug_vars
from dkron_nats.http.responses import json_response


@get("/debug/vars", sync_to_thread=False)
def expvars(request: Request[Any, Any, Any]) -> Response[bytes]:
    return json_response(request, debug_vars())


ROUTES = [expvars]
