"""Admission control: bulkheads that refuse a request at once rather than queue it.

Each process serves at most ``max_in_flight`` requests at once, at most
``max_in_flight_per_seller`` for one seller and ``max_in_flight_per_client`` for one client
(``Settings.in_flight_limits``); token calls hold at most a quarter of the process's places
(``token_share``), so a flood of them, each refused at once by the hashing cap yet holding a
place meanwhile, never leaves API calls without one. Past a limit the answer is immediate, from
``shim.errors.OUTCOMES``: the service's 503 with Retry-After for the process or the seller,
Kong's 429 with Retry-After for the client (the token endpoint keeps its OAuth2 shape). Nothing
here waits, so a refused request holds a thread for a few milliseconds, and the threads
gunicorn runs beyond ``max_in_flight`` stay free for /healthz, /readyz and /metrics, which are
never counted. The waiters for one stock lot's lock are bounded where the lock is taken
(``shim.locks``, ``lot_queue``).

A request takes its places in order: the process's before anything else is done for it
(``enter``, a before_request hook: no token lookup for a request that will be refused), then
its client's and its seller's once the guard knows the caller (``admit``, after the rate
limiter). The places live on the request's ``Ticket`` and go back in ``release``, a
teardown_request hook, which Flask runs however the request ended: an answer, an error, an
exception it did not handle. (A streamed body must use ``stream_with_context``, which holds
the teardown until the stream closes, client disconnect included.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

from flask import Flask
from prometheus_client import Counter, Gauge

from shim.config import Settings
from shim.current import current_application, current_g, current_request
from shim.failures import ClientBusy, InstanceBusy, Overloaded, SellerBusy
from shim.legacy.auth import TOKEN_PATH
from shim.locks import LockQueueFull
from shim.metrics import Metrics

EXTENSION = "shim.admission"
# Never counted: what an orchestrator and a scraper must reach while the API is saturated.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def token_share(instance: int) -> int:
    """Return the places of ``instance`` token calls may hold at once: a quarter, at least one."""
    return max(1, instance // 4)


class Bulkhead:
    """At most ``limit`` holders per key at once; ``enter`` never waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._guard = threading.Lock()
        self._held: dict[Hashable, int] = {}

    def enter(self, key: Hashable = None) -> bool:
        """Take a place for ``key`` and return True, or return False when all are taken."""
        with self._guard:
            held = self._held.get(key, 0)
            if held >= self.limit:
                return False
            self._held[key] = held + 1
            return True

    def leave(self, key: Hashable = None) -> None:
        """Give back a place taken for ``key``."""
        with self._guard:
            held = self._held[key] - 1
            if held:
                self._held[key] = held
            else:
                del self._held[key]  # no entry per seller or client once idle

    def held(self, key: Hashable = None) -> int:
        """Return the places taken for ``key`` now."""
        with self._guard:
            return self._held.get(key, 0)

    def __len__(self) -> int:
        """Return the keys holding places now."""
        with self._guard:
            return len(self._held)


class Ticket:
    """The places one request holds; ``release`` gives them all back, once."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def hold(self, undo: Callable[[], None]) -> None:
        """Remember how to give back a place just taken."""
        self._undo.append(undo)

    def release(self) -> None:
        """Give back every place held, latest first."""
        while self._undo:
            self._undo.pop()()


class Admission:
    """The process's bulkheads: in all, per seller, per client."""

    def __init__(self, instance: int, seller: int, client: int, *,
                 in_flight: Gauge | None = None, refused: Counter | None = None) -> None:
        self.instance = Bulkhead(instance)
        self.tokens = Bulkhead(token_share(instance))
        self.sellers = Bulkhead(seller)
        self.clients = Bulkhead(client)
        self._in_flight = in_flight
        self._refused = refused

    @classmethod
    def of(cls, settings: Settings, metrics: Metrics | None = None) -> Admission:
        """Return the bulkheads the settings give, reporting to ``metrics``."""
        instance, seller, client = settings.in_flight_limits
        return cls(instance, seller, client,
                   in_flight=metrics.requests_in_flight if metrics else None,
                   refused=metrics.admission_refused if metrics else None)

    def enter(self, ticket: Ticket, *, token: bool = False) -> None:
        """Take a place in the process for a request (a token call: one of the token calls'
        share first), or raise ``InstanceBusy``."""
        if token:
            self._take(ticket, self.tokens, None, InstanceBusy)
        self._take(ticket, self.instance, None, InstanceBusy)
        if self._in_flight is not None:
            gauge = self._in_flight
            gauge.inc()
            ticket.hold(gauge.dec)

    def admit(self, ticket: Ticket, *, client: str, seller: str) -> None:
        """Take a place for the caller's client, then its seller; raise ``ClientBusy`` or
        ``SellerBusy`` when one is full (a noisy client meets its own limit first)."""
        self._take(ticket, self.clients, client, ClientBusy)
        self._take(ticket, self.sellers, seller, SellerBusy)

    def count(self, error: Exception) -> None:
        """Count a refusal by its scope (a full bulkhead, or a stock lot's full queue)."""
        if self._refused is not None and isinstance(error, (Overloaded, LockQueueFull)):
            self._refused.labels(error.scope).inc()

    def _take(self, ticket: Ticket, bulkhead: Bulkhead, key: Hashable,
              refusal: type[Overloaded]) -> None:
        if not bulkhead.enter(key):
            raise refusal(bulkhead.limit)
        ticket.hold(lambda: bulkhead.leave(key))


def init_app(app: Flask, admission: Admission) -> None:
    """Make ``admission`` this app's, and count every request but the exempt ones in it.

    Register before the guard: ``enter`` must run before authentication.
    """
    app.extensions[EXTENSION] = admission
    app.before_request(enter)
    app.teardown_request(release)


def get_admission() -> Admission:
    """Return the current app's bulkheads."""
    admission: Admission = current_application().extensions[EXTENSION]
    return admission


def enter() -> None:
    """Take the request's place in the process (before_request), unless its path is exempt."""
    path = current_request().path
    if path in EXEMPT_PATHS:
        return
    ticket = current_g().admission = Ticket()
    get_admission().enter(ticket, token=path == TOKEN_PATH)


def admit(client: str, seller: str) -> None:
    """Take the caller's places for its client and its seller (from the guard)."""
    ticket = current_g().get("admission")
    if ticket is None:  # an exempt path: nothing under /v1 is
        return
    get_admission().admit(ticket, client=client, seller=seller)


def release(_error: BaseException | None = None) -> None:
    """Give back every place the request took (teardown_request: however it ended)."""
    ticket = current_g().pop("admission", None)
    if ticket is not None:
        ticket.release()

