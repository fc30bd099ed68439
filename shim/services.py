"""The app's collaborators, built complete by ``Services.open`` and released by ``close``.

``create_app`` opens them and starts nothing. The runner of a serving process (``serve``'s
gunicorn hooks, ``serve --dev``, the demo, ``record``) calls ``start`` for the background
work and ``close`` on shutdown::

    with get_services(app).start():
        server.serve_forever()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from flask import Flask, current_app

from shim.config import Settings
from shim.counters import SharedCounters
from shim.metrics import Metrics, breaker_observer, upstream_observer
from shim.periodic import Periodic
from shim.store import Store, open_store
from shim.store.base import Locks
from shim.store.records import Seller
from shim.token_lifecycle import SellerTokens
from shim.tracing import Tracing
from shim.upstream.breaker import Breakers
from shim.upstream.client import LazadaClient
from shim.upstream_health import UpstreamHealth
from shim.usage import UsageRecorder

EXTENSION = "shim"


class Closeable(Protocol):
    """Something holding connections or threads until ``close``."""

    def close(self) -> None:
        """Release what it holds."""


def build_client(settings: Settings, app_key: str, app_secret: str, *,
                 metrics: Metrics | None = None, tracing: Tracing | None = None,
                 breakers: Breakers | None = None) -> LazadaClient:
    """Return a Lazada client for one app with the settings' endpoints and deadlines (and
    circuit breakers, for a serving app's clients)."""
    observers = [upstream_observer(metrics)] if metrics else []
    if tracing is not None:
        observers.append(tracing.observe)
    return LazadaClient(
        observers=observers,
        breakers=breakers,
        app_key=app_key,
        app_secret=app_secret,
        api_url=settings.api_url,
        auth_url=settings.auth_url,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        read_retries=settings.read_retries,
        pool_size=settings.upstream_pool_size,
    )


class PlatformClients:
    """The platform client of each app: the settings' app, and others made on first use.

    ``watch`` hands each client, present and future, to a callback (the recorder wires
    itself into them that way); ``close`` closes the clients made here.
    """

    def __init__(self, settings: Settings, default: LazadaClient, store: Store,
                 metrics: Metrics, *, owns_default: bool, tracing: Tracing | None = None,
                 breakers: Breakers | None = None,
                 ) -> None:
        self.settings = settings
        self.default = default
        self._store = store
        self._metrics = metrics
        self._tracing = tracing
        self._breakers = breakers
        self._owns_default = owns_default
        self._others: dict[str, LazadaClient] = {}
        self._watchers: list[Callable[[LazadaClient], object]] = []
        self._lock = threading.Lock()

    def for_seller(self, seller: Seller) -> LazadaClient:
        """Return the client of the app the seller authorized (the settings' app by default)."""
        if seller.app_key is None or seller.app_key == self.default.app_key:
            return self.default
        with self._lock:
            client = self._others.get(seller.app_key)
            if client is None:
                app = self._store.get_app(seller.app_key)
                if app is None:
                    raise LookupError(f"seller {seller.name!r} names unknown app "
                                      f"{seller.app_key!r}")
                client = build_client(self.settings, app.app_key, app.app_secret,
                                      metrics=self._metrics, tracing=self._tracing,
                                      breakers=self._breakers)
                for watcher in self._watchers:
                    watcher(client)
                self._others[seller.app_key] = client
        return client

    def watch(self, watcher: Callable[[LazadaClient], object]) -> None:
        """Call ``watcher`` with every client now, and with each one made from now on."""
        with self._lock:
            self._watchers.append(watcher)
            clients = [self.default, *self._others.values()]
        for client in clients:
            watcher(client)

    def close(self) -> None:
        """Close the clients made here (an injected default stays its owner's to close)."""
        with self._lock:
            made, self._others = list(self._others.values()), {}
        for client in made:
            client.close()
        if self._owns_default:
            self.default.close()


class UnknownApis:
    """The platform APIs this process found missing (``InvalidApiPath``): their fallbacks
    serve from then on, without asking the platform again."""

    def __init__(self) -> None:
        self._apis: set[str] = set()

    def __contains__(self, api: object) -> bool:
        return api in self._apis

    def add(self, api: str) -> None:
        """Remember that the platform does not know ``api``."""
        self._apis.add(api)


