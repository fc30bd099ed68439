"""Shared counters for the rate limiter and the authentication throttle: expiring integers in
a ``limits`` storage named by settings (``memory://`` for one process, ``redis://...`` to
share counters between instances).

A storage failure never fails the call that counts: ``SharedCounters.add`` answers ``None``
and logs, as Kong's ``fault_tolerant`` default did, then leaves the storage alone for a
moment. Dependency rule: no Flask, nothing of the legacy API (its limits are in
``shim.legacy.ratelimit``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

import redis
from limits import storage

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


class _Connection(Protocol):
    """What ``RedisCounters`` uses of a redis-py connection (redis-py leaves these untyped)."""

    retry: Any

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def can_read(self) -> bool: ...
    def send_command(self, *args: object) -> None: ...
    def read_response(self) -> object: ...


class RedisCounters:
    """Expiring counters in Redis: the ``incr`` of ``limits``' Redis storage (the same Lua
    script, the same ``<prefix>:<key>`` keys, so instances of either kind share counters),
    sent on redis-py connections without its client's per-command machinery.

    Measured in a request on PostgreSQL + Redis (bench/results/2026-12-06-ab-redis-counter.md),
    ``redis.Redis`` (retry wrapper, pool bookkeeping, observability hooks, the script object)
    spent ~0.05 ms of Python around a ~0.04 ms round trip: the largest single cost of a
    single-object request after the platform call. A failure raises, as ``limits`` did, and
    drops the connection; ``SharedCounters`` fails open.
    """

    # limits' resources/redis/lua_scripts/incr_expire.lua, byte for byte.
    SCRIPT = (
        "local current\n"
        "local amount = tonumber(ARGV[2])\n"
        'current = redis.call("incrby", KEYS[1], amount)\n'
        "\n"
        "if tonumber(current) == amount then\n"
        '    redis.call("expire", KEYS[1], ARGV[1])\n'
        "end\n"
        "\n"
        "return current\n"
    )
    SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()  # its name in Redis

    def __init__(self, uri: str, *, key_prefix: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        # The pool limits' storage made (redis.from_url): its connection class and settings,
        # the URL's options included. Its connections are made here, kept in ``_idle``.
        pool = redis.ConnectionPool.from_url(uri, socket_connect_timeout=timeout_s,
                                             socket_timeout=timeout_s)
        self._connection_class = pool.connection_class
        self._connection_kwargs = pool.connection_kwargs
        self._key_prefix = key_prefix
        # A thread takes an idle connection for one command and puts it back (deque's append
        # and pop are atomic): no more connections than commands ever in flight at once.
        self._idle: deque[_Connection] = deque()
        self._closed = False

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key`` (which lives ``expiry`` seconds); return the new count."""
        try:
            connection = self._idle.pop()
            _make_ready(connection)
        except IndexError:
            connection = cast(_Connection, self._connection_class(**self._connection_kwargs))
        args = (1, f"{self._key_prefix}:{key}", expiry, amount)

        def send() -> object:
            try:
                connection.send_command("EVALSHA", self.SHA, *args)
                return connection.read_response()
            except redis.exceptions.NoScriptError:  # a restarted or flushed Redis
                connection.send_command("EVAL", self.SCRIPT, *args)
                return connection.read_response()

        try:
            # As redis.Redis does: the connection's retry policy (none, unless the URL says).
            answer = connection.retry.call_with_retry(send, lambda _error: connection.disconnect())
        except BaseException:
            connection.disconnect()  # a reply may still be on its way: never reuse it
            raise
        if self._closed:
            connection.disconnect()
        else:
            self._idle.append(connection)
        return int(cast(int, answer))

    def close(self) -> None:
        """Disconnect the idle connections (and any in use, when it comes back)."""
        self._closed = True
        while self._idle:
            self._idle.pop().disconnect()


def _make_ready(connection: _Connection) -> None:
    """Reconnect an idle connection that Redis closed or that holds unread data, as
    redis-py's pool checks before handing one out (a restarted Redis costs no call)."""
    try:
        connection.connect()  # nothing when connected
        if connection.can_read():
            raise redis.exceptions.ConnectionError("connection has unread data")
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        connection.disconnect()
        connection.connect()


def open_storage(uri: str, *, key_prefix: str) -> CounterStorage:
    """Return the counter storage named by ``uri``: ``RedisCounters`` (short timeouts) for
    ``redis://`` and ``rediss://``, ``ProcessCounters`` for ``memory://``, or any other
    ``limits`` storage."""
    if uri == "memory://":
        return ProcessCounters()
    if uri.startswith(("redis://", "rediss://")):
        return RedisCounters(uri, key_prefix=key_prefix)
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
        """Release the storage's connections (Redis connections; nothing in memory)."""
        close = getattr(self._storage, "close", None)
        if close is None:
            client = getattr(self._storage, "storage", None)  # limits' other storages
            close = getattr(client, "close", None)
        if callable(close):
            close()
