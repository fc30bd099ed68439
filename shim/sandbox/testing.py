"""Helpers for tests that need a sandbox: a movable clock, random credentials, a client.

Nothing here is pytest-specific, so any test module (the sandbox's or the shim's) can build
its own fixtures from it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from shim.sandbox.config import SandboxConfig, SellerAccount
from shim.sandbox.server import SandboxServer
from shim.upstream.client import LazadaClient
from shim.upstream.signing import sign


class FakeClock:
    """A clock that stands at its creation time until a test moves it (token and code expiry).

    It does not follow real time, so a remaining lifetime the sandbox reports is exact however
    slowly a loaded machine runs the test.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead."""
        self.now += seconds


def make_seller(store_id: str, now: float, *, access_ttl_s: float = 864000,
                refresh_ttl_s: float = 4320000) -> SellerAccount:
    """Return a seller with fresh random tokens that expire ``*_ttl_s`` after ``now``."""
    return SellerAccount(store_id=store_id, access_token="50000" + secrets.token_hex(20),
                         refresh_token="50001" + secrets.token_hex(20),
                         access_expires_at=now + access_ttl_s,
                         refresh_expires_at=now + refresh_ttl_s)


def make_config(store_ids: tuple[str, ...] = ("414",), *, clock: Callable[[], float] = time.time,
                **settings: Any) -> SandboxConfig:
    """Return a config with a random app key and secret and one seller per store id."""
    now = clock()
    return SandboxConfig(app_key=str(100000 + secrets.randbelow(900000)),
                         app_secret=secrets.token_hex(16),
                         sellers=[make_seller(store_id, now) for store_id in store_ids],
                         clock=clock, **settings)


def make_client(server: SandboxServer, config: SandboxConfig, **options: Any) -> LazadaClient:
    """Return the shim's Lazada client for ``server``: no read retries, the sandbox's clock."""
    options.setdefault("read_retries", 0)
    options.setdefault("clock", config.clock)  # the sandbox and its client share one time
    return LazadaClient(app_key=config.app_key, app_secret=config.app_secret,
                        api_url=server.api_url, auth_url=server.auth_url, **options)


def signed_params(config: SandboxConfig, api_path: str, business: dict[str, str], *,
                  access_token: str | None = None, timestamp: str | None = None,
                  secret: str | None = None) -> dict[str, str]:
    """Return system + business parameters signed for ``api_path``, ready to send raw."""
    values = {"app_key": config.app_key, "sign_method": "sha256",
              "timestamp": timestamp or str(int(time.time() * 1000)), **business}
    if access_token:
        values["access_token"] = access_token
    values["sign"] = sign(api_path, {k: v for k, v in values.items() if v != ""},
                          secret or config.app_secret)
    return values
