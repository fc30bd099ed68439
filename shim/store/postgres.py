"""PostgreSQL backend, for several shim instances sharing one registry and token store."""

from __future__ import annotations

import functools
import re
import secrets
import threading
import time
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from shim.locks import KeyedLocks, LockTimeout, lock_id
from shim.store.errors import StoreUnavailable
from shim.store.sql import Row, Tx
from shim.store.tokencache import CHANNEL, Revocation, TokenCache, await_acks

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
LISTENER_NAME = "redmart-shim token cache"  # its application_name in pg_stat_activity
MIGRATION_LOCK_ID = 7_304_117  # any constant: the advisory lock serializing migrations


@functools.lru_cache(maxsize=256)
def to_pyformat(sql: str) -> str:
    """Return ``sql`` with ``:name`` placeholders in psycopg's ``%(name)s`` style."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


class _Tx:
    def __init__(self, connection: psycopg.Connection[DictRow]) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._connection.execute(to_pyformat(sql), params or {})

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        return self._connection.execute(to_pyformat(sql), params or {}).fetchone()

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        return list(self._connection.execute(to_pyformat(sql), params or {}).fetchall())


class PostgresBackend:
    """A connection pool to one PostgreSQL database (optionally one schema in it)."""

    name = "postgresql"
    row_lock = " FOR UPDATE"

    def __init__(self, url: str, *, schema: str | None = None, max_size: int = 20,
                 lock_pool_size: int = 8, timeout_s: float = 10.0) -> None:
        kwargs: dict[str, Any] = {"row_factory": dict_row, "autocommit": True,
                                  "connect_timeout": max(1, int(timeout_s))}
        if schema:
            kwargs["options"] = f"-c search_path={schema}"
        self._url, self._kwargs, self._timeout_s = url, kwargs, timeout_s
        self._lock_pool_size = lock_pool_size
        self._locks: AdvisoryLocks | None = None
        self._lock_pool_guard = threading.Lock()
        self.token_cache: TokenCache | None = TokenCache(
            lambda: self._plain_connection(LISTENER_NAME))
        self.pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url, min_size=1, max_size=max_size, kwargs=kwargs, timeout=timeout_s, open=False,
            name="shim")
        try:
            self.pool.open(wait=True, timeout=timeout_s)
        except PoolTimeout:
            self.pool.close()
            raise StoreUnavailable("PostgreSQL cannot be reached") from None

    @contextmanager
    def transaction(self, *, exclusive: bool = False, single: bool = False) -> Iterator[_Tx]:
        """Run the block in one transaction (row locks come from ``row_lock`` selects).

        ``single``: the block is one statement, which autocommit makes atomic already; it
        saves the BEGIN and COMMIT round trips on the hot path (token and client lookups).
        """
        try:
            with self.pool.connection() as connection:
                if single:
                    yield _Tx(connection)
                else:
                    with connection.transaction():
                        yield _Tx(connection)
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise StoreUnavailable(f"PostgreSQL: {type(error).__name__}") from None

    def _plain_connection(self, name: str = "redmart-shim") -> psycopg.Connection[Any]:
        """Return a connection of its own (tuple rows, autocommit) outside the pool."""
        kwargs = {k: v for k, v in self._kwargs.items() if k != "row_factory"}
        kwargs["application_name"] = name
        try:
            return psycopg.connect(self._url, **kwargs)
        except psycopg.OperationalError:
            raise StoreUnavailable("PostgreSQL cannot be reached") from None

    def announce_revocation(self, tx: Tx) -> str:
        """Notify every listening instance when ``tx`` commits; return the revocation's id."""
        revocation = secrets.token_hex(8)
        tx.one("SELECT pg_notify(:channel, :revocation) AS sent",
               {"channel": CHANNEL, "revocation": revocation})
        return revocation

    def await_revocation(self, revocation: str | None) -> Revocation | None:
        """Return once no live instance can answer from a token the revocation ended."""
        if revocation is None:
            return None
        try:
            with self._plain_connection() as connection:
                return await_acks(connection, revocation)
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"PostgreSQL: {type(error).__name__}") from None

    def seller_lock(self, name: str) -> None:
        """None: a seller's row lock (SELECT ... FOR UPDATE) blocks no other writer."""
        return None

    def locks(self) -> AdvisoryLocks:
        """Return advisory locks on this database, shared by every instance.

        Their connections come from a pool of their own (opened on first use): a PATCH
        holds one for its whole read-check-write, and PATCHes of many lots at once must
        not take the connections every request needs for its token lookup.
        """
        with self._lock_pool_guard:
            if self._locks is None:  # one pool and one in-process queue per backend
                pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
                    self._url, min_size=0, max_size=self._lock_pool_size, kwargs=self._kwargs,
                    timeout=self._timeout_s, open=False, name="shim-locks")
                pool.open(wait=False)
                self._locks = AdvisoryLocks(pool)
        return self._locks

    def migration_lock(self, tx: Tx) -> None:
        """Serialize migrations of concurrently starting instances."""
        tx.one("SELECT pg_advisory_xact_lock(:id)", {"id": MIGRATION_LOCK_ID})

    @staticmethod
    def is_duplicate(error: Exception) -> bool:
        return isinstance(error, psycopg.errors.UniqueViolation)

    @staticmethod
    def is_missing_table(error: Exception) -> bool:
        return isinstance(error, psycopg.errors.UndefinedTable)

    def close(self) -> None:
        if self.token_cache is not None:
            self.token_cache.close()
        with self._lock_pool_guard:
            if self._locks is not None:
                self._locks.pool.close()
        self.pool.close()


