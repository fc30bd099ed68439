"""Optional OpenTelemetry traces: a span per legacy request, a child per platform call.

Off unless the ``tracing`` setting is on or ``otlp_endpoint`` is set, and then it needs the
``otel`` extra (``pip install 'redmart-shim[otel]'``). OpenTelemetry is imported only by
``Tracing.open`` with tracing on: a shim without it loads nothing of it
(tests/test_tracing.py).

A request continues the W3C trace context (``traceparent``) its client sent, read by
OpenTelemetry's own propagator. A platform call's span is made from the upstream client's
``CallRecord`` when the call has finished (its start is set back by its duration): the record
carries the API path, the platform's code and request_id and the retries, and by design no
parameter, token, signature or secret, so no span can carry one either. Nor does a request
span carry its path or query string, only the route template. Spans go over OTLP/HTTP to
``otlp_endpoint`` when it is set.

This module never imports Flask: ``shim.observability`` hands it what a request says.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shim.config import Settings
from shim.upstream.client import CallRecord

if TYPE_CHECKING:  # only for the checker: at run time OpenTelemetry loads in ``open``
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

SERVICE_NAME = "redmart-shim"
TRACE_HEADERS = ("traceparent", "tracestate")  # all the W3C propagator reads


@dataclass
class RequestSpan:
    """A legacy request's span and the context token to detach when it ends."""

    span: Span
    token: Token[Context]


EXPORT_TIMEOUT_S = 2.0  # per export to the collector, retries included


class Tracing:
    """The app's tracer over its own provider (never OpenTelemetry's global one)."""

    def __init__(self, provider: TracerProvider, propagate: Callable[[Mapping[str, str]],
                                                                     Context]) -> None:
        from opentelemetry import context, trace

        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("shim")
        self._extract = propagate
        self._context = context
        self._trace = trace

    @classmethod
    def open(cls, settings: Settings) -> Tracing | None:
        """Return the tracing of ``settings`` (exporting over OTLP if configured), or None."""
        if not (settings.tracing or settings.otlp_endpoint):
            return None
        # Settings checked that the otel extra is installed (shim.config).
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        provider = TracerProvider(resource=Resource.create({
            "service.name": SERVICE_NAME,
            "service.version": importlib.metadata.version("redmart-shim")}))
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter's own 10 s deadline (retries included) would hold a stop with the
            # collector down past `docker stop`'s default grace; 2 s ends its flush in ~1 s.
            provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=EXPORT_TIMEOUT_S)))
        propagator = TraceContextTextMapPropagator()
        return cls(provider, lambda headers: propagator.extract(carrier=dict(headers)))

    def start_request(self, method: str, route: str, carrier: Mapping[str, str]) -> RequestSpan:
        """Start the request's span, continuing the trace context in ``carrier`` (the
        request's ``TRACE_HEADERS``); make it the current span."""
        span = self._tracer.start_span(
            f"{method} {route}", context=self._extract(carrier),
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route})
        token = self._context.attach(self._trace.set_span_in_context(span))
        return RequestSpan(span, token)

    def finish_request(self, request: RequestSpan, status: int | None,
                       attributes: Mapping[str, Any]) -> None:
        """End the request's span with its status (None: no answer) and detach it."""
        span = request.span
        try:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            for name, value in attributes.items():
                if value is not None:
                    span.set_attribute(name, value)
            if status is None or status >= 500:
                span.set_status(self._trace.StatusCode.ERROR)
            span.end()
        finally:
            self._context.detach(request.token)

    def observe(self, call: CallRecord) -> None:
        """Record a finished platform call as a child of the current span (if any)."""
        end = time.time_ns()
        attributes: dict[str, Any] = {
            "http.request.method": call.method, "lazada.api": call.api,
            "lazada.code": call.code, "lazada.retries": call.retries}
        if call.request_id:
            attributes["lazada.request_id"] = call.request_id
        span = self._tracer.start_span(
            call.api, kind=self._trace.SpanKind.CLIENT, attributes=attributes,
            start_time=end - int(call.seconds * 1e9))
        if call.code != "0":
            span.set_status(self._trace.StatusCode.ERROR, call.code)
        span.end(end_time=end)

    def close(self) -> None:
        """Send the spans still buffered and stop the exporter."""
        self.provider.shutdown()
