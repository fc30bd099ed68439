"""Shared counters for the rate limiter and the authentication throttle: expiring integers in
a storage named by settings (``memory://`` for one process, ``redis://...`` to share counters
between instances, or any other ``limits`` storage).

A storage failure never fails the call that counts: ``SharedCounters.add`` answers ``None``
and logs, as Kong's ``fault_tolerant`` default did, then leaves the storage alone for a
moment. Dependency rule: no Flask, nothing of the legacy API (its limits are in
``shim.legacy.ratelimit``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from limits import storage

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# After a storage failure, calls go through unlimited for this long without trying the
# storage again: an unreachable Redis must not add its timeout to every request.
STORAGE_RETRY_S = 1.0
REDIS_TIMEOUT_S = 0.25  # a counter on loopback or in the same zone answers in ~1 ms


class CounterStorage(Protocol):
    """What the counters need of a storage: an atomic counter that expires."""

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (which lives ``expiry`` seconds); return the new count."""
        ...


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


class RedisCounters:
    """Expiring counters in Redis, with the ``incr`` (and the keys) of ``limits``' Redis storage.

    One Lua script adds and, on a key's first count, sets its expiry: one round trip, atomic.
    It is sent by EVALSHA straight on the ``redis.Redis`` client: through ``limits``' storage
    and redis-py's ``Script`` object (per-call type checks) a request's count took ~10% more.
    """

    # ``limits``' incr_expire.lua, so keys and expiries are the same as before.
    INCR_EXPIRE = """
local current = redis.call("incrby", KEYS[1], tonumber(ARGV[2]))
if current == tonumber(ARGV[2]) then redis.call("expire", KEYS[1], ARGV[1]) end
return current
"""

    def __init__(self, client: redis.Redis, *, key_prefix: str) -> None:
        from redis.exceptions import NoScriptError

        self._no_script = NoScriptError
        self._client = client
        self._prefix = key_prefix
        # Hashed here, loaded into Redis only when Redis says it does not know it (NOSCRIPT):
        # opening the counters never needs Redis up.
        self._script = client.register_script(self.INCR_EXPIRE)

    @classmethod
    def from_url(cls, uri: str, *, key_prefix: str) -> RedisCounters:
        """Return counters in the Redis at ``uri``, with short timeouts."""
        # Imported here: redis-py imports OpenTelemetry when it is installed, a startup cost
        # that an app without Redis counters (or without tracing) must not pay.
        import redis

        return cls(redis.Redis.from_url(uri, socket_connect_timeout=REDIS_TIMEOUT_S,
                                        socket_timeout=REDIS_TIMEOUT_S), key_prefix=key_prefix)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (which lives ``expiry`` seconds); return the new count."""
        name = f"{self._prefix}:{key}"
        try:
            return int(self._client.evalsha(self._script.sha, 1, name, expiry, amount))
        except self._no_script:  # a restarted Redis: the Script loads it again
            return int(self._script(keys=[name], args=[expiry, amount]))

    def close(self) -> None:
        """Release the client's pooled connections."""
        self._client.close()


def open_storage(uri: str, *, key_prefix: str) -> CounterStorage:
    """Return the counter storage named by ``uri``: ``RedisCounters`` for ``redis://`` and
    ``rediss://``, ``ProcessCounters`` for ``memory://``, or any other ``limits`` storage."""
    if uri == "memory://":
        return ProcessCounters()
    if uri.startswith(("redis://", "rediss://")):
        return RedisCounters.from_url(uri, key_prefix=key_prefix)
    found = storage.storage_from_string(uri)
    if not isinstance(found, storage.Storage):
        raise ValueError(f"rate-limit storage {uri.split(':', 1)[0]!r} is asynchronous")
    return found


class SharedCounters:
    """Atomic counters in a ``limits`` storage that fail open, with a pause after a failure."""

    def __init__(self, counters: CounterStorage) -> None:
        self._storage = counters
        self._down_until = 0.0
        self._down_lock = threading.Lock()

    @classmethod
    def open(cls, uri: str, *, key_prefix: str) -> SharedCounters:
        """Return counters in the storage ``uri`` names (see ``open_storage``)."""
        return cls(open_storage(uri, key_prefix=key_prefix))

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

    def close(self) -> None:
        """Release the storage's connections (a Redis client's pool; nothing in memory)."""
        # RedisCounters closes itself; limits' other storages keep a client in ``storage``.
        owner = self._storage if isinstance(self._storage, RedisCounters) else getattr(
            self._storage, "storage", None)
        close = getattr(owner, "close", None)
        if callable(close):
            close()
