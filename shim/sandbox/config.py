"""What a sandbox is started with: the app's credentials, the sellers, and its knobs.

Nothing secret lives in this module: app secrets and tokens are always passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SellerAccount:
    """One authorized seller: its RedMart store and a token pair (expiries in epoch seconds)."""

    store_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: float
    refresh_expires_at: float
    account: str = ""
    seller_id: str = ""

    def __post_init__(self) -> None:
        self.store_id = str(self.store_id)
        # storeId is a Number parameter on the wire, so a non-numeric store could never be named.
        if not self.store_id.isdigit():
            raise ValueError(f"store_id must be digits, got {self.store_id!r}")
        if not self.access_token or not self.refresh_token:
            raise ValueError(f"seller {self.store_id} needs an access and a refresh token")
        self.account = self.account or f"seller-{self.store_id}@sandbox.invalid"
        self.seller_id = self.seller_id or f"11{int(self.store_id):08d}"


@dataclass
class SandboxConfig:
    """Settings of one sandbox instance; ``clock`` returns epoch seconds and is a test seam."""

    app_key: str
    app_secret: str = field(repr=False)
    sellers: list[SellerAccount]
    single_location_api: bool = True
    timestamp_window_s: int = 7200
    seed: int = 7
    clock: Callable[[], float] = time.time
    access_token_ttl_s: int = 864000
    refresh_token_ttl_s: int = 4320000

    def __post_init__(self) -> None:
        if not self.app_key or not self.app_secret:
            raise ValueError("the sandbox needs an app_key and an app_secret")
