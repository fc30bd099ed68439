"""SQLite backend: the embedded default (one file, WAL, a connection per thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from shim.locks import KeyedLocks
from shim.store.sql import StoreUnavailable


class _Tx:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._connection.execute(sql, params or {})

    def one(self, sql: str, params: Mapping[str, Any] | None = None):
        return self._connection.execute(sql, params or {}).fetchone()

    def all(self, sql: str, params: Mapping[str, Any] | None = None):
        return self._connection.execute(sql, params or {}).fetchall()


class SqliteBackend:
    """Connections to one SQLite file; a read-then-write takes the write lock up front."""

    name = "sqlite"
    row_lock = ""  # BEGIN IMMEDIATE already holds the database's single write lock

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=self._busy_timeout_s,
                                         isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of the process (kill -9); only a power
            # loss could drop the last commits.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
            with self._guard:
                self._opened.append(connection)
        return connection

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[_Tx]:
        """Run the block in one transaction; ``exclusive`` takes the write lock at BEGIN."""
        try:
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite database {self.path}: {error}") from None
        try:
            yield _Tx(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            connection.execute("ROLLBACK")
            raise StoreUnavailable(f"SQLite database {self.path}: {error}") from None

    def locks(self) -> KeyedLocks:
        """Return in-process locks: an SQLite file serves one instance."""
        return KeyedLocks()

    def migration_lock(self, tx: _Tx) -> None:
        """Nothing to add: the migration runs under BEGIN IMMEDIATE."""

    @staticmethod
    def is_duplicate(error: Exception) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)

    @staticmethod
    def is_missing_table(error: Exception) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)

    def close(self) -> None:
        with self._guard:
            for connection in self._opened:
                connection.close()
            self._opened.clear()
        self._local = threading.local()
