"""The floor for a Python proxy: sign the call, forward it on one pooled session, return the body.

``GET /rss/product/get?productId=1`` becomes the signed platform call with the same business
parameters. No legacy auth, no rate limit, no schemas, no error mapping: what is left is what
any Python proxy in front of the platform pays (WSGI, requests, signing). It runs under the
same gunicorn settings as the shim (``shim/gunicorn_conf.py``), and its session's pool has the
shim's size, so the two differ only by the shim's own work.

    gunicorn -c python:shim.gunicorn_conf --pythonpath bench 'passthrough:create()'

Configured by the environment: BENCH_API_URL, BENCH_APP_KEY, BENCH_APP_SECRET,
BENCH_STORE_ID, BENCH_SELLER_TOKEN; REQUESTS_CA_BUNDLE to trust a TLS upstream.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

import requests
from requests.adapters import HTTPAdapter

from shim.upstream.signing import sign

POOL_SIZE = 32  # the shim's LazadaClient default


def create(env: Mapping[str, str] | None = None):
    """Return the passthrough WSGI app, with one session for the worker's life.

    ``env``: where the BENCH_* settings are read (default: the environment); the in-process
    A/B of bench/run.py passes its own.
    """
    env = os.environ if env is None else env
    api_url = env["BENCH_API_URL"].rstrip("/")
    app_key = env["BENCH_APP_KEY"]
    secret = env["BENCH_APP_SECRET"]
    store_id = env["BENCH_STORE_ID"]
    token = env["BENCH_SELLER_TOKEN"]
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def app(environ, start_response):
        api_path = environ["PATH_INFO"]
        params = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        params.update(storeId=store_id, app_key=app_key, sign_method="sha256",
                      timestamp=str(int(time.time() * 1000)), access_token=token)
        params["sign"] = sign(api_path, params, secret)
        with session.get(api_url + api_path, params=params, timeout=(3.05, 10)) as answer:
            body = answer.content
            status = f"{answer.status_code} {answer.reason}"
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    return app
