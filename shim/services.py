"""The app's collaborators (upstream clients, store, tokens, counters, locks, usage, clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from shim.config import Settings
from shim.counters import SharedCounters
from shim.locks import KeyedLocks
from shim.metrics import Metrics, upstream_observer
from shim.store import Store
from shim.store.records import Seller
from shim.token_lifecycle import SellerTokens
from shim.upstream.client import LazadaClient
from shim.usage import UsageRecorder


def build_client(settings: Settings, app_key: str, app_secret: str, *,
                 metrics: Metrics | None = None) -> LazadaClient:
    """Return a Lazada client for one app with the settings' endpoints and deadlines."""
    return LazadaClient(
        observer=upstream_observer(metrics) if metrics else None,
        app_key=app_key,
        app_secret=app_secret,
        api_url=settings.api_url,
        auth_url=settings.auth_url,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        read_retries=settings.read_retries,
        pool_size=settings.upstream_pool_size,
    )


@dataclass
class Services:
    """Everything a request may need besides the request itself."""

    settings: Settings
    upstream: LazadaClient  # the settings' app
    store: Store
    counters: SharedCounters  # the rate limiter's and the authentication throttle's
    tokens: SellerTokens | None = None
    usage: UsageRecorder | None = None
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    single_location_api: bool = True  # turned off once the platform says the path is unknown
    _other_apps: dict[str, LazadaClient] = field(default_factory=dict)
    _apps_lock: threading.Lock = field(default_factory=threading.Lock)

    def upstream_for(self, seller: Seller) -> LazadaClient:
        """Return the client of the app the seller authorized (the settings' app by default)."""
        if seller.app_key in (None, self.upstream.app_key):
            return self.upstream
        with self._apps_lock:
            client = self._other_apps.get(seller.app_key)
            if client is None:
                app = self.store.get_app(seller.app_key)
                if app is None:
                    raise LookupError(f"seller {seller.name!r} names unknown app "
                                      f"{seller.app_key!r}")
                client = build_client(self.settings, app.app_key, app.app_secret,
                                      metrics=self.metrics)
                self._other_apps[seller.app_key] = client
        return client


def init_app(app: Flask, services: Services) -> None:
    """Attach ``services`` to ``app``."""
    app.extensions["shim"] = services


def get_services() -> Services:
    """Return the current app's services."""
    return current_app.extensions["shim"]