@dataclass(frozen=True, kw_only=True, eq=False)
class Services:
    """Everything a request may need besides the request itself; complete when built."""

    settings: Settings
    clients: PlatformClients
    store: Store
    tokens: SellerTokens
    usage: UsageRecorder
    counters: SharedCounters  # the rate limiter's and the authentication throttle's
    metrics: Metrics
    locks: Locks
    tracing: Tracing | None = None  # with the tracing setting on (shim.tracing)
    # The circuit breakers of the platform APIs, per app (shim.upstream.breaker); an injected
    # ``upstream`` client uses them only if it was built with them.
    breakers: Breakers
    clock: Callable[[], float] = time.time
    unknown_apis: UnknownApis = field(default_factory=UnknownApis)
    health: UpstreamHealth = field(default_factory=UpstreamHealth)  # this process's last hour
    # What ``open`` opened (not what the caller passed in), closed by ``close`` in reverse.
    owned: tuple[Closeable, ...] = ()
    _tasks: list[Periodic] = field(default_factory=list, init=False, repr=False)
    _lifetime: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, upstream: LazadaClient | None = None,
             store: Store | None = None, clock: Callable[[], float] = time.time) -> Services:
        """Return the services of ``settings``, opening the store, the platform client and
        the counters unless given; nothing starts running until ``start``."""
        owned: list[Closeable] = []
        if store is None:
            opened = open_store(settings, clock=clock)
            owned.append(opened)
            # MemoryStore is the read-only kind: nothing ever asks it to write tokens.
            store = cast(Store, opened)
        metrics = Metrics()
        metrics.track_sellers(store.list_sellers)
        tracing = Tracing.open(settings)
        if tracing is not None:
            owned.append(tracing)  # closed after the clients: their last spans are sent
        breakers = Breakers(failures=settings.breaker_failures, open_s=settings.breaker_open_s,
                            observer=breaker_observer(metrics, lambda: breakers))
        clients = PlatformClients(
            settings,
            upstream or build_client(settings, settings.app_key, settings.app_secret,
                                     metrics=metrics, tracing=tracing, breakers=breakers),
            store, metrics, owns_default=upstream is None, tracing=tracing, breakers=breakers)
        counters = SharedCounters.open(settings.rate_limit_storage,
                                       key_prefix=settings.rate_limit_key_prefix)
        owned += [clients, counters]
        health = UpstreamHealth(clock=clock)
        clients.watch(health.watch)  # every platform client, present and future
        return cls(
            settings=settings,
            clients=clients,
            store=store,
            tokens=SellerTokens(store, clients.for_seller, margin_s=settings.refresh_margin_s,
                                metrics=metrics, clock=clock),
            usage=UsageRecorder(store, clock=clock),
            counters=counters,
            metrics=metrics,
            tracing=tracing,
            locks=store.locks(),
            breakers=breakers,
            clock=clock,
            health=health,
            owned=tuple(owned),
        )

    @property
    def upstream(self) -> LazadaClient:
        """Return the client of the settings' app."""
        return self.clients.default

    def upstream_for(self, seller: Seller) -> LazadaClient:
        """Return the client of the app the seller authorized (the settings' app by default)."""
        return self.clients.for_seller(seller)

    @property
    def running(self) -> bool:
        """Return whether the background work runs."""
        return any(task.running for task in self._tasks) or self.usage.running

    def start(self) -> Services:
        """Start the background work of a serving process and return self (idempotent).

        In database mode (and unless ``background_tasks`` is off): refresh the sellers'
        tokens before they expire, write the usage counts in batches, and delete expired
        issued tokens and authorization states, which would otherwise stay for good, and
        usage past its retention.
        """
        settings, store = self.settings, self.store
        with self._lifetime:
            if self._tasks or self._closed.is_set() or store.read_only \
                    or not settings.background_tasks:
                return self
            self._tasks.append(Periodic("token-refresher", settings.refresh_interval_s,
                                        self.tokens.refresh_due).start())
            self._tasks.append(Periodic("token-purger", settings.purge_interval_s,
                                        self.purge).start())
            self.usage.start(settings.usage_flush_interval_s)
        return self

    def purge(self) -> None:
        """Delete expired issued tokens and authorization states, and the usage counts
        older than ``usage_retention_days`` (the purger's periodic run)."""
        now = self.clock()
        self.store.purge_tokens(now)
        self.store.purge_usage(now - self.settings.usage_retention_days * 86400)

    def close(self) -> None:
        """Stop the background work, write the pending usage counts, then close what
        ``open`` opened (pools, sessions, counters); idempotent."""
        with self._lifetime:
            if self._closed.is_set():
                return
            self._closed.set()
            tasks, self._tasks[:] = list(self._tasks), []
        for task in tasks:
            task.stop()
        self.usage.stop()  # writes what is pending, while the store is still open
        for resource in reversed(self.owned):
            resource.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def init_app(app: Flask, services: Services) -> None:
    """Attach ``services`` to ``app``."""
    app.extensions[EXTENSION] = services


def get_services(app: Flask | None = None) -> Services:
    """Return the services of ``app`` (by default the current app)."""
    services: Services = (app or current_app).extensions[EXTENSION]
    return services


def services_of(app: object) -> Services | None:
    """Return the services of ``app`` if it is a shim app, else ``None`` (gunicorn's hooks
    see whatever WSGI app the configuration serves: the bench's passthrough too)."""
    extensions = getattr(app, "extensions", None)
    found = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
    return found if isinstance(found, Services) else None
