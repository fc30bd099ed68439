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

from flask import Flask, Response, g, request

from shim import operator
from shim.services import get_services
from shim.tracing import TRACE_HEADERS

log = logging.getLogger("shim.requests")
REQUEST_ID_HEADER = "X-Request-Id"
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
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.started = time.perf_counter()
    g.upstream_request_ids = []
    tracing = get_services().tracing
    if tracing is not None and request.path not in HEALTH_PATHS:
        carrier = {name: value for name in TRACE_HEADERS
                   if (value := request.headers.get(name)) is not None}
        g.trace = tracing.start_request(_method(), _route(), carrier)


def _route() -> str:
    """The request's route template (no path values, no query), bounded as a label."""
    return request.url_rule.rule if request.url_rule else "unmatched"


def _method() -> str:
    # Any token is a method to the server: only the known ones become label values.
    return request.method if request.method in KNOWN_METHODS else "other"


def finish_request(response: Response) -> Response:
    """Count, time and log the request; echo its id; forbid content sniffing."""
    if "started" not in g:  # a failure before start_request ran
        start_request()
    response.headers[REQUEST_ID_HEADER] = g.request_id
    # No answer (JSON, error, Kong's 404, a page, the metrics) is to be sniffed as HTML.
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path in HEALTH_PATHS:
        return response
    metrics = get_services().metrics
    route = _route()
    elapsed = time.perf_counter() - g.started
    method = _method()
    metrics.legacy_requests_by(route, method, str(response.status_code)).inc()
    metrics.legacy_latency_by(route).observe(elapsed)
    caller = g.get("caller")
    if caller is not None:
        metrics.client_requests_by(caller.client_id).inc()
        if response.status_code == 429:
            metrics.rate_limited_by(route, caller.client_id).inc()
    log.info("%s %s -> %s", request.method, route, response.status_code, extra={
        "method": request.method, "route": route, "path": request.path,
        "status": response.status_code, "ms": round(elapsed * 1000, 1),
        "client": caller.client_id if caller else None,
        "request_id": g.request_id, "upstream_request_ids": list(g.upstream_request_ids),
    })
    end_trace(status=response.status_code)
    return response


def end_trace(error: BaseException | None = None, *, status: int | None = None) -> None:
    """End the request's span, if tracing made one (teardown's call: it got no answer)."""
    started = g.pop("trace", None)
    if started is None:  # tracing off, or finish_request ended it before teardown
        return
    tracing = get_services().tracing
    assert tracing is not None  # a span is only started when tracing is on
    caller = g.get("caller")
    tracing.finish_request(started, status, {
        "shim.request_id": g.get("request_id"),
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
