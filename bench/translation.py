"""In-process A/B of the translation (issue 12): the shim against the bare passthrough.

    .venv/bin/python bench/translation.py [--rounds 400] [--routes "page of 100,product,stock lot"]

One process holds both WSGI apps: the shim (``create_app``, declarative settings, so the
memory store; every request authenticated and rate-limited as in production) and
``bench/passthrough.py``. Both
call the same sandbox (``bench/upstream.py``, its own process, Werkzeug's threaded server)
over loopback, and requests alternate shim, passthrough, shim, ... so the machine's noise
(it is shared) hits both alike. It prints, per route, the mean and median of each in ms and
the ratios, with the 1-minute load average before and after. No secret is printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from werkzeug.test import Client

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

ROUTES = {
    "page of 100": ("/v1/products?pageSize=100", "/rss/products/get?page=1&pageSize=100"),
    "product": ("/v1/products/100150", "/rss/product/get?productId=100150"),
    "stock lot": ("/v1/products/100150/pickup-locations/23789/stock-lots/0",
                  "/rss/stockLot/get?productId=100150&pickupLocationId=23789&stockLotId=0"),
}
STORE_ID = "414"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    """Run the A/B rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--routes", default=",".join(ROUTES))
    options = parser.parse_args()
    credentials = {"BENCH_APP_KEY": "100001", "BENCH_APP_SECRET": secrets.token_hex(16),
                   "BENCH_STORE_ID": STORE_ID, "BENCH_SELLER_TOKEN": secrets.token_hex(16),
                   "BENCH_SELLER_REFRESH": secrets.token_hex(16)}
    os.environ.update(credentials)
    port = _free_port()
    upstream = subprocess.Popen([sys.executable, str(BENCH / "upstream.py"), "127.0.0.1",
                                 str(port)], env={**os.environ}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        api_url = f"http://127.0.0.1:{port}/rest"
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        os.environ["BENCH_API_URL"] = api_url
        _run(options, api_url)
    finally:
        upstream.terminate()
        upstream.wait(10)


def _run(options: argparse.Namespace, api_url: str) -> None:
    import passthrough

    from shim import credentials, scopes
    from shim.app import create_app
    from shim.config import ClientSettings, SellerSettings, Settings

    client_secret = secrets.token_hex(16)
    settings = Settings(
        app_key="100001", app_secret=os.environ["BENCH_APP_SECRET"], api_url=api_url,
        auth_url=api_url, rate_limit_per_second=1_000_000,
        sellers={"main": SellerSettings(name="main", store_id=STORE_ID,
                                        access_token=os.environ["BENCH_SELLER_TOKEN"])},
        clients={"bench": ClientSettings(client_id="bench",
                                         secret_digest=credentials.hash_secret(client_secret),
                                         scopes=frozenset(scopes.ALL), seller="main")})
    shim = Client(create_app(settings))
    issued = shim.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": "bench",
        "client_secret": client_secret})
    headers = {"Authorization": f"Bearer {issued.get_json()['access_token']}"}
    proxy = Client(passthrough.create())
    load_before = _load()
    print(f"load average (1 min) before: {load_before:.2f}; {options.rounds} rounds")
    print("| route | shim mean | shim median | passthrough mean | passthrough median "
          "| ratio of means | ratio of medians |")
    print("|---|---|---|---|---|---|---|")
    for name in options.routes.split(","):
        legacy_path, platform_path = ROUTES[name.strip()]
        times: dict[str, list[float]] = {"shim": [], "passthrough": []}
        for index in range(options.rounds + 20):
            for side in ("shim", "passthrough") if index % 2 else ("passthrough", "shim"):
                started = time.perf_counter()
                if side == "shim":
                    answer = shim.get(legacy_path, headers=headers)
                else:
                    answer = proxy.get(platform_path)
                answer.get_data()
                elapsed = (time.perf_counter() - started) * 1000
                assert answer.status_code == 200, (side, answer.status_code)
                if index >= 20:  # warm-up rounds are not counted
                    times[side].append(elapsed)
        shim_mean, pass_mean = (statistics.fmean(times[s]) for s in times)
        shim_median, pass_median = (statistics.median(times[s]) for s in times)
        print(f"| {name} | {shim_mean:.2f} | {shim_median:.2f} | {pass_mean:.2f} "
              f"| {pass_median:.2f} | {shim_mean / pass_mean:.2f}x "
              f"| {shim_median / pass_median:.2f}x |")
    print(f"load average (1 min) after: {_load():.2f}")


if __name__ == "__main__":
    main()
