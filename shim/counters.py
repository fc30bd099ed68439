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
from typing import TYPE_CHECKING, Any, Protocol

from limits import storage

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# A redis-py connection (its methods are not annotated, so mypy is told nothing more).
Connection = Any

# After a storage failure, calls go through unlimited for this long without trying the
# storage again: an unreachable Redis must not add its timeout to every request.
STORAGE_RETRY_S = 1.0
REDIS_TIMEOUT_S = 0.25  # a counter on loopback or in the same zone answers in ~1 ms


class CounterStorage(Protocol):
    """What the counters need of a storage: an atomic counter that expires."""

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (which lives ``expiry`` seconds); return the new count."""
        ...


class PendingCount(Protocol):
    """A count sent to the storage whose answer is read later (``result``), or never
    (``cancel``): the round trip overlaps whatever the caller does in between."""

    def result(self) -> int:
        """Return the new count (waiting for it if need be); read it at most once."""
        ...

    def cancel(self) -> None:
        """Give up the answer (the count stands) and free what waits for it."""
        ...


class CountMade:
    """A count already made: storages that answer at once, or cannot send first."""

    def __init__(self, value: int) -> None:
        self._value = value

    def result(self) -> int:
        """Return the count."""
        return self._value

    def cancel(self) -> None:
        """Nothing waits for it."""


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

    def send_incr(self, key: str, expiry: int, amount: int = 1) -> PendingCount:
        """Send ``incr`` on a pooled connection and return at once; the answer is read by
        the result's ``result()`` (or dropped with the connection by ``cancel()``).

        The same script and keys as ``incr``; redis-py's pool and connection do the work
        (``send_command`` / ``read_response``, the calls its client makes in turn).
        """
        pool = self._client.connection_pool
        connection: Connection = pool.get_connection()
        try:
            connection.send_command("EVALSHA", self._script.sha, 1, f"{self._prefix}:{key}",
                                    expiry, amount)
        except BaseException:
            _drop(pool, connection)
            raise
        return _RedisCount(self, connection, key, expiry, amount)

    def close(self) -> None:
        """Release the client's pooled connections."""
        self._client.close()


class _RedisCount:
    """The answer to one ``RedisCounters.send_incr``, on the connection it was sent on."""

    def __init__(self, counters: RedisCounters, connection: Connection,
                 key: str, expiry: int, amount: int) -> None:
        self._counters = counters
        self._connection: Connection | None = connection
        self._call = (key, expiry, amount)

    def result(self) -> int:
        """Read the answer and give the connection back to the pool."""
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("a count's answer is read once")
        pool = self._counters._client.connection_pool
        try:
            answer = connection.read_response()
        except self._counters._no_script:  # a restarted Redis; the connection is clean
            pool.release(connection)
            return self._counters.incr(*self._call)
        except BaseException:
            _drop(pool, connection)
            raise
        pool.release(connection)
        return int(answer)

    def cancel(self) -> None:
        """Drop the connection: its unread answer must never reach another caller."""
        connection, self._connection = self._connection, None
        if connection is not None:
            _drop(self._counters._client.connection_pool, connection)


def _drop(pool: Any, connection: Connection) -> None:
    """Close ``connection`` (in an unknown state) and return its place to ``pool``."""
    connection.disconnect()
    pool.release(connection)


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
            self._failed(error)
            return None

    def send_add(self, key: str, amount: int, expiry: int) -> PendingAdd:
        """Like ``add``, but return at once when the storage can answer later (Redis): the
        result's ``result()`` is ``add``'s answer, failures included."""
        if time.monotonic() < self._down_until:
            return PendingAdd(self, None)
        send = getattr(self._storage, "send_incr", None)
        try:
            pending = (send(key, expiry, amount) if send is not None
                       else CountMade(self._storage.incr(key, expiry, amount=amount)))
        except Exception as error:
            self._failed(error)
            return PendingAdd(self, None)
        return PendingAdd(self, pending)

    def _failed(self, error: Exception) -> None:
        with self._down_lock:
            self._down_until = time.monotonic() + STORAGE_RETRY_S
        log.error("rate-limit storage failed (%s): calls let through without a limit "
                  "for %.0f s", type(error).__name__, STORAGE_RETRY_S)

    def close(self) -> None:
        """Release the storage's connections (a Redis client's pool; nothing in memory)."""
        # RedisCounters closes itself; limits' other storages keep a client in ``storage``.
        owner = self._storage if isinstance(self._storage, RedisCounters) else getattr(
            self._storage, "storage", None)
        close = getattr(owner, "close", None)
        if callable(close):
            close()


class PendingAdd:
    """``SharedCounters.send_add``'s answer to come: the count, or ``None`` (storage down)."""

    def __init__(self, counters: SharedCounters, pending: PendingCount | None) -> None:
        self._counters = counters
        self._pending = pending

    def result(self) -> int | None:
        """Return the new value, ``None`` if the storage failed (logged, then left alone)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        try:
            return pending.result()
        except Exception as error:  # as add(): fail open
            self._counters._failed(error)
            return None

    def cancel(self) -> None:
        """Give up the answer (see ``PendingCount.cancel``)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
