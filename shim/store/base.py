"""The storage interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from shim.store.records import Client, IssuedToken, Seller
from shim.upstream.client import SellerCredentials


class Store(Protocol):
    """What the legacy surface needs from storage."""

    def get_client(self, client_id: str) -> Client | None:
        """Return the enabled client with this id, or ``None``."""

    def get_seller(self, name: str) -> Seller | None:
        """Return the seller with this name, or ``None``."""

    def seller_credentials(self, name: str) -> SellerCredentials:
        """Return what an RSS call for this seller needs (store id and current access token)."""

    def save_token(self, digest: str, token: IssuedToken) -> None:
        """Store an issued token under its digest."""

    def find_token(self, digest: str, now: float) -> IssuedToken | None:
        """Return the unexpired token stored under ``digest``, or ``None``."""
