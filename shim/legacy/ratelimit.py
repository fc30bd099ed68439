"""Per-client, per-route limits with Kong's ``X-RateLimit-*-second`` headers, and the
token endpoint's throttle on failed client authentication.

Like Kong 1.x's rate-limiting plugin, a window is one calendar second of the app's clock and
its counter is keyed by that second, so "remaining" means calls left in the current second
and a test can hold the clock still. Counters live in a ``limits`` storage named by settings
(``memory://`` for one process, ``redis://...`` to share counters between instances); the
storage's own expiry only cleans up the counters of past windows. When the storage fails the
call is let through without headers and the failure logged, as Kong's ``fault_tolerant``
default did; the authentication throttle fails open the same way (a Redis outage must not
stop every client from getting tokens; each guess still costs a scrypt verification).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from limits import storage

from shim.errors import GatewayMessage

log = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit-second"
REMAINING_HEADER = "X-RateLimit-Remaining-second"
RATE_LIMITED = "API rate limit exceeded"
WINDOW_S = 1
# Counters of past windows are never read again; keep them a little longer than a window so
# instances with slightly different clocks still share one.
_KEEP_S = 5
# After a storage failure, calls go through unlimited for this long without trying the
# storage again: an unreachable Redis must not add its timeout to every request.
STORAGE_RETRY_S = 1.0
# Failed client authentications allowed per client id and address in one calendar minute;
# the next attempt, even with the right secret, waits for the next minute.
FAILED_AUTH_LIMIT = 10
FAILED_AUTH_WINDOW_S = 60

REDIS_TIMEOUT_S = 0.25  # a counter on loopback or in the same zone answers in ~1 ms


class CounterStorage(Protocol):
    """What the limiter needs of a storage: an atomic counter that expires."""

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (which lives ``expiry`` seconds); return the new count."""
        ...


def open_storage(uri: str, *, key_prefix: str) -> CounterStorage:
    """Return the counter storage named by ``uri``: ``limits``' Redis storage (short
    timeouts), ``ProcessCounters`` for ``memory://``, or any other ``limits`` storage."""
    if uri.startswith(("redis://", "rediss://")):
        return _limits_storage(uri, key_prefix=key_prefix,
                               socket_connect_timeout=REDIS_TIMEOUT_S,
                               socket_timeout=REDIS_TIMEOUT_S)
    if uri == "memory://":
        return ProcessCounters()
    return _limits_storage(uri)


def _limits_storage(uri: str, **options: float | str | bool) -> storage.Storage:
    found = storage.storage_from_string(uri, **options)
    if not isinstance(found, storage.Storage):  # limits' async+... storages
        raise ValueError(f"rate-limit storage {uri.split(':', 1)[0]!r} is asynchronous")
    return found


