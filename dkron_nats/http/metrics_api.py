"""`GET /metrics`: this process's Prometheus series (`--enable-prometheus` is accepted, and always on)."""

from __future__ import annotations

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from dkron_nats.metrics import exposition


@get("/metrics", sync_to_thread=False)
def metrics() -> Response[bytes]:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [metrics]
