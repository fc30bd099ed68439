"""The app factory: ``create_app`` is the only way to get the legacy API's Flask app.

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

PICKUP_JOBS_LIST = "pickup_jobs.list_pickup_jobs"


def create_app(
    settings: Settings | None = None,
    *,
    upstream: LazadaClient | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """Return a configured shim app; settings default to the file and environment."""
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from shim import config, legacy, observability, openapi, operator, services
    from shim.counters import SharedCounters
    from shim.legacy import ratelimit
    from shim.legacy.headers import HeaderCaseMiddleware, StatusLineMiddleware
    from shim.metrics import Metrics
    from shim.periodic import Periodic
    from shim.store import open_store
    from shim.token_lifecycle import SellerTokens
    from shim.usage import UsageRecorder

    settings = settings or config.load()
    app = Flask("shim")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # keep the legacy member order
    app.json.compact = True
    store = store or open_store(settings, clock=clock)
    metrics = Metrics()
    shared = services.Services(
        settings=settings,
        upstream=upstream or services.build_client(settings, settings.app_key,
                                                   settings.app_secret, metrics=metrics),
        store=store,
        counters=SharedCounters.open(settings.rate_limit_storage,
                                     key_prefix=settings.rate_limit_key_prefix),
        usage=UsageRecorder(store, clock=clock),
        metrics=metrics,
        clock=clock,
        locks=store.locks(),
    )
    shared.tokens = SellerTokens(store, shared.upstream_for, margin_s=settings.refresh_margin_s,
                                 metrics=metrics, clock=clock)
    services.init_app(app, shared)
    ratelimit.init_app(app, ratelimit.RouteLimiter(
        shared.counters, settings.rate_limit_per_second,
        {PICKUP_JOBS_LIST: settings.pickup_jobs_rate_limit_per_second}))
    if settings.background_tasks and not store.read_only:
        app.extensions["shim.refresher"] = Periodic(
            "token-refresher", settings.refresh_interval_s, shared.tokens.refresh_due).start()
        app.extensions["shim.usage"] = shared.usage.start(settings.usage_flush_interval_s)
        # Issued legacy tokens and authorization states expire; without this they would
        # stay in the database for good.
        app.extensions["shim.purger"] = Periodic(
            "token-purger", settings.purge_interval_s,
            lambda: store.purge_tokens(clock())).start()
    observability.init_app(app)  # first: every later hook and log line has the request id
    legacy.init_app(app)
    openapi.init_app(app)
    app.register_blueprint(operator.bp)
    if settings.trusted_proxy_hops:
        # The client's address (failed-auth throttle, logs) comes from the trusted proxies.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.wsgi_app = StatusLineMiddleware(HeaderCaseMiddleware(app.wsgi_app,
                                                             settings.header_case))
    return app
