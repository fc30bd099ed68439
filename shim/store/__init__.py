"""Persistence behind one interface (``Store``): apps, sellers and their tokens, legacy
clients, issued tokens, authorization states and usage.

Backends: ``MemoryStore`` (declarative mode: the config file is the registry, read-only,
like Kong's DB-less mode) and ``SqlStore`` on SQLite (embedded default) or PostgreSQL
(several instances). Errors are in ``shim.store.errors``, records in ``shim.store.records``.

Dependency rule: no Flask, and nothing from the layers above (settings, upstream, schemas):
``StoreSettings`` says what the store reads from the settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shim.store.base import Store, StoreSettings
from shim.store.errors import AlreadyExists, NotFound, StoreError, StoreUnavailable
from shim.store.memory import MemoryStore
from shim.store.records import App, Client, IssuedToken, RefreshFailed, Seller, TokenGrant

if TYPE_CHECKING:
    from shim.store.sql import SqlStore

__all__ = ["AlreadyExists", "App", "Client", "IssuedToken", "MemoryStore", "NotFound",
           "RefreshFailed", "Seller", "Store", "StoreError", "StoreSettings",
           "StoreUnavailable", "TokenGrant", "open_store"]


def open_store(settings: StoreSettings, *,
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
