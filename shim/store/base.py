"""The storage interface the serving app uses, as a Protocol.

``SqlStore`` implements all of it (and the registry methods the CLI uses on top);
``MemoryStore`` is ``read_only``: the token lifecycle never asks it to write seller tokens,
and authorization refuses to start, so it has no ``update_tokens`` or auth states.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from shim.store.records import (
    App,
    Client,
    DayTally,
    IssuedToken,
    RouteUsage,
    Seller,
    TokenGrant,
)


class StoreSettings(Protocol):
    """The settings ``open_store`` and ``MemoryStore`` read (``shim.config.Settings`` has them).

    Declared here, not imported: the store sits below the settings and knows only this much.
    """

    @property
    def database_url(self) -> str | None: ...
    @property
    def encryption_key(self) -> str | None: ...
    @property
    def store_timeout_s(self) -> float: ...
    @property
    def store_pool_size(self) -> int: ...
    @property
    def lock_pool_size(self) -> int: ...
    @property
    def auto_migrate(self) -> bool: ...
    @property
    def sellers(self) -> Mapping[str, Seller]: ...
    @property
    def clients(self) -> Mapping[str, Client]: ...


class Locks(Protocol):
    """Per-key locks (the PATCH of one stock lot)."""

    def hold(self, key: Hashable, timeout: float,
             waiters: int | None = None) -> AbstractContextManager[None]:
        """Hold ``key``'s lock for the block; raise ``LockTimeout`` after ``timeout`` s, and
        ``LockQueueFull`` at once when ``waiters`` callers already wait for it here."""


class Store(Protocol):
    """What requests, the token lifecycle and the operator pages need from storage."""

    read_only: bool

    def get_client(self, client_id: str) -> Client | None:
        """Return the enabled client with this id, or ``None``."""

    def list_clients(self) -> list[Client]:
        """Return every client."""

    def get_app(self, app_key: str) -> App | None:
        """Return the app with this key, or ``None``."""

    def get_seller(self, name: str) -> Seller | None:
        """Return the seller with this name, or ``None``."""

    def list_sellers(self) -> list[Seller]:
        """Return every seller."""

    def save_token(self, digest: str, token: IssuedToken) -> None:
        """Store an issued legacy token under its digest."""

    def purge_tokens(self, now: float) -> int:
        """Delete expired issued tokens (and authorization states); return how many tokens."""

    def find_caller(self, digest: str, now: float) -> tuple[IssuedToken, Client] | None:
        """Return the unexpired token under ``digest`` and its enabled client, or ``None``."""

    def update_tokens(self, name: str, decide: Callable[[Seller], Any], *,
                      result: str = "refreshed") -> Seller:
        """Lock the seller, re-read it, write what ``decide`` returns (database mode)."""

    def store_grant(self, name: str, grant: TokenGrant, *, result: str = "imported") -> Seller:
        """Replace the seller's tokens (database mode)."""

    def save_auth_state(self, digest: str, seller: str, expires_at: float) -> None:
        """Remember an authorization ``state`` issued for ``seller`` (database mode)."""

    def take_auth_state(self, digest: str, now: float) -> tuple[str, float] | None:
        """Consume a state; return (seller, expiry) if it was valid (database mode)."""

    def add_usage(self, counts: Mapping[tuple[str, int], int],
                  days: Mapping[tuple[str, str, int], DayTally] | None = None) -> None:
        """Add call counts per (client id, hour), and tallies per (client id, route, day)."""

    def usage_since(self, hour: int) -> dict[str, int]:
        """Return calls per client from ``hour`` on."""

    def usage_by_route(self, since_day: int) -> list[RouteUsage]:
        """Return each client's routes with their daily tallies from ``since_day`` on."""

    def purge_usage(self, before: float) -> int:
        """Delete usage of the days before the one holding ``before``; return daily rows."""

    def ping(self) -> None:
        """Raise unless storage answers."""

    def locks(self) -> Locks:
        """Return per-key locks as wide as this store reaches (process or database)."""

    def close(self) -> None:
        """Release the connections (nothing to release in memory)."""