class ProcessCounters:
    """Expiring counters in this process, with the ``incr`` of a ``limits`` storage.

    ``limits``' own memory storage schedules a timer thread for each new key, and with a key
    per client, route and second that cost 13% of a request in the benchmark; here expired
    keys are swept in passing instead.
    """

    _SWEEP_EVERY = 1024

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, list[float]] = {}  # key -> [count, expires at]
        self._lock = threading.Lock()
        self._since_sweep = 0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (which lives ``expiry`` seconds); return the new count."""
        now = self._clock()
        with self._lock:
            entry = self._counts.get(key)
            if entry is None or entry[1] <= now:
                entry = self._counts[key] = [0, now + expiry]
            entry[0] += amount
            self._since_sweep += 1
            if self._since_sweep >= self._SWEEP_EVERY:
                self._counts = {k: e for k, e in self._counts.items() if e[1] > now}
                self._since_sweep = 0
            return int(entry[0])


class _Counters:
    """Atomic counters in a ``limits`` storage that fail open, with a pause after a failure."""

    def __init__(self, counters: CounterStorage) -> None:
        self._storage = counters
        self._down_until = 0.0
        self._down_lock = threading.Lock()

    def add(self, key: str, amount: int, expiry: int) -> int | None:
        """Add ``amount`` to ``key`` and return the new value; ``None`` if storage is down."""
        if time.monotonic() < self._down_until:
            return None
        try:
            return self._storage.incr(key, expiry, amount=amount)
        except Exception as error:  # any storage failure: fail open, like Kong
            with self._down_lock:
                self._down_until = time.monotonic() + STORAGE_RETRY_S
            log.error("rate-limit storage failed (%s): calls let through without a limit "
                      "for %.0f s", type(error).__name__, STORAGE_RETRY_S)
            return None


class RouteLimiter:
    """Admits or refuses one call of a client on a route, and says what is left."""

    def __init__(self, storage_uri: str | CounterStorage, default: int,
                 overrides: dict[str, int]) -> None:
        self._counters = _Counters(_limits_storage(storage_uri)
                                   if isinstance(storage_uri, str) else storage_uri)
        self._default = default
        self._overrides = dict(overrides)
        # The token endpoint's throttle shares the storage, so instances share it too.
        self.failed_auth = FailedAuthThrottle(self._counters)

    def limit_for(self, route: str) -> int:
        """Return the calls per second allowed on ``route``."""
        return self._overrides.get(route, self._default)

    def admit(self, client_id: str, route: str, now: float) -> dict[str, str]:
        """Count the call and return the headers to send; raise the 429 when over the limit."""
        limit = self.limit_for(route)
        window = math.floor(now / WINDOW_S) * WINDOW_S
        # One atomic increment gives this call's place in the window: no read-back that
        # other calls or the window's end could change in between.
        used = self._counters.add(_key(client_id, route, window), 1, _KEEP_S)
        if used is None:
            return {}
        headers = {LIMIT_HEADER: str(limit), REMAINING_HEADER: str(max(limit - used, 0))}
        if used > limit:
            retry_after = max(1, math.ceil(window + WINDOW_S - now))
            raise GatewayMessage(429, RATE_LIMITED,
                                 headers={**headers, "Retry-After": str(retry_after)})
        return headers


@dataclass(frozen=True)
class AuthAttempt:
    """One client authentication at the token endpoint, as the throttle counted it."""

    key: str | None  # None: not counted (storage down)
    retry_after: int | None = None  # set: refused, whatever the secret

    @property
    def refused(self) -> bool:
        """Return whether the attempt must be refused without checking the secret."""
        return self.retry_after is not None


class FailedAuthThrottle:
    """Limits failed client authentications per (client id, caller address) and minute.

    Every attempt takes a place in its window before the secret is checked, and gives it
    back when the secret was right: concurrent guesses cannot all slip in before the first
    failure is counted. Over the limit, the attempt is refused *without* checking the
    secret: a throttle that still let the right secret through would answer every guess,
    right or wrong, and so test secrets at full speed. The caller's address is part of the
    key because of that: someone spamming a client's id elsewhere exhausts only their own
    (id, address) pair, never the real client's.
    """

    def __init__(self, counters: _Counters, *, limit: int = FAILED_AUTH_LIMIT,
                 window_s: int = FAILED_AUTH_WINDOW_S) -> None:
        self._counters = counters
        self.limit = limit
        self.window_s = window_s

    def attempt(self, client_id: str, address: str | None, now: float) -> AuthAttempt:
        """Count an authentication attempt; the result says whether it may go on."""
        window = math.floor(now / self.window_s) * self.window_s
        key = _auth_key(client_id, address, window)
        used = self._counters.add(key, 1, self.window_s + _KEEP_S)
        if used is None:
            return AuthAttempt(key=None)
        if used > self.limit:
            if used == self.limit + 1:  # once per window, not once per refused guess
                log.warning("client authentication throttled: client %.64r from %s after %d "
                            "failures this minute", client_id, address, self.limit)
            return AuthAttempt(key=key, retry_after=max(1, math.ceil(window + self.window_s
                                                                     - now)))
        return AuthAttempt(key=key)

    def succeeded(self, attempt: AuthAttempt) -> None:
        """Give back the place of an attempt whose secret was right: only failures count."""
        if attempt.key is not None and not attempt.refused:
            self._counters.add(attempt.key, -1, self.window_s + _KEEP_S)


def _key(client_id: str, route: str, window: float) -> str:
    # Route (a Flask endpoint name) and window hold no "/" and come first, so a client id
    # containing one cannot make two keys collide.
    return f"shim-rate/{route}/{int(window)}/{client_id}"


def _auth_key(client_id: str, address: str | None, window: float) -> str:
    # Hashed: a presented client id may be any text of any length, and unknown ids should
    # not be readable from the counter store.
    pair = f"{client_id}\0{address or '-'}".encode("utf-8", "surrogatepass")
    return f"shim-auth/{int(window)}/{hashlib.sha256(pair).hexdigest()[:32]}"
