"""What operators see: request ids, one log line per request, metrics, health and readiness.

``/healthz`` says the process serves; ``/readyz`` that this instance can serve: storage answers
(configuration was validated before the app existed). Seller health is deliberately not part of
readiness: one seller's lapsed consent must not take every tenant off a load balancer, and the
endpoint is unauthenticated; it lives in ``/metrics``, the status page and the ERROR line.
``/metrics`` needs the operator credential, so a legacy client token never opens it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Request, Response

from shim import operator
from shim.current import current_application, current_g, current_request
from shim.services import get_services
from shim.tracing import TRACE_HEADERS

log = logging.getLogger("shim.requests")
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"  # the header, read without building request.headers
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # anything else is replaced
HEALTH_PATHS = ("/healthz", "/readyz")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask) -> None:
    """Register the request-id and metrics hooks and the health and metrics endpoints."""
    app.before_request(start_request)
    app.after_request(finish_request)
    app.teardown_request(end_trace)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    app.add_url_rule("/metrics", "metrics", metrics_endpoint)


def start_request() -> None:
    """Give the request its id and start its clock."""
    req, ctx = current_request(), current_g()
    given = req.environ.get(REQUEST_ID_ENVIRON, "")
    ctx.request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    ctx.started = time.perf_counter()
    ctx.upstream_request_ids = []
    tracing = get_services(current_application()).tracing
    if tracing is not None and req.path not in HEALTH_PATHS:
        carrier = {name: value for name in TRACE_HEADERS
                   if (value := req.headers.get(name)) is not None}
        ctx.trace = tracing.start_request(_method(req), _route(req), carrier)


def _route(req: Request) -> str:
    """The request's route template (no path values, no query), bounded as a label."""
    return req.url_rule.rule if req.url_rule else "unmatched"


def _method(req: Request) -> str:
    # Any token is a method to the server: only the known ones become label values.
    return req.method if req.method in KNOWN_METHODS else "other"


def finish_request(response: Response) -> Response:
    """Count, time and log the request; echo its id; forbid content sniffing."""
    req, ctx = current_request(), current_g()
    if "started" not in ctx:  # a failure before start_request ran
        start_request()
    headers = response.headers
    headers[REQUEST_ID_HEADER] = ctx.request_id
    # No answer (JSON, error, Kong's 404, a page, the metrics) is to be sniffed as HTML.
    headers["X-Content-Type-Options"] = "nosniff"
    if req.path in HEALTH_PATHS:
        return response
    metrics = get_services(current_application()).metrics
    route = _route(req)
    elapsed = time.perf_counter() - ctx.started
    status = response.status_code
    metrics.legacy_requests_by(route, _method(req), str(status)).inc()
    metrics.legacy_latency_by(route).observe(elapsed)
    caller = ctx.get("caller")
    if caller is not None:
        metrics.client_requests_by(caller.client_id).inc()
        if status == 429:
            metrics.rate_limited_by(route, caller.client_id).inc()
    if log.isEnabledFor(logging.INFO):  # production's level; the fields only for a line
        log.info("%s %s -> %s", req.method, route, status, extra={
            "method": req.method, "route": route, "path": req.path,
            "status": status, "ms": round(elapsed * 1000, 1),
            "client": caller.client_id if caller else None,
            "request_id": ctx.request_id, "upstream_request_ids": list(ctx.upstream_request_ids),
        })
    end_trace(status=status)
    return response


def end_trace(error: BaseException | None = None, *, status: int | None = None) -> None:
    """End the request's span, if tracing made one (teardown's call: it got no answer)."""
    ctx = current_g()
    started = ctx.pop("trace", None)
    if started is None:  # tracing off, or finish_request ended it before teardown
        return
    tracing = get_services().tracing
    assert tracing is not None  # a span is only started when tracing is on
    caller = ctx.get("caller")
    tracing.finish_request(started, status, {
        "shim.request_id": ctx.get("request_id"),
        "shim.client": caller.client_id if caller else None})


def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


def readyz() -> tuple[dict[str, object], int]:
    """Storage answers: 200; 503 with the failed check otherwise. No per-seller state."""
    try:
        get_services().store.ping()
    except Exception as error:
        log.warning("readiness: storage unavailable: %s", type(error).__name__)
        return {"status": "unready", "checks": {"storage": "unavailable"}}, 503
    return {"status": "ready", "checks": {"storage": "ok"}}, 200


def metrics_endpoint() -> Response:
    """Prometheus exposition, for the operator credential only."""
    operator.require_operator()
    services = get_services()
    services.breakers.snapshot()  # an open breaker past its period shows half_open, not open
    body, content_type = services.metrics.exposition()
    return Response(body, content_type=content_type)
