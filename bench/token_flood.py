"""Token-endpoint flood (issue 11, item 4): a legitimate GET's p50 while 64 threads post token
calls with a fresh random client id each, against the same run's unloaded baseline, and the
shim workers' peak RSS. Loopback only, bounded in time, every process stopped at the end.

    .venv/bin/python bench/token_flood.py [--seconds 15] [--flooders 64]

Two floods: all from 127.0.0.1 (the per-address throttle answers after 30 failures), and
each call from a fresh address in 127/8 (no throttle applies: the cap on secret checks is
what bounds the cost).
"""

from __future__ import annotations

import argparse
import http.client
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlencode

import requests
from run import Bench, parse_args, workspace

GET_PATH = "/v1/products/100150"


def token_call(port: int, source: str) -> int:
    """Post one token call with a random client id from ``source``; return the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                            source_address=(source, 0))
    try:
        connection.request("POST", "/oauth2/token", body=urlencode({
            "grant_type": "client_credentials", "client_id": secrets.token_hex(16),
            "client_secret": "x"}), headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def get_p50(url: str, bearer: str, seconds: float) -> tuple[float, int]:
    """Return the p50 (ms) and count of sequential legitimate GETs over ``seconds``."""
    session, times = requests.Session(), []
    session.headers["Authorization"] = f"Bearer {bearer}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        session.get(url + GET_PATH, timeout=30).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    session.close()
    return statistics.median(times), len(times)


def flood(port: int, threads: int, seconds: float, spread: bool,
          rss: Callable[[], list[float]],
          url: str, bearer: str) -> dict[str, object]:
    """Run the flood and a legitimate client side by side; return the figures."""
    stop, statuses, peak = threading.Event(), Counter(), [0.0]

    def flooder() -> None:
        while not stop.is_set():
            source = (f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(256)}."
                      f"{secrets.randbelow(250) + 2}" if spread else "127.0.0.1")
            try:
                statuses[token_call(port, source)] += 1
            except OSError:
                statuses["error"] += 1

    def sampler() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], max(rss(), default=0.0))
            time.sleep(0.1)

    workers = [threading.Thread(target=flooder) for _ in range(threads)]
    workers.append(threading.Thread(target=sampler))
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)  # let the flood build up
        p50, count = get_p50(url, bearer, seconds)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    return {"p50_ms": p50, "gets": count, "statuses": dict(statuses), "peak_rss_mb": peak[0]}


def main(argv: list[str] | None = None) -> int:
    """Start a shim (SQLite store) and its sandbox, measure, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--flooders", type=int, default=64, help="concurrent token callers")
    args = parser.parse_args(argv)
    with workspace() as (workdir, procs):
        # Werkzeug upstream: the bench needs nothing beyond the project (no gevent).
        bench = Bench(parse_args(["--store", "sqlite", "--upstream-server", "werkzeug"]),
                      workdir, procs)
        upstream = bench.start_upstream("upstream", tls=False)
        shim = bench.start_shim("shim", upstream, tls=False)
        bearer, port = bench.token(shim), int(shim.url.rsplit(":", 1)[1])
        base_p50, base_count = get_p50(shim.url, bearer, args.seconds)
        base_rss = max(shim.worker_rss_mb())
        print(f"baseline: GET p50 {base_p50:.1f} ms ({base_count} GETs), worker RSS "
              f"{base_rss:.0f} MB", flush=True)
        for spread in (False, True):
            figures = flood(port, args.flooders, args.seconds, spread, shim.worker_rss_mb,
                            shim.url, bearer)
            label = "fresh address per call" if spread else "one address"
            print(f"{args.flooders} token flooders, {label}: GET p50 {figures['p50_ms']:.1f} ms "
                  f"({figures['p50_ms'] / base_p50:.2f}x baseline, {figures['gets']} GETs), "
                  f"worker peak RSS {figures['peak_rss_mb']:.0f} MB, token answers "
                  f"{figures['statuses']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
