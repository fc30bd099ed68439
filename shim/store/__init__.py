"""Persistence behind one interface (``Store``): apps, sellers and their tokens, legacy
clients, issued tokens, authorization states and usage.

Backends: ``MemoryStore`` (declarative mode: the config file is the registry, read-only,
like Kong's DB-less mode) and ``SqlStore`` on SQLite (embedded default) or PostgreSQL
(several instances). Dependency rule: no Flask here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shim.store.base import Store
from shim.store.memory import MemoryStore
from shim.store.records import App, Client, IssuedToken, Seller, TokenGrant

if TYPE_CHECKING:
    from shim.config import Settings
    from shim.store.sql import SqlStore

__all__ = ["App", "Client", "IssuedToken", "MemoryStore", "Seller", "Store", "TokenGrant",
           "open_store"]


def open_store(settings: Settings, *,
               clock: Callable[[], float] = time.time) -> MemoryStore | SqlStore:
    """Return the store the settings name, migrated when ``auto_migrate`` is on."""
    if not settings.database_url:
        return MemoryStore(settings, clock=clock)
    if not settings.encryption_key:  # Settings refuse this at start already
        raise ValueError("a database needs an encryption key (SHIM_ENCRYPTION_KEY)")
    # Imported here so that declarative mode never loads a database driver.
    from shim.store.crypto import Sealer
    from shim.store.sql import Backend, SqlStore

    url = settings.database_url
    backend: Backend
    if url.startswith("sqlite:///"):
        from shim.store.sqlite import SqliteBackend

        backend = SqliteBackend(url.removeprefix("sqlite:///"),
                                busy_timeout_s=settings.store_timeout_s)
    else:
        from shim.store.postgres import PostgresBackend

        backend = PostgresBackend(url, max_size=settings.store_pool_size,
                                  lock_pool_size=settings.lock_pool_size,
                                  timeout_s=settings.store_timeout_s)
    store = SqlStore(backend, Sealer(settings.encryption_key), clock=clock)
    if settings.auto_migrate:
        store.migrate()
    return store