class AdvisoryLocks:
    """Per-key locks shared by every shim instance that uses one PostgreSQL database: a
    session advisory lock, which the server releases if its holder dies.

    Waiters for one key queue in the process first, so that each process has at most one
    connection per key waiting in the server. The bound on waiters (``waiters``) is counted
    in this process, which is all a process can see: across N instances one lot has at most
    N x (1 + waiters) requests holding or waiting for its lock, at most N - 1 of them in the
    server (one per process, besides the holder), and each wait ends after ``timeout`` s
    (``lock_timeout`` in the server, the in-process wait before it, from one deadline).
    """

    def __init__(self, pool: ConnectionPool[psycopg.Connection[DictRow]]) -> None:
        self.pool = pool
        self._local = KeyedLocks()

    @contextmanager
    def hold(self, key: Hashable, timeout: float,
             waiters: int | None = None) -> Iterator[None]:
        """Hold the lock of ``key`` for the block; raise ``LockTimeout`` after ``timeout`` s,
        and ``LockQueueFull`` at once when ``waiters`` callers wait for it in this process."""
        ident = lock_id(key)
        deadline = time.monotonic() + timeout
        with self._local.hold(key, timeout, waiters):
            left = max(0.001, deadline - time.monotonic())
            try:
                with self.pool.connection(timeout=left) as connection:
                    yield from self._hold(connection, key, ident, left)
            except (psycopg.OperationalError, PoolTimeout) as error:
                raise StoreUnavailable(f"PostgreSQL (lock): {type(error).__name__}") from None

    def queued(self, key: Hashable) -> int:
        """Return how many threads of this process hold or wait for the lock of ``key``."""
        return self._local.queued(key)

    @staticmethod
    def _hold(connection: psycopg.Connection[DictRow], key: Hashable, ident: int,
              timeout: float) -> Iterator[None]:
        # The pool's connections autocommit, so the lock belongs to the session and outlives
        # each statement; lock_timeout bounds the wait in the server.
        connection.execute("SELECT set_config('lock_timeout', %s, false)",
                           (f"{max(1, int(timeout * 1000))}ms",))
        try:
            connection.execute("SELECT pg_advisory_lock(%s)", (ident,))
        except psycopg.errors.LockNotAvailable:
            raise LockTimeout(f"lock {key!r} busy for {timeout} s") from None
        finally:
            connection.execute("SELECT set_config('lock_timeout', '0', false)")
        try:
            yield
        finally:
            try:
                connection.execute("SELECT pg_advisory_unlock(%s)", (ident,))
            except psycopg.Error:
                connection.close()  # the pool then drops it, and the server the lock
