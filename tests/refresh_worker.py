"""A process that refreshes one seller's tokens as fast as it can, until it is killed.

Run by tests/test_refresh_crash.py, which kills it with SIGKILL at random moments. The
margin is larger than any token lifetime, so every lease finds the token due and refreshes.
Arguments: database path, sandbox API URL, app key; secrets come from the environment.
"""

from __future__ import annotations

import os
import sys
import time

from shim.metrics import Metrics
from shim.store.crypto import Sealer
from shim.store.sql import SqlStore
from shim.store.sqlite import SqliteBackend
from shim.token_lifecycle import ReauthorizationNeeded, SellerTokens, TokensUnavailable
from shim.upstream.client import LazadaClient

FOREVER_S = 10**9


def main() -> None:
    path, api_url, app_key = sys.argv[1:4]
    store = SqlStore(SqliteBackend(path), Sealer(os.environ["WORKER_ENCRYPTION_KEY"]))
    client = LazadaClient(app_key=app_key, app_secret=os.environ["WORKER_APP_SECRET"],
                          api_url=api_url, auth_url=api_url, read_retries=0,
                          read_timeout=5.0)
    tokens = SellerTokens(store, lambda seller: client, margin_s=FOREVER_S, metrics=Metrics())
    print("ready", flush=True)
    while True:
        try:
            tokens.lease("main")
        except (ReauthorizationNeeded, TokensUnavailable):
            time.sleep(0.01)


if __name__ == "__main__":
    main()
