"""The legacy HTTP surface: the token endpoint, authentication, limits and the nine routes.

Each request under ``/v1`` passes, in Kong's order: routing (a path that matches none of the
routes is Kong's 404), authentication (401), the rate limiter (429), then the service's
scope check (403) and the view. Admission control (``shim.legacy.admission``) comes first for
every request but health and metrics, and again for the caller's client and seller after the
rate limiter: a full bulkhead refuses at once (503, or 429 for the client). Views raise
``LegacyError``s; the handlers here render every failure in the legacy format.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.sansio.response import Response as SansioResponse

from shim import errors
from shim.config import Settings
from shim.current import current_application, current_g, current_request
from shim.failures import InstanceBusy
from shim.legacy import (
    admission,
    auth,
    pickup_jobs,
    pickup_locations,
    products,
    ratelimit,
    routes,
    stock_lots,
)
from shim.legacy.ratelimit import get_limiter
from shim.services import get_services
from shim.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

API_PREFIX = "/v1/"
NO_ROUTE = "no Route matched with those values"
# One blueprint per resource; each route is declared on its view (shim.legacy.routes).
RESOURCES = (pickup_locations.bp, products.bp, stock_lots.bp, pickup_jobs.bp)
BLUEPRINTS = (auth.bp, *RESOURCES)
ROUTES: tuple[routes.BoundRoute, ...] = tuple(
    route for resource in RESOURCES for route in resource.routes)


def init_app(app: Flask) -> None:
    """Register the legacy routes, the request guard and the error rendering on ``app``."""
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    services = get_services(app)
    # Before the guard: a request the process has no room for is refused before its token
    # is looked up.
    admission.init_app(app, admission.Admission.of(services.settings, services.metrics))
    app.before_request(guard)
    app.after_request(add_rate_limit_headers)
    app.after_request(count_usage)
    app.teardown_request(ratelimit.abandon)  # a read's count nobody decided (an error)
    app.register_error_handler(errors.LegacyError, errors.render)
    for failure in errors.LOCAL_FAILURES:
        app.register_error_handler(failure, on_local_failure)
    app.register_error_handler(StoreUnavailable, on_store_unavailable)
    app.register_error_handler(HTTPException, on_http_exception)
    app.register_error_handler(Exception, on_unexpected)


def rate_limits(settings: Settings) -> dict[str, int]:
    """Return the per-second limits of the routes that declare their own, by endpoint."""
    return routes.rate_limits(ROUTES, settings)


def is_api_path(path: str) -> bool:
    """Return whether ``path`` is under the legacy API's route (``/v1`` and below)."""
    return path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)


def guard() -> None:
    """Authenticate, count and authorize every request to the legacy API."""
    req, ctx = current_request(), current_g()
    environ = req.environ
    if environ.get("CONTENT_LENGTH") and environ.get("HTTP_TRANSFER_ENCODING"):
        # Two framings of one body: the way request smuggling starts (gunicorn refuses it too).
        raise errors.bad_request("Content-Length and Transfer-Encoding must not both be sent")
    if not is_api_path(req.path):
        return
    if isinstance(req.routing_exception, NotFound):
        # Kong had one route per legacy endpoint: a path none of them matches never reached
        # the service, so it gets the gateway's 404 before any token check.
        raise errors.GatewayMessage(404, NO_ROUTE)
    app = current_application()
    ctx.in_gateway = True
    caller = ctx.caller = auth.authenticate()
    route = req.endpoint or "unmatched"
    counted = get_limiter().count(caller.client_id, route, get_services(app).clock())
    if req.method == "GET":
        # A read: the count's answer is read just before the platform call (or before the
        # answer, if none is made), so the round trip to Redis overlaps the work in between.
        # Nothing else the request does is seen outside before then.
        ratelimit.defer(counted)
    else:
        ctx.rate_limit_headers = counted.decide()
    admission.admit(caller.client_id, caller.seller)
    ctx.counts_as_usage = True  # admitted: counted with its outcome by count_usage
    ctx.in_gateway = False  # past Kong: from here on, failures are the service's
    view = app.view_functions.get(route)
    if view is not None:
        auth.check_scope(view)


def count_usage(response: Response) -> Response:
    """Count an admitted call for its client and route, with whether it failed (4xx/5xx)."""
    ctx = current_g()
    if ctx.get("counts_as_usage"):
        req = current_request()
        rule = req.url_rule
        route = f"{req.method} {rule.rule}" if rule else "unmatched"
        # In memory; flushed in batches (shim.usage).
        usage = get_services(current_application()).usage
        usage.count(ctx.caller.client_id, route, error=response.status_code >= 400)
    return response


def add_rate_limit_headers(response: Response) -> Response:
    """Put the limiter's figures on every response that passed it, errors included."""
    for name, value in current_g().get("rate_limit_headers", {}).items():
        response.headers[name] = value
    return response


def on_http_exception(error: HTTPException) -> SansioResponse:
    """Render Werkzeug's errors (routing, body size) in the legacy shapes."""
    if isinstance(error, NotFound):  # a path that matches no route (the guard's, under /v1)
        return errors.render(errors.GatewayMessage(404, NO_ROUTE))
    if isinstance(error, MethodNotAllowed):
        allow = ", ".join(sorted(error.valid_methods or ()))
        return errors.render(errors.Problem(405, "Method Not Allowed",
                                            headers={"Allow": allow} if allow else None))
    if isinstance(error, RequestEntityTooLarge):
        limit = get_services().settings.max_body_bytes
        return errors.render(errors.payload_too_large(limit))
    return errors.render(errors.Problem(error.code or 500, error.name))


def on_local_failure(error: Exception) -> SansioResponse:
    """Render the shim's own failures (lock timeout, tokens unavailable, a full bulkhead...)
    by the table; the token endpoint keeps its OAuth2 shape."""
    admission.get_admission().count(error)
    if isinstance(error, InstanceBusy) and request.path == auth.TOKEN_PATH:
        return errors.render(auth.busy(
            detail="The service is serving as many requests as it can: retry in 1 s"))
    return errors.render(errors.problem_for(error))


def on_store_unavailable(error: StoreUnavailable) -> SansioResponse:
    """Answer 503 with Retry-After when storage is down or locked: a passing condition the
    client can wait out, not a server bug (500)."""
    log.warning("storage unavailable serving %s %s: %s", request.method, request.path, error)
    return errors.render(errors.store_unavailable())


def on_unexpected(error: Exception) -> SansioResponse:
    """Log an unexpected failure and answer a bare 500: no trace reaches the client.

    A failure in the gateway's part (token endpoint, authentication, rate limiter) gets
    Kong's own 500 body; one in the service gets the service's Problem.
    """
    log.exception("unexpected error serving %s %s", request.method, request.path)
    if g.get("in_gateway") or request.path == auth.TOKEN_PATH:
        return errors.render(errors.GatewayMessage(500, errors.GATEWAY_FAILURE))
    return errors.render(errors.Problem(500, "Internal Server Error"))
