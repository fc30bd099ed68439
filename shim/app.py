"""The app factory: ``create_app`` is the only way to get the legacy API's Flask app.

It opens what the app needs (``shim.services.Services``) and starts nothing: the runner of a
serving process starts the background work and closes everything on shutdown.

Its imports sit inside the factory (as in Flask's tutorial app), so that importing ``shim``
or one of its lower layers (``shim.upstream``, ``shim.store``, ``shim.config``) never loads
Flask and the rest of the app: gunicorn's master imports ``shim.gunicorn_conf`` before a
gevent worker can patch the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from shim.config import Settings
    from shim.store import Store
    from shim.upstream.client import LazadaClient

def create_app(
    settings: Settings | None = None,
    *,
    upstream: LazadaClient | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    behind_front: bool = False,
) -> Flask:
    """Return a configured shim app; settings default to the file and environment.

    ``behind_front``: served by gunicorn behind serve's nginx (shim/front.py), which appends
    the client's address to X-Forwarded-For: one more trusted hop for the address only.
    """
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from shim import config, legacy, observability, openapi, operator, services
    from shim.json_provider import LegacyJSONProvider
    from shim.legacy import ratelimit
    from shim.legacy.headers import HeaderCaseMiddleware, StatusLineMiddleware

    settings = settings or config.load()
    app = Flask("shim")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = LegacyJSONProvider(app)
    # Opened here, started by the runner: services.Services.start / close.
    shared = services.Services.open(settings, upstream=upstream, store=store, clock=clock)
    services.init_app(app, shared)
    limiter = ratelimit.RouteLimiter(
        shared.counters, settings.rate_limit_per_second, legacy.rate_limits(settings))
    ratelimit.init_app(app, limiter)
    observability.init_app(app)  # first: every later hook and log line has the request id
    legacy.init_app(app)
    openapi.init_app(app)
    operator.init_app(app, limiter.failed_auth)  # one throttle for every failed credential
    if settings.trusted_proxy_hops or behind_front:
        # The client's address (failed-auth throttle, logs) comes from the trusted proxies.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # Flask's way to add middleware
            app.wsgi_app, x_for=hops + behind_front, x_proto=hops, x_host=hops)
    app.wsgi_app = StatusLineMiddleware(  # type: ignore[method-assign]  # as above
        HeaderCaseMiddleware(app.wsgi_app, settings.header_case))
    return app
