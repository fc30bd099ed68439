"""The benchmark's upstream: the sandbox, configured from the environment, in its own process.

Two ways to serve it (``BENCH_UPSTREAM_SERVER``):

- ``gevent`` (default): the sandbox app under gunicorn, one gevent worker. One process keeps
  one sandbox state (the latency knob and the ledger), and a greenlet per connection holds
  500 delayed calls at once without 500 threads.
- ``werkzeug``: ``shim.sandbox.server.run``, Werkzeug's threaded server, as the tests use it.

Credentials come from the environment, never the command line (``ps`` shows that):
BENCH_APP_KEY, BENCH_APP_SECRET, BENCH_STORE_ID, BENCH_SELLER_TOKEN, BENCH_SELLER_REFRESH.
"""

from __future__ import annotations

import os
import ssl
import sys
import time

from shim.sandbox.config import SandboxConfig, SellerAccount


def sandbox_config() -> SandboxConfig:
    """Return the sandbox config the bench driver passed in the environment."""
    now = time.time()
    seller = SellerAccount(store_id=os.environ["BENCH_STORE_ID"],
                           access_token=os.environ["BENCH_SELLER_TOKEN"],
                           refresh_token=os.environ["BENCH_SELLER_REFRESH"],
                           access_expires_at=now + 864000, refresh_expires_at=now + 4320000)
    return SandboxConfig(app_key=os.environ["BENCH_APP_KEY"],
                         app_secret=os.environ["BENCH_APP_SECRET"], sellers=[seller])


def create():
    """Return the sandbox WSGI app (gunicorn calls this in the worker, after gevent patched)."""
    from shim.sandbox.app import create_sandbox_app

    return create_sandbox_app(sandbox_config())


def main(argv: list[str]) -> None:
    """Serve with Werkzeug's threaded server: ``upstream.py HOST PORT [CERT KEY]``."""
    from shim.sandbox import server

    host, port = argv[0], int(argv[1])
    context = None
    if len(argv) == 4:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(argv[2], argv[3])
    server.run(sandbox_config(), host, port, ssl_context=context)


if __name__ == "__main__":
    main(sys.argv[1:])
