"""Per-key locks, so that the read-check-write of one stock lot runs one at a time.

``KeyedLocks`` serve one process; ``shim.store.postgres.AdvisoryLocks`` serve every instance
on one PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class LockTimeout(Exception):
    """Raised when a key stays locked longer than the caller is willing to wait."""


class _Entry:
    """A key's lock and how many threads hold it or wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class KeyedLocks:
    """A lock per key, created on first use and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, _Entry] = {}

    @contextmanager
    def hold(self, key: Hashable, timeout: float) -> Iterator[None]:
        """Hold the lock of ``key`` for the block; raise ``LockTimeout`` after ``timeout`` s."""
        with self._guard:
            entry = self._locks.setdefault(key, _Entry())
            entry.users += 1
        try:
            if not entry.lock.acquire(timeout=timeout):
                raise LockTimeout(f"lock {key!r} busy for {timeout} s")
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


def lock_id(key: Hashable) -> int:
    """Return the signed 64-bit advisory-lock id of ``key``."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
