"""The platform APIs' last hour in this process: calls, errors, p50/p99 and calls per
minute, from the client's call records."""

from __future__ import annotations

import pytest

from shim.upstream.client import CallRecord, LazadaClient, SellerCredentials
from shim.upstream.errors import UpstreamError
from shim.upstream_health import MINUTE_S, UpstreamHealth

T0 = 1_700_000_000.0 - 1_700_000_000.0 % MINUTE_S  # the start of a minute


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def record(api: str, seconds: float, code: str = "0") -> CallRecord:
    return CallRecord(api, "GET", code, seconds, 0, None)


def test_calls_errors_and_percentiles_per_api():
    health = UpstreamHealth(clock=Clock())
    for i in range(1, 101):  # 10 ms .. 1000 ms
        health.observe(record("/rss/products/get", i / 100, code="0" if i % 10 else "Timeout"))
    health.observe(record("/rss/stock/get", 0.2))
    products, stock = health.snapshot()
    assert (products.api, products.calls, products.errors) == ("/rss/products/get", 100, 10)
    assert products.error_rate == 0.1
    assert 0.50 <= products.p50_s <= 0.50 * 1.1  # exact to the 10 % bucket
    assert 0.99 <= products.p99_s <= 1.0  # never above the slowest call
    assert stock.p50_s == stock.p99_s == 0.2
    assert len(products.per_minute) == 60 and products.per_minute[-1] == 100


def test_the_window_is_the_last_hour_by_minute():
    clock = Clock()
    health = UpstreamHealth(clock=clock)
    health.observe(record("/a", 0.1))
    clock.now += 30 * MINUTE_S
    health.observe(record("/a", 0.1))
    health.observe(record("/a", 0.1, code="ServiceUnavailable"))
    [api] = health.snapshot()
    assert api.calls == 3 and api.per_minute[-31] == 1 and api.per_minute[-1] == 2
    assert api.errors_per_minute[-1] == 1
    clock.now += 30 * MINUTE_S  # the first minute is an hour old now
    [api] = health.snapshot()
    assert api.calls == 2
    clock.now += 30 * MINUTE_S
    assert health.snapshot() == []


def test_watch_adds_itself_to_the_clients_observers_once():
    seen = []
    client = LazadaClient(app_key="100001", app_secret="secret-0123456789",
                          api_url="http://127.0.0.1:9/rest", read_retries=0,
                          observers=[seen.append])
    health = UpstreamHealth(clock=Clock())
    with client:
        assert health.watch(client) is client
        health.watch(client)  # twice: still counted once
        with pytest.raises(UpstreamError):
            client.rss("/a", SellerCredentials(store_id="1", access_token="t"))
    assert len(seen) == 1 and health.snapshot()[0].calls == 1
