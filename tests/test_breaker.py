"""The circuit breakers of the platform APIs (shim.upstream.breaker), through the shim.

The end-to-end tests drive a legacy client over real HTTP to a shim whose platform is the
sandbox, inject failures with the sandbox's fault rules, and read the sandbox's ledger to see
which calls reached the platform: an open breaker must answer without one. The tests of
``Breakers`` alone use a clock they move, and threads for the half-open race.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shim.record.settings import APP_KEY, STORE_ID
from shim.upstream import BackendTrouble, BreakerOpen, BusinessNotFound, UpstreamTimeout
from shim.upstream.breaker import CLOSED, HALF_OPEN, OPEN, Breakers, Transition
from shim.upstream.client import LazadaClient, RetryBudget, SellerCredentials

PRODUCT_API, LOTS_API = "/rss/product/get", "/rss/stockLots/get"
PRODUCT = "/v1/products/100150"
LOTS = "/v1/products/100150/pickup-locations/23789/stock-lots"
MISSING = "/v1/products/999999999"
# Few failures to open, and no retries unless a test wants them, so ledgers stay short.
SETTINGS = {"breaker_failures": 3, "breaker_open_s": 30.0, "read_retries": 0,
            "rate_limit_per_second": 1_000_000}


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stack(make_stack):
    running = make_stack(**SETTINGS)
    yield running
    running.close()


def calls_to(stack, api: str, after: int) -> list[dict]:
    """Return the calls of ``api`` the platform received after ledger entry ``after``."""
    return [entry for entry in stack.ledger(after) if entry["api"] == api]


def breaker_state(stack, api: str) -> str:
    """Return the state of ``api``'s breaker as ``services.breakers.snapshot()`` shows it."""
    views = {view.api: view for view in stack.app.extensions["shim"].breakers.snapshot()}
    return views[api].state if api in views else CLOSED


def trip(stack, session: requests.Session, times: int = 3) -> None:
    """Fail the product API until its breaker opens (``times`` failed calls in a row)."""
    stack.fault(api=PRODUCT_API, kind="http503", rate=1.0)
    for _ in range(times):
        answer = session.get(stack.shim.base_url + PRODUCT, timeout=30)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert breaker_state(stack, PRODUCT_API) == OPEN


# --- through the shim -----------------------------------------------------------------------


def test_failures_in_a_row_open_it_and_then_503s_come_without_a_platform_call(stack, log_lines):
    session = stack.session()
    base = stack.shim.base_url
    try:
        stack.fault(api=PRODUCT_API, kind="http503", rate=1.0)
        for _ in range(2):
            assert session.get(base + PRODUCT, timeout=30).status_code == 503
        assert breaker_state(stack, PRODUCT_API) == CLOSED  # two of three
        seen = len(log_lines)
        assert session.get(base + PRODUCT, timeout=30).status_code == 503
        assert breaker_state(stack, PRODUCT_API) == OPEN
        opened = [json.loads(line) for line in log_lines[seen:]
                  if "circuit breaker" in line and PRODUCT_API in line]
        assert [line["level"] for line in opened] == ["WARNING"]

        start = stack.last_seq()
        answers = [session.get(base + PRODUCT, timeout=30) for _ in range(5)]
        assert calls_to(stack, PRODUCT_API, start) == []  # nothing reached the platform
        for answer in answers:
            assert answer.status_code == 503
            assert answer.json() == {"title": "Service Unavailable"}
            assert 1 <= int(answer.headers["retry-after"]) <= 30  # until half-open
        # Another API of the same app is its own breaker: stock lots still served.
        lots = session.get(base + LOTS, timeout=30)
        assert lots.status_code == 200, lots.text
        assert breaker_state(stack, LOTS_API) == CLOSED
    finally:
        session.close()


