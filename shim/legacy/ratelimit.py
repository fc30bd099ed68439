"""Per-client, per-route limits with Kong's ``X-RateLimit-*-second`` headers.

Counting is the ``limits`` library's fixed window; its storage comes from settings
(``memory://`` for one process, ``redis://...`` to share counters between instances).
"""

from __future__ import annotations

import math

from limits import RateLimitItemPerSecond, storage, strategies

from shim.errors import GatewayMessage

LIMIT_HEADER = "X-RateLimit-Limit-second"
REMAINING_HEADER = "X-RateLimit-Remaining-second"


class RouteLimiter:
    """Admits or refuses one call of a client on a route, and says what is left."""

    def __init__(self, storage_uri: str, default: int, overrides: dict[str, int]) -> None:
        self._limiter = strategies.FixedWindowRateLimiter(storage.storage_from_string(storage_uri))
        self._default = RateLimitItemPerSecond(default)
        self._overrides = {route: RateLimitItemPerSecond(n) for route, n in overrides.items()}

    def admit(self, client_id: str, route: str, now: float) -> dict[str, str]:
        """Count the call and return the headers to send; raise the 429 when over the limit."""
        item = self._overrides.get(route, self._default)
        allowed = self._limiter.hit(item, client_id, route)
        reset_at, remaining = self._limiter.get_window_stats(item, client_id, route)
        headers = {LIMIT_HEADER: str(item.amount), REMAINING_HEADER: str(max(remaining, 0))}
        if not allowed:
            retry_after = max(1, math.ceil(reset_at - now))
            raise GatewayMessage(429, "API rate limit exceeded",
                                 headers={**headers, "Retry-After": str(retry_after)})
        return headers

