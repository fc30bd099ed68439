"""``MemoryStore``: clients and sellers from settings, issued tokens in a dict.

Issued tokens do not survive a restart in this mode; legacy clients fetch a new token on
401, which is what they did when a Kong token expired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from shim.locks import KeyedLocks
from shim.store.errors import StoreError
from shim.store.records import (
    DAY_S,
    App,
    Client,
    DayTally,
    IssuedToken,
    RouteUsage,
    Seller,
    TokenGrant,
)

if TYPE_CHECKING:
    from shim.store.base import StoreSettings

READ_ONLY = "the registry is the settings file (declarative mode): this needs a database"
_PURGE_EVERY = 1024  # sweep expired tokens once this many were issued since the last sweep


class MemoryStore:
    """A ``Store`` that keeps everything in this process; sellers and clients are read-only."""

    read_only = True  # like Kong's DB-less mode: the file is the registry

    def __init__(self, settings: StoreSettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._clients = dict(settings.clients)
        self._sellers = dict(settings.sellers)
        self._tokens: dict[str, IssuedToken] = {}
        self._usage: dict[tuple[str, int], int] = {}
        self._days: dict[tuple[str, str, int], DayTally] = {}
        self._routes: dict[tuple[str, str], tuple[float, float]] = {}  # first, last call
        self._issued_since_purge = 0
        self._lock = threading.Lock()

    def get_client(self, client_id: str) -> Client | None:
        client = self._clients.get(client_id)
        return client if client and client.enabled else None

    def get_app(self, app_key: str) -> App | None:
        """Declarative mode knows only the settings' app: ``None``."""
        return None

    def get_seller(self, name: str) -> Seller | None:
        return self._sellers.get(name)

    def list_sellers(self) -> list[Seller]:
        return sorted(self._sellers.values(), key=lambda seller: seller.name)

    def list_clients(self) -> list[Client]:
        return sorted(self._clients.values(), key=lambda client: client.client_id)

    def locks(self) -> KeyedLocks:
        """Return in-process locks."""
        return KeyedLocks()

    def ping(self) -> None:
        """Nothing to reach: always ready."""

    def close(self) -> None:
        """Nothing to release."""

    def add_usage(self, counts: Mapping[tuple[str, int], int],
                  days: Mapping[tuple[str, str, int], DayTally] | None = None) -> None:
        with self._lock:
            for (client_id, hour), calls in counts.items():
                self._usage[(client_id, hour)] = self._usage.get((client_id, hour), 0) + calls
            for (client_id, route, day), tally in (days or {}).items():
                known = self._days.get((client_id, route, day))
                self._days[(client_id, route, day)] = known.plus(tally) if known else tally
                first, last = self._routes.get((client_id, route), (tally.first_at,
                                                                    tally.last_at))
                self._routes[(client_id, route)] = (min(first, tally.first_at),
                                                    max(last, tally.last_at))

    def usage_since(self, hour: int) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (client_id, at), calls in list(self._usage.items()):
            if at >= hour:
                totals[client_id] = totals.get(client_id, 0) + calls
        return totals

    def usage_by_route(self, since_day: int) -> list[RouteUsage]:
        with self._lock:
            found = {key: RouteUsage(key[0], key[1], first, last)
                     for key, (first, last) in sorted(self._routes.items())}
            for (client_id, route, day), tally in self._days.items():
                if day >= since_day and (client_id, route) in found:
                    found[(client_id, route)].days[day] = (tally.calls, tally.errors)
        return list(found.values())

    def purge_usage(self, before: float) -> int:
        day = int(before // DAY_S)
        with self._lock:
            old = [key for key in self._days if key[2] < day]
            for key in old:
                del self._days[key]
            self._usage = {key: calls for key, calls in self._usage.items()
                           if key[1] >= day * 24}
            self._routes = {key: span for key, span in self._routes.items()
                            if span[1] >= day * DAY_S}
        return len(old)

    def save_token(self, digest: str, token: IssuedToken) -> None:
        with self._lock:
            self._tokens[digest] = token
            self._issued_since_purge += 1
            if self._issued_since_purge >= _PURGE_EVERY:
                self._purge(self._clock())

    def find_token(self, digest: str, now: float) -> IssuedToken | None:
        token = self._tokens.get(digest)
        if token is None or token.expires_at <= now:
            return None
        return token

    def find_caller(self, digest: str, now: float) -> tuple[IssuedToken, Client] | None:
        token = self.find_token(digest, now)
        if token is None:
            return None
        client = self.get_client(token.client_id)
        return (token, client) if client else None

    def purge_tokens(self, now: float) -> int:
        with self._lock:
            return self._purge(now)

    # The writes of database mode: read_only tells callers never to ask for them.

    def update_tokens(self, name: str, decide: Callable[[Seller], Any], *,
                      result: str = "refreshed") -> Seller:
        """Refuse: a declarative seller's tokens live in the settings file."""
        raise StoreError(READ_ONLY)

    def store_grant(self, name: str, grant: TokenGrant, *, result: str = "imported") -> Seller:
        """Refuse: a declarative seller's tokens live in the settings file."""
        raise StoreError(READ_ONLY)

    def save_auth_state(self, digest: str, seller: str, expires_at: float) -> None:
        """Refuse: authorizing a seller needs database mode."""
        raise StoreError(READ_ONLY)

    def take_auth_state(self, digest: str, now: float) -> tuple[str, float] | None:
        """Refuse: authorizing a seller needs database mode."""
        raise StoreError(READ_ONLY)

    def _purge(self, now: float) -> int:
        before = len(self._tokens)
        self._tokens = {d: t for d, t in self._tokens.items() if t.expires_at > now}
        self._issued_since_purge = 0
        return before - len(self._tokens)