def test_an_open_breaker_refuses_an_update_as_not_sent(make_stack):
    """A PATCH refused by the update API's open breaker is a plain 503, not "outcome
    unknown": nothing reached the platform."""
    stack = make_stack(**SETTINGS)
    session = stack.session()
    path = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
    try:
        stack.fault(api="/rss/stockLot/update", kind="http502", rate=1.0)
        for _ in range(3):
            etag = session.get(stack.shim.base_url + path, timeout=30).headers["etag"]
            session.patch(stack.shim.base_url + path, json={"quantityAtPickupLocation": 7},
                          headers={"If-Match": etag}, timeout=30)
        assert breaker_state(stack, "/rss/stockLot/update") == OPEN
        start = stack.last_seq()
        etag = session.get(stack.shim.base_url + path, timeout=30).headers["etag"]
        answer = session.patch(stack.shim.base_url + path,
                               json={"quantityAtPickupLocation": 7},
                               headers={"If-Match": etag}, timeout=30)
        assert answer.status_code == 503 and "retry-after" in answer.headers
        assert answer.json() == {"title": "Service Unavailable"}  # no "may have been applied"
        assert calls_to(stack, "/rss/stockLot/update", start) == []
    finally:
        session.close()
        stack.close()


def test_retries_of_one_read_count_as_one_failure(make_stack):
    stack = make_stack(**{**SETTINGS, "read_retries": 2})
    session = stack.session()
    try:
        stack.fault(api=PRODUCT_API, kind="http503", rate=1.0)
        start = stack.last_seq()
        for _ in range(2):
            assert session.get(stack.shim.base_url + PRODUCT, timeout=30).status_code == 503
        assert len(calls_to(stack, PRODUCT_API, start)) == 2 * 3  # each read tried thrice
        assert breaker_state(stack, PRODUCT_API) == CLOSED  # 6 attempts, 2 failures
        assert session.get(stack.shim.base_url + PRODUCT, timeout=30).status_code == 503
        assert breaker_state(stack, PRODUCT_API) == OPEN
    finally:
        session.close()
        stack.close()


@pytest.mark.parametrize(("rule", "status"), [
    ({"kind": "ApiCallLimit"}, 429),  # throttling: the platform answers
    ({"kind": "InsufficientPermission"}, 500),  # a refusal of the call as made
    ({"kind": "SellerNotActive"}, 403),
])
def test_answers_that_are_not_platform_trouble_never_open_it(stack, rule, status):
    session = stack.session()
    try:
        for _ in range(6):  # twice the failures that would open it
            assert session.get(stack.shim.base_url + MISSING, timeout=30).status_code == 404
        stack.fault(api=PRODUCT_API, rate=1.0, **rule)
        for _ in range(6):
            assert session.get(stack.shim.base_url + PRODUCT, timeout=30).status_code == status
        assert breaker_state(stack, PRODUCT_API) == CLOSED
    finally:
        session.close()


def test_an_answer_ends_a_run_of_failures(stack):
    session = stack.session()
    try:
        for _ in range(3):
            stack.fault(api=PRODUCT_API, kind="http503", times=2)
            for status in (503, 503, 404):  # two failures, then "not found": an answer
                path = MISSING if status == 404 else PRODUCT
                assert session.get(stack.shim.base_url + path, timeout=30).status_code == status
        assert breaker_state(stack, PRODUCT_API) == CLOSED
    finally:
        session.close()


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes(make_stack):
    stack = make_stack(**{**SETTINGS, "breaker_open_s": 2.0})
    session = stack.session()
    base = stack.shim.base_url
    try:
        trip(stack, session)
        stack.control("DELETE", "/faults")
        time.sleep(2.1)  # past the open period: the next call is the probe
        assert breaker_state(stack, PRODUCT_API) == HALF_OPEN
        # The probe is slow (within the 2 s read deadline of these settings), so the other
        # callers all arrive while it is out.
        stack.fault(api=PRODUCT_API, kind="latency", latency_ms=1500, times=1)
        start = stack.last_seq()
        barrier = threading.Barrier(8)

        def get(_: int) -> requests.Response:
            caller = stack.session()
            try:
                barrier.wait()
                return caller.get(base + PRODUCT, timeout=30)
            finally:
                caller.close()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(get, range(8)))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] + [503] * 7
        assert {answer.headers["retry-after"] for answer in answers
                if answer.status_code == 503} == {"1"}
        assert len(calls_to(stack, PRODUCT_API, start)) == 1  # the probe alone
        assert breaker_state(stack, PRODUCT_API) == CLOSED
        assert session.get(base + PRODUCT, timeout=30).status_code == 200
    finally:
        session.close()
        stack.close()


