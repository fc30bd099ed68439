"""The settings of a shim under test: the app, sellers and clients the contract cases name.

Sellers ``main`` (store 414) and ``other`` (415); clients ``full`` (every scope), ``reader``
(the read scopes) and ``other`` (every scope, seller ``other``); no read retries and short
timeouts. ``redmart-shim verify`` and the test suite build their shims from here, so a case
recorded by one replays in the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shim import scopes
from shim.config import ClientSettings, SellerSettings, Settings
from shim.record.scrub import STORE_ID

__all__ = ["APP_KEY", "OTHER_STORE_ID", "STORE_ID", "case_settings"]

APP_KEY = "100001"
OTHER_STORE_ID = "415"


def case_settings(*, upstream_url: str, app_secret: str, access_token: str,
                  other_access_token: str, client_digest: str, **overrides: Any) -> Settings:
    """Return settings for a shim calling ``upstream_url``; ``overrides`` replace any field.

    ``client_digest`` is the digest of the one secret every client shares.
    """
    def client(client_id: str, granted: Iterable[str], seller: str = "main") -> ClientSettings:
        return ClientSettings(client_id=client_id, secret_digest=client_digest,
                              scopes=frozenset(granted), seller=seller)

    values: dict[str, Any] = {
        "app_key": APP_KEY,
        "app_secret": app_secret,
        "api_url": upstream_url,
        "auth_url": upstream_url,
        "sellers": {
            "main": SellerSettings(name="main", store_id=STORE_ID, access_token=access_token),
            "other": SellerSettings(name="other", store_id=OTHER_STORE_ID,
                                    access_token=other_access_token),
        },
        "clients": {
            "full": client("full", scopes.ALL),
            "reader": client("reader", [s for s in scopes.ALL if s.startswith("read:")]),
            "other": client("other", scopes.ALL, seller="other"),
        },
        "read_retries": 0,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 2.0,
    }
    return Settings(**{**values, **overrides})
