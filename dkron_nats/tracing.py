"""OpenTelemetry traces: one trace per launch, carried across processes in NATS headers.

`--otel-endpoint` (Dkron's flag) exports OTLP: `http://host:4318` or `https://...` uses OTLP/HTTP, anything
else (`host:4317`, `grpc://host:4317`) OTLP/gRPC as Dkron does. Without it no tracer provider is installed,
so every span is OpenTelemetry's no-op one and tracing costs a function call.

The W3C trace context (`traceparent`, `tracestate`) travels in the headers of run requests, so the agent's
execution span continues the leader's dispatch span; shell jobs get `TRACEPARENT` to continue it themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dkron_nats.version import VERSION

logger = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def setup_tracing(endpoint: str, node_name: str, server: bool) -> None:
    """Export spans to `endpoint` (nothing to do when it is empty)."""
    global _provider
    if not endpoint:
        return
    resource = Resource.create(
        {
            "service.name": "dkron-nats",
            "service.version": VERSION,
            "service.instance.id": node_name,
            "dkron.role": "server" if server else "agent",
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint), schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _provider = provider
    logger.info("exporting traces to %s", endpoint)


def _exporter(endpoint: str) -> SpanExporter:
    if endpoint.startswith(("http://", "https://")):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    target = endpoint.removeprefix("grpc://")
    return GrpcExporter(endpoint=target, insecure=not endpoint.startswith("grpcs://"))


def shutdown_tracing() -> None:
    """Send what is buffered (bounded by the exporter's own timeout)."""
    if _provider is not None:
        _provider.shutdown()


class _Untraced(trace.NoOpTracer):
    """The tracer while nothing is exported: a span is one shared, reusable no-op context manager.

    OpenTelemetry's own no-op path builds a generator-based context manager per span, a measurable share
    of an execution's cost at hundreds of executions per second."""

    _span = contextlib.nullcontext(trace.INVALID_SPAN)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._span


_UNTRACED = _Untraced()


def tracer() -> trace.Tracer:
    if _provider is None:
        return _UNTRACED
    return trace.get_tracer("dkron_nats", VERSION)


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's trace context to outgoing NATS headers."""
    if _provider is not None:
        _PROPAGATOR.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a message carried (an empty context when it carried none)."""
    if _provider is None:
        return context.Context()
    return _PROPAGATOR.extract(dict(headers or {}))


def traceparent() -> str:
    """The current span as a `TRACEPARENT` value for a job's environment ('' when not tracing)."""
    if _provider is None:
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")