def test_a_failed_probe_reopens_it_and_metrics_show_each_transition(make_stack, tmp_path,
                                                                    operator_token):
    stack = make_stack(database=tmp_path / "shim.db", **{**SETTINGS, "breaker_open_s": 3.0})
    session = stack.session()
    base = stack.shim.base_url
    try:
        trip(stack, session)  # the fault stays: the probe fails too
        time.sleep(3.1)
        start = stack.last_seq()
        assert session.get(base + PRODUCT, timeout=30).status_code == 503  # the probe
        assert len(calls_to(stack, PRODUCT_API, start)) == 1
        assert breaker_state(stack, PRODUCT_API) == OPEN
        assert session.get(base + PRODUCT, timeout=30).status_code == 503
        assert len(calls_to(stack, PRODUCT_API, start)) == 1  # open again: no call

        metrics = requests.get(base + "/metrics", timeout=10,
                               headers={"Authorization": f"Bearer {operator_token}"}).text
        assert f'shim_upstream_breaker_state{{api="{PRODUCT_API}"}} 2.0' in metrics
        for to, times in (("open", 2), ("half_open", 1)):
            assert (f'shim_upstream_breaker_transitions_total{{api="{PRODUCT_API}",to="{to}"}} '
                    f"{times}.0") in metrics
        assert f'shim_upstream_breaker_state{{api="{LOTS_API}"}}' not in metrics  # never used

        stack.control("DELETE", "/faults")
        time.sleep(3.1)
        assert session.get(base + PRODUCT, timeout=30).status_code == 200  # probe: closes
        metrics = requests.get(base + "/metrics", timeout=10,
                               headers={"Authorization": f"Bearer {operator_token}"}).text
        assert f'shim_upstream_breaker_state{{api="{PRODUCT_API}"}} 0.0' in metrics
        assert (f'shim_upstream_breaker_transitions_total{{api="{PRODUCT_API}",to="closed"}} '
                "1.0") in metrics
    finally:
        session.close()
        stack.close()


# --- the client: a read inside its retry budget keeps it ------------------------------------


def test_a_read_retrying_when_the_breaker_opens_finishes_its_retries(sandbox, test_secrets,
                                                                     ledger):
    breakers = Breakers(failures=2, open_s=30)
    seller = SellerCredentials(store_id=STORE_ID, access_token=test_secrets.access_token)
    opened: list[bool] = []

    def sleep(_: float) -> None:
        # While the first read waits to retry, two other calls fail and open the breaker.
        if not opened:
            opened.append(True)
            for _ in range(2):
                with pytest.raises(BackendTrouble):
                    client.rss(PRODUCT_API, seller, {"productId": 100150})
            assert breakers.get(APP_KEY, PRODUCT_API).state == OPEN

    client = LazadaClient(app_key=APP_KEY, app_secret=test_secrets.app_secret,
                          api_url=sandbox.api_url, read_retries=2, sleep=sleep,
                          breakers=breakers, retry_budget=RetryBudget(ratio=0, minimum=1))
    with client:
        # The first read's first attempt fails and takes the budget's one retry; the two calls
        # in ``sleep`` fail (the rule's other two answers) with no retry left; then the first
        # read's retry goes out although the breaker is open now, and is answered.
        requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5, json={
            "api": PRODUCT_API, "kind": "SYSTEM_ERROR", "times": 3}).raise_for_status()
        start = len(ledger(sandbox))
        result = client.rss(PRODUCT_API, seller, {"productId": 100150})
        assert result.data
        assert len([entry for entry in ledger(sandbox)[start:]
                    if entry["api"] == PRODUCT_API]) == 4
        # Its success came from before the breaker opened: stale, so the breaker stays open.
        assert breakers.get(APP_KEY, PRODUCT_API).state == OPEN
        with pytest.raises(BreakerOpen):
            client.rss(PRODUCT_API, seller, {"productId": 100150})


