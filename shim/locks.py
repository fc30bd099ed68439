"""Per-key locks, so that the read-check-write of one stock lot runs one at a time.

``KeyedLocks`` serve one process; ``shim.store.postgres.AdvisoryLocks`` serve every instance
on one PostgreSQL database. Both take an optional bound on the waiters of a key: past it a
caller is refused at once (``LockQueueFull``) instead of holding a request thread in a queue.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class LockTimeout(Exception):
    """Raised when a key stays locked longer than the caller is willing to wait."""


class LockQueueFull(LockTimeout):
    """Raised at once, without waiting, when a key already has its limit of waiters."""

    scope = "lot"  # the bulkhead it stands for (shim.failures.Overloaded's scopes)


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
    def hold(self, key: Hashable, timeout: float,
             waiters: int | None = None) -> Iterator[None]:
        """Hold the lock of ``key`` for the block; raise ``LockTimeout`` after ``timeout`` s.

        With ``waiters``, a caller that would find that many others already waiting for the
        key (besides its holder) gets ``LockQueueFull`` at once instead.
        """
        with self._guard:
            entry = self._locks.setdefault(key, _Entry())
            # users: the holder (if any) and the waiters. Without a holder at this instant
            # (one just left, its successor not yet in) all of them are waiters.
            if waiters is not None and entry.users > waiters:
                raise LockQueueFull(f"lock {key!r} already has {waiters} waiters")
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

    def queued(self, key: Hashable) -> int:
        """Return how many threads hold or wait for the lock of ``key`` now."""
        with self._guard:
            entry = self._locks.get(key)
            return entry.users if entry is not None else 0

    def __len__(self) -> int:
        return len(self._locks)


def lock_id(key: Hashable) -> int:
    """Return the signed 64-bit advisory-lock id of ``key``."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
