"""``RetryPolicy`` (shim.upstream.client): which failures are tried again, and the waits."""

from __future__ import annotations

import pytest

from shim.upstream import errors as up
from shim.upstream.client import RetryPolicy

API = "/rss/product/get"


def policy(random: float = 0.0, **options) -> RetryPolicy:
    return RetryPolicy(random=lambda: random, **options)


@pytest.mark.parametrize(("error", "get", "post"), [
    (up.UpstreamUnreachable("refused", api=API), True, True),
    (up.UpstreamUnavailable("reset", api=API), True, False),
    (up.UpstreamUnavailable("gateway", http_status=502), True, False),
    (up.UpstreamUnavailable("gateway", http_status=503), True, False),
    (up.UpstreamUnavailable("gateway", http_status=504), True, False),
    (up.UpstreamUnavailable("backend", http_status=500), False, False),
    (up.MalformedResponse("cut off"), True, False),
    (up.MalformedResponse("html", http_status=200), True, False),
    (up.MalformedResponse("error page", http_status=403), False, False),
    (up.UpstreamTimeout("late"), False, False),
    (up.GatewayError("busy", code="SYSTEM_ERROR"), True, False),
    (up.GatewayError("late", code="ServiceTimeout"), True, False),
    (up.GatewayError("new", code="NeverSeen", error_type="ISP"), False, False),
    (up.GatewayError("slow down", code="ApiCallLimit"), False, False),
    (up.GatewayError("token", code="IllegalAccessToken"), False, False),
    (up.BusinessError("Product not found"), False, False),
], ids=lambda value: value if isinstance(value, bool) else f"{type(value).__name__}")
def test_what_is_worth_retrying(error, get, post):
    assert policy().worth_retrying(error, "GET") is get
    assert policy().worth_retrying(error, "post") is post


def test_the_first_retry_goes_at_once_then_backs_off_exponentially():
    assert [policy(backoff_factor=0.1).delay(n) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.8])


def test_jitter_adds_up_to_jitter_s():
    low = policy(0.0, backoff_factor=0.1, jitter_s=0.3).delay(2)
    high = policy(0.999, backoff_factor=0.1, jitter_s=0.3).delay(2)
    assert low == pytest.approx(0.2)
    assert high == pytest.approx(0.2 + 0.999 * 0.3)


def test_the_wait_is_capped_jitter_included():
    assert policy(0.9, backoff_factor=1.0, jitter_s=1.0, backoff_max_s=2.0).delay(5) == 2.0


def test_real_jitter_spreads_the_waits():
    waits = {RetryPolicy(backoff_factor=0.1, jitter_s=0.1).delay(2) for _ in range(20)}
    assert len(waits) > 1 and all(0.2 <= wait < 0.3 for wait in waits)
