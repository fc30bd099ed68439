"""The storage exceptions, raised by every backend and caught above the store.

    StoreError               a storage operation that cannot be done as asked
    ├── AlreadyExists        a record with this key exists
    ├── NotFound             the record named does not exist
    └── StoreUnavailable     the database cannot be reached, or stays locked
"""

from __future__ import annotations


class StoreError(Exception):
    """Raised for a storage operation that cannot be done as asked."""


class AlreadyExists(StoreError):
    """Raised when adding a record whose key is taken."""


class NotFound(StoreError):
    """Raised when a record named by the caller does not exist."""


class StoreUnavailable(StoreError):
    """Raised when the database cannot be reached or stays locked."""
