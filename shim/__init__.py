"""redmart-shim: the retired RedMart Partner API (v1), served over Lazada's /rss APIs."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask

from shim import config, legacy, services
from shim.config import Settings
from shim.legacy.headers import HeaderCaseMiddleware
from shim.legacy.ratelimit import RouteLimiter
from shim.store import MemoryStore, Store
from shim.upstream import LazadaClient

PICKUP_JOBS_LIST = "pickup_jobs.list_pickup_jobs"


def create_app(
    settings: Settings | None = None,
    *,
    upstream: LazadaClient | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """Return a configured shim app; settings default to the file and environment."""
    settings = settings or config.load()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # keep the legacy member order
    app.json.compact = True
    services.init_app(app, services.Services(
        settings=settings,
        upstream=upstream or LazadaClient(
            app_key=settings.app_key,
            app_secret=settings.app_secret,
            api_url=settings.api_url,
            auth_url=settings.auth_url,
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            read_retries=settings.read_retries,
        ),
        store=store or MemoryStore(settings, clock=clock),
        limiter=RouteLimiter(
            settings.rate_limit_storage,
            settings.rate_limit_per_second,
            {PICKUP_JOBS_LIST: settings.pickup_jobs_rate_limit_per_second},
        ),
        clock=clock,
    ))
    legacy.init_app(app)
    app.wsgi_app = HeaderCaseMiddleware(app.wsgi_app, settings.header_case)
    return app
