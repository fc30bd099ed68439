"""Persistence behind one interface (``Store``): issued legacy tokens, clients, sellers.

Dependency rule: no Flask here. ``MemoryStore`` serves the declarative mode (clients and
sellers from the config file, like Kong's DB-less mode).
"""

from shim.store.base import Store
from shim.store.memory import MemoryStore
from shim.store.records import App, Client, IssuedToken, Seller, TokenGrant

__all__ = ["App", "Client", "IssuedToken", "MemoryStore", "Seller", "Store", "TokenGrant"]
