"""The records storage keeps: apps, sellers with their tokens, legacy clients, issued tokens,
and the outcome of a token refresh that ``Store.update_tokens`` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DAY_S = 86_400  # a UTC day in seconds: usage is counted and kept per day

@dataclass(frozen=True)
class App:
    """A Lazada Open Platform app: its key, and the secret every call is signed with."""

    app_key: str
    app_secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenGrant:
    """What a token answer (create or refresh) gives; expiries are absolute epoch seconds."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: float
    refresh_expires_at: float
    account: str | None = None
    country: str | None = None
    user_info: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RefreshFailed:
    """A refresh that did not produce tokens; ``reauthorize`` when only the seller can fix it,
    ``retire_access`` when the platform has refused the current access token too."""

    reason: str
    reauthorize: bool = False
    retire_access: bool = False


@dataclass(frozen=True)
class Seller:
    """A seller (one RedMart store) the shim calls the platform for, with its token state.

    ``generation`` grows by one on every token change: a refresh re-reads it under a lock
    to know whether somebody else already refreshed this expiry.
    """

    name: str
    store_id: str
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    access_expires_at: float | None = None
    refresh_expires_at: float | None = None
    region: str = "sg"
    app_key: str | None = None  # None: the app of the settings
    account: str | None = None
    country: str | None = None
    user_info: tuple[dict[str, Any], ...] = ()
    generation: int = 0
    needs_reauth: bool = False
    reauth_reason: str | None = None
    last_refresh_at: float | None = None
    last_refresh_result: str | None = None


@dataclass(frozen=True)
class Client:
    """A legacy API client: its secret digest, the scopes it may ask for, its seller."""

    client_id: str
    secret_digest: str = field(repr=False)
    scopes: frozenset[str]
    seller: str
    enabled: bool = True
    created_at: float | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A legacy bearer token as stored: only its digest identifies it."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass(frozen=True)
class DayTally:
    """Calls of one client on one route during one UTC day, as counted or as stored.

    ``first_at``/``last_at`` (epoch seconds) bound the calls counted; ``errors`` is how many
    were answered with an error status (4xx or 5xx).
    """

    calls: int
    errors: int
    first_at: float
    last_at: float

    def plus(self, other: DayTally) -> DayTally:
        """Return both tallies as one."""
        return DayTally(self.calls + other.calls, self.errors + other.errors,
                        min(self.first_at, other.first_at), max(self.last_at, other.last_at))


@dataclass(frozen=True)
class RouteUsage:
    """What storage holds on one client's calls of one route: first and last call ever
    seen (within retention), and calls and errors per day (days since the epoch)."""

    client_id: str
    route: str
    first_at: float
    last_at: float
    days: dict[int, tuple[int, int]] = field(default_factory=dict)  # day: (calls, errors)
