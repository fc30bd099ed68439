"""Per-client, per-route rate limits with Kong's headers (shim.legacy.ratelimit).

The shim runs on a frozen clock, so every burst falls in one window by construction and a
new second is one ``advance(1)`` away: no test depends on how fast requests go out.
"""

from __future__ import annotations

import logging
import math
import time

import pytest
import requests
from limits.storage import MemoryStorage

from shim.app import create_app
from shim.errors import GatewayMessage
from shim.legacy import ratelimit
from shim.legacy.ratelimit import LIMIT_HEADER, REMAINING_HEADER, RouteLimiter
from shim.serving import LocalServer

LOCATIONS = "/v1/pickup-locations"
LIMIT, REMAINING = LIMIT_HEADER.lower(), REMAINING_HEADER.lower()
RATE_LIMITED = {"message": "API rate limit exceeded"}


@pytest.fixture
def clock(frozen_clock):
    # A quarter into a second, so Retry-After has a fraction to round up.
    return frozen_clock(math.floor(time.time()) + 0.25)


@pytest.fixture
def server(make_settings, sandbox, clock):
    app = create_app(make_settings(sandbox.api_url), clock=clock)
    with LocalServer(app) as running:
        yield running
    app.extensions["shim"].upstream.session.close()


class Client:
    """Real HTTP to ``server`` with tokens per client id."""

    def __init__(self, server, secret: str) -> None:
        self.base_url = server.base_url
        self.secret = secret
        self.session = requests.Session()
        self.tokens: dict[str, str] = {}

    def get(self, path: str, client_id: str = "full", **kwargs) -> requests.Response:
        if client_id not in self.tokens:
            form = {"grant_type": "client_credentials", "client_id": client_id,
                    "client_secret": self.secret}
            answer = self.session.post(self.base_url + "/oauth2/token", data=form, timeout=10)
            self.tokens[client_id] = answer.json()["access_token"]
        headers = {"Authorization": f"Bearer {self.tokens[client_id]}"}
        return self.session.get(self.base_url + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def shim(server, test_secrets):
    client = Client(server, test_secrets.client_secret)
    yield client
    client.session.close()


def burst(shim, path: str, count: int, **kwargs) -> list[requests.Response]:
    return [shim.get(path, **kwargs) for _ in range(count)]


def figures(response: requests.Response) -> tuple[str | None, str | None]:
    return response.headers.get(LIMIT), response.headers.get(REMAINING)


def assert_rate_limited(response: requests.Response, limit: int) -> None:
    assert response.status_code == 429
    assert response.json() == RATE_LIMITED
    assert figures(response) == (str(limit), "0")
    assert int(response.headers["retry-after"]) >= 1


# Through HTTP


def test_remaining_counts_down_then_429(shim):
    answers = burst(shim, LOCATIONS, 11)
    assert [a.status_code for a in answers[:10]] == [200] * 10
    assert [figures(a) for a in answers[:10]] == [("10", str(n)) for n in range(9, -1, -1)]
    assert_rate_limited(answers[10], 10)


def test_retry_after_runs_to_the_end_of_the_second(shim):
    burst(shim, LOCATIONS, 10)
    refused = shim.get(LOCATIONS)
    assert refused.headers["retry-after"] == "1"  # 0.75 s left, rounded up


def test_a_new_second_opens_a_new_window(shim, clock):
    burst(shim, LOCATIONS, 11)
    clock.advance(0.74)  # still the same second
    assert shim.get(LOCATIONS).status_code == 429
    clock.advance(0.02)
    fresh = shim.get(LOCATIONS)
    assert fresh.status_code == 200
    assert figures(fresh) == ("10", "9")


def test_pickup_jobs_list_allows_one_call_a_second(shim, clock):
    query = {"from": int((clock() - 86400) * 1000)}
    first = shim.get("/v1/pickup-jobs", params=query)
    assert first.status_code == 200, first.text
    assert figures(first) == ("1", "0")
    assert_rate_limited(shim.get("/v1/pickup-jobs", params=query), 1)
    one = shim.get("/v1/pickup-jobs/123")  # the single-job route keeps the default limit
    assert one.status_code == 200
    assert figures(one) == ("10", "9")
    clock.advance(1)
    assert shim.get("/v1/pickup-jobs", params=query).status_code == 200


def test_service_errors_carry_and_consume_the_limit(shim):
    """A 404 from the service passed the gateway: it counts and shows the figures."""
    missing = burst(shim, "/v1/pickup-locations/99999999", 3)
    assert [a.status_code for a in missing] == [404] * 3
    assert [figures(a) for a in missing] == [("10", "9"), ("10", "8"), ("10", "7")]
    assert figures(shim.get("/v1/pickup-locations/23789")) == ("10", "6")  # same route


def test_scope_refusals_carry_the_figures(shim, test_secrets):
    token = shim.session.post(shim.base_url + "/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret, "scope": "read:product"}).json()
    answer = shim.session.get(shim.base_url + "/v1/pickup-jobs/123", timeout=10,
                              headers={"Authorization": f"Bearer {token['access_token']}"})
    assert answer.status_code == 403
    assert figures(answer) == ("10", "9")


def test_a_read_over_the_limit_never_reaches_the_platform(shim, sandbox, ledger):
    """A read's count is read back before the platform call, never after it."""
    assert [a.status_code for a in burst(shim, "/v1/products/100150", 10)] == [200] * 10
    seen = ledger(sandbox)[-1]["seq"]
    assert_rate_limited(shim.get("/v1/products/100150"), 10)
    assert ledger(sandbox, after=seen) == []


def test_over_the_limit_a_read_the_service_would_refuse_gets_the_429(shim):
    """Kong's order: the limiter refuses before the service looks at the request."""
    answers = burst(shim, "/v1/products/not-digits", 11)
    assert [a.status_code for a in answers[:10]] == [400] * 10
    assert figures(answers[9]) == ("10", "0")
    assert_rate_limited(answers[10], 10)


def test_over_the_limit_a_read_out_of_scope_gets_the_429(shim, test_secrets):
    token = shim.session.post(shim.base_url + "/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret, "scope": "read:product"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    answers = [shim.session.get(shim.base_url + "/v1/pickup-jobs/123", timeout=10,
                                headers=headers) for _ in range(11)]
    assert [a.status_code for a in answers[:10]] == [403] * 10
    assert_rate_limited(answers[10], 10)


def test_unauthenticated_calls_are_not_counted(shim):
    for _ in range(12):
        refused = shim.session.get(shim.base_url + LOCATIONS, timeout=10)
        assert refused.status_code == 401
        assert figures(refused) == (None, None)
    assert figures(shim.get(LOCATIONS)) == ("10", "9")


def test_counters_are_per_client(shim):
    burst(shim, LOCATIONS, 11)
    other = shim.get(LOCATIONS, client_id="reader")
    assert other.status_code == 200
    assert figures(other) == ("10", "9")
    assert shim.get(LOCATIONS).status_code == 429


def test_counters_are_per_route(shim):
    burst(shim, LOCATIONS, 11)
    products = shim.get("/v1/products")
    assert products.status_code == 200
    assert figures(products) == ("10", "9")
    one_location = shim.get("/v1/pickup-locations/23789")
    assert figures(one_location) == ("10", "9")


def test_storage_failure_lets_calls_through_and_logs(shim, server, caplog):
    """Kong's fault_tolerant default: without counters the call is served, with no figures."""
    server.app.extensions[ratelimit.EXTENSION] = RouteLimiter(BrokenStorage(), 10, {})
    with caplog.at_level(logging.ERROR, logger="shim.counters"):
        answer = shim.get(LOCATIONS)
    assert answer.status_code == 200
    assert figures(answer) == (None, None)
    assert any("rate-limit storage failed" in r.getMessage() for r in caplog.records)


# The limiter itself


class BrokenStorage(MemoryStorage):
    """A storage whose backend is down."""

    def incr(self, key, expiry, amount=1):
        raise ConnectionError("storage unreachable")


def test_limiter_windows_are_calendar_seconds():
    limiter = RouteLimiter("memory://", 2, {})
    assert limiter.admit("c", "r", 100.9)[REMAINING_HEADER] == "1"
    assert limiter.admit("c", "r", 100.95)[REMAINING_HEADER] == "0"
    with pytest.raises(GatewayMessage) as refused:
        limiter.admit("c", "r", 100.99)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    assert limiter.admit("c", "r", 101.0)[REMAINING_HEADER] == "1"


def test_limiter_overrides_and_keys():
    limiter = RouteLimiter("memory://", 3, {"slow": 1})
    assert limiter.admit("c", "slow", 5.0) == {LIMIT_HEADER: "1", REMAINING_HEADER: "0"}
    with pytest.raises(GatewayMessage):
        limiter.admit("c", "slow", 5.5)
    assert limiter.admit("d", "slow", 5.5)[REMAINING_HEADER] == "0"  # another client
    assert limiter.admit("c", "fast", 5.5) == {LIMIT_HEADER: "3", REMAINING_HEADER: "2"}
    assert limiter.admit("c/slow", "x", 5.5)[REMAINING_HEADER] == "2"  # no key collisions


def test_process_counters_count_expire_and_sweep():
    from shim.counters import ProcessCounters

    now = [100.0]
    counters = ProcessCounters(clock=lambda: now[0])
    assert [counters.incr("a", 5) for _ in range(3)] == [1, 2, 3]
    assert counters.incr("a", 5, amount=-1) == 2  # a failed-auth place given back
    assert counters.incr("b", 5) == 1
    now[0] += 5  # both expire
    assert counters.incr("a", 5) == 1
    for index in range(ProcessCounters._SWEEP_EVERY):
        counters.incr(f"k{index}", 1)
    now[0] += 2
    counters.incr("late", 1)  # a sweep runs every _SWEEP_EVERY increments
    for _ in range(ProcessCounters._SWEEP_EVERY):
        counters.incr("late", 1)
    assert "k0" not in counters._counts