# --- the breakers alone ---------------------------------------------------------------------


def failing() -> UpstreamTimeout:
    return UpstreamTimeout("the platform did not answer in time", api=PRODUCT_API)


def run(breakers: Breakers, outcome: Exception | None = None, api: str = PRODUCT_API) -> None:
    """Make one call through the breaker of ``api`` that ends with ``outcome``."""
    with breakers.get("app", api).guard():
        if outcome is not None:
            raise outcome


def half_open() -> Breakers:
    """Return breakers whose product API breaker opened on one failure and whose open time
    has since run out: the next call is its probe."""
    clock = Clock()
    breakers = Breakers(failures=1, open_s=1, clock=clock, wall=clock)
    with pytest.raises(UpstreamTimeout):
        run(breakers, failing())
    clock.now += 1
    return breakers


def test_transitions_reach_the_observer_and_open_reads_its_wait():
    clock, seen = Clock(), []
    breakers = Breakers(failures=2, open_s=10, clock=clock, wall=clock, observer=seen.append)
    for _ in range(2):
        with pytest.raises(UpstreamTimeout):
            run(breakers, failing())
    clock.now += 4
    with pytest.raises(BreakerOpen) as refused:
        run(breakers)
    assert refused.value.retry_after_s == 6
    [view] = breakers.snapshot()
    assert (view.api, view.state, view.since, view.retry_after_s) == (PRODUCT_API, OPEN,
                                                                      1000.0, 6)
    clock.now += 6
    assert breakers.snapshot()[0].state == HALF_OPEN and breakers.worst(PRODUCT_API) == HALF_OPEN
    run(breakers)
    assert [(t.before, t.after) for t in seen] == [
        (None, CLOSED), (CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert all(isinstance(t, Transition) and t.app == "app" for t in seen)


def test_a_business_error_is_an_answer_and_closes_a_half_open_breaker():
    breakers = half_open()
    with pytest.raises(BusinessNotFound):
        run(breakers, BusinessNotFound("no such product", api=PRODUCT_API))
    assert breakers.get("app", PRODUCT_API).state == CLOSED


def test_a_probe_that_ends_in_a_bug_frees_the_slot_for_the_next_caller():
    breakers = half_open()
    with pytest.raises(KeyError):
        run(breakers, KeyError("a bug"))
    assert breakers.get("app", PRODUCT_API).state == HALF_OPEN
    run(breakers)
    assert breakers.get("app", PRODUCT_API).state == CLOSED


def test_only_one_of_many_threads_gets_the_probe():
    breakers = half_open()
    breaker = breakers.get("app", PRODUCT_API)
    barrier, release = threading.Barrier(32), threading.Event()
    admitted, refused = [], []

    def call(_: int) -> None:
        barrier.wait()
        try:
            with breaker.guard():
                admitted.append(True)
                release.wait(10)
        except BreakerOpen as error:
            refused.append(error.retry_after_s)
            if len(refused) == 31:
                release.set()

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(call, range(32)))
    assert (len(admitted), len(refused)) == (1, 31)
    assert breaker.state == CLOSED


def test_calls_admitted_before_it_opened_do_not_reopen_it():
    clock = Clock()
    breakers = Breakers(failures=1, open_s=1, clock=clock, wall=clock)
    breaker = breakers.get("app", PRODUCT_API)
    slow = breaker.guard()
    slow.__enter__()  # a slow call, admitted while closed
    with pytest.raises(UpstreamTimeout):
        run(breakers, failing())
    clock.now += 1
    run(breakers)  # the probe closes it
    late = failing()  # the slow call finally fails: its failure goes on up, unchanged
    assert slow.__exit__(UpstreamTimeout, late, late.__traceback__) is False
    assert breaker.state == CLOSED


def test_nonsense_settings_are_refused():
    for arguments in ({"failures": 0}, {"open_s": 0}):
        with pytest.raises(ValueError):
            Breakers(**arguments)
