"""Per-client, per-route limits with Kong's ``X-RateLimit-*-second`` headers.

Like Kong 1.x's rate-limiting plugin, a window is one calendar second of the app's clock and
its counter is keyed by that second, so "remaining" means calls left in the current second
and a test can hold the clock still. Counters live in a ``limits`` storage named by settings
(``memory://`` for one process, ``redis://...`` to share counters between instances); the
storage's own expiry only cleans up the counters of past seconds. When the storage fails the
call is let through without headers and the failure logged, as Kong's ``fault_tolerant``
default did.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from limits import storage

from shim.errors import GatewayMessage

log = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit-second"
REMAINING_HEADER = "X-RateLimit-Remaining-second"
RATE_LIMITED = "API rate limit exceeded"
WINDOW_S = 1
# Counters of past seconds are never read again; keep them a little longer than a window so
# instances with slightly different clocks still share one.
_KEEP_S = 5
# After a storage failure, calls go through unlimited for this long without trying the
# storage again: an unreachable Redis must not add its timeout to every request.
STORAGE_RETRY_S = 1.0


REDIS_TIMEOUT_S = 0.25  # a counter on loopback or in the same zone answers in ~1 ms


def open_storage(uri: str, *, key_prefix: str) -> storage.Storage:
    """Return the ``limits`` storage named by ``uri``, with short timeouts for Redis."""
    if uri.startswith(("redis://", "rediss://")):
        return storage.storage_from_string(uri, key_prefix=key_prefix,
                                           socket_connect_timeout=REDIS_TIMEOUT_S,
                                           socket_timeout=REDIS_TIMEOUT_S)
    return storage.storage_from_string(uri)


class RouteLimiter:
    """Admits or refuses one call of a client on a route, and says what is left."""

    def __init__(self, storage_uri: str | storage.Storage, default: int,
                 overrides: dict[str, int]) -> None:
        self._storage = (storage.storage_from_string(storage_uri)
                         if isinstance(storage_uri, str) else storage_uri)
        self._default = default
        self._overrides = dict(overrides)
        self._storage_down_until = 0.0
        self._down_lock = threading.Lock()

    def limit_for(self, route: str) -> int:
        """Return the calls per second allowed on ``route``."""
        return self._overrides.get(route, self._default)

    def admit(self, client_id: str, route: str, now: float) -> dict[str, str]:
        """Count the call and return the headers to send; raise the 429 when over the limit."""
        limit = self.limit_for(route)
        window = math.floor(now / WINDOW_S) * WINDOW_S
        if time.monotonic() < self._storage_down_until:
            return {}
        try:
            # One atomic increment gives this call's place in the window: no read-back that
            # other calls or the window's end could change in between.
            used = self._storage.incr(_key(client_id, route, window), _KEEP_S)
        except Exception as error:  # any storage failure: fail open, like Kong
            with self._down_lock:
                self._storage_down_until = time.monotonic() + STORAGE_RETRY_S
            log.error("rate-limit storage failed (%s): calls let through without a limit "
                      "for %.0f s", type(error).__name__, STORAGE_RETRY_S)
            return {}
        headers = {LIMIT_HEADER: str(limit), REMAINING_HEADER: str(max(limit - used, 0))}
        if used > limit:
            retry_after = max(1, math.ceil(window + WINDOW_S - now))
            raise GatewayMessage(429, RATE_LIMITED,
                                 headers={**headers, "Retry-After": str(retry_after)})
        return headers


def _key(client_id: str, route: str, window: float) -> str:
    # Route (a Flask endpoint name) and window hold no "/" and come first, so a client id
    # containing one cannot make two keys collide.
    return f"shim-rate/{route}/{int(window)}/{client_id}"
