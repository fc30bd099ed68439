"""SQLite backend: the embedded default (one file, WAL, a small pool of connections)."""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from shim.locks import KeyedLocks
from shim.store.errors import StoreUnavailable
from shim.store.sql import Row, Tx


class _Tx:
    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._connection = connection
        self._path = path

    def _run(self, sql: str, params: Mapping[str, Any] | None) -> sqlite3.Cursor:
        try:
            return self._connection.execute(sql, params or {})
        except sqlite3.OperationalError as error:
            # A statement of a deferred transaction can wait out the busy timeout too.
            if _is_busy(error):
                raise StoreUnavailable(f"SQLite database {self._path}: {error}") from None
            raise

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, params)

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        row: sqlite3.Row | None = self._run(sql, params).fetchone()  # row_factory: Row
        return row

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        rows: list[sqlite3.Row] = self._run(sql, params).fetchall()
        return list(rows)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "locked" in text or "busy" in text


class SqliteBackend:
    """Connections to one SQLite file; a read-then-write takes the write lock up front."""

    name = "sqlite"
    row_lock = ""  # BEGIN IMMEDIATE already holds the database's single write lock
    # No token cache: the registry commands run in another process than the server, which
    # would never hear of them; and a local lookup costs microseconds.
    token_cache = None

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0,
                 max_connections: int = 8) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        # Connections are shared, not per thread: a server with a thread per connection would
        # otherwise open (and never close) files for every client it ever served.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[sqlite3.Connection] = []
        self._opened: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout_s,
                                     isolation_level=None, check_same_thread=False)
        try:
            connection.row_factory = sqlite3.Row
            self._use_wal(connection)
            # NORMAL in WAL mode survives a crash of the process (kill -9); only a power
            # loss could drop the last commits.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            connection.close()
            raise
        with self._guard:
            self._opened.append(connection)
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Switch the file to WAL, waiting out a concurrent opener like any busy lock.

        The switch needs an exclusive lock, and SQLite answers it with "database is
        locked" at once instead of calling the busy handler: two processes (or two pooled
        connections) opening a fresh file together would otherwise fail one of them.
        """
        if connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + self._busy_timeout_s
        pause = 0.002
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 0.1)

    def _acquire(self) -> sqlite3.Connection:
        if not self._slots.acquire(timeout=self._busy_timeout_s):
            raise StoreUnavailable(f"SQLite database {self.path}: every connection is busy")
        try:
            with self._guard:
                connection = self._idle.pop() if self._idle else None
            return connection or self._open()
        except BaseException:
            self._slots.release()
            raise

    def _release(self, connection: sqlite3.Connection, *, broken: bool = False) -> None:
        with self._guard:
            if broken:
                connection.close()
                self._opened.remove(connection)
            else:
                self._idle.append(connection)
        self._slots.release()

    @contextmanager
    def transaction(self, *, exclusive: bool = False, single: bool = False) -> Iterator[_Tx]:
        """Run the block in one transaction; ``exclusive`` takes the write lock at BEGIN.

        (``single`` changes nothing here: a local BEGIN costs no round trip.)
        """
        try:
            connection = self._acquire()
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite database {self.path}: {error}") from None
        broken = False
        try:
            try:
                connection.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"SQLite database {self.path}: {error}") from None
            try:
                yield _Tx(connection, self.path)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            try:
                connection.execute("COMMIT")
            except sqlite3.OperationalError as error:
                connection.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite database {self.path}: {error}") from None
        except sqlite3.Error:
            broken = True
            raise
        finally:
            self._release(connection, broken=broken)

    @contextmanager
    def seller_lock(self, name: str) -> Iterator[None]:
        """Serialize token updates across threads and processes without a transaction.

        A write transaction would lock the whole file for the refresh call (seconds), and
        token issuance, usage and every other writer would wait or fail meanwhile. An
        ``flock`` on a file next to the database does it instead: one open file per holder,
        so threads exclude each other too, and the kernel releases it when its process
        dies. One lock for all sellers: refreshes are rare, and one file is easy to find.
        """
        deadline = time.monotonic() + self._busy_timeout_s
        descriptor = os.open(self.path + "-tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            pause = 0.005
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreUnavailable(f"SQLite database {self.path}: a token update "
                                               f"of another thread or process is still "
                                               f"running") from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def announce_revocation(self, tx: Tx) -> None:
        """Nothing to announce: no process caches tokens (``token_cache``)."""
        return None

    def await_revocation(self, revocation: str | None) -> None:
        """Nothing to wait for: every lookup reads the file."""
        return None

    def locks(self) -> KeyedLocks:
        """Return in-process locks: an SQLite file serves one instance."""
        return KeyedLocks()

    def migration_lock(self, tx: Tx) -> None:
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
            self._idle.clear()
