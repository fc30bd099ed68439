"""The retry budget and read retries of ``LazadaClient`` (shim.upstream.client), on the sandbox.

Each test counts the calls the platform received in the sandbox's ledger, so a retry that the
client made but did not report, or reported but did not make, shows.
"""

from __future__ import annotations

import pytest
import requests

from shim import errors
from shim.record.settings import APP_KEY, STORE_ID
from shim.upstream import GatewayError, MalformedResponse, UpstreamUnavailable
from shim.upstream import errors as up
from shim.upstream.client import LazadaClient, RetryBudget, SellerCredentials

PRODUCT = ("/rss/product/get", {"productId": 100150})
UPDATE = ("/rss/stockLot/update", {"productId": 100150, "pickupLocationId": 23789,
                                   "stockLotId": "0",
                                   "stockLotUpdateDTO": {"quantityAtPickupLocation": 20}})


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the budget alone -----------------------------------------------------------------------


def spend(budget: RetryBudget) -> int:
    """Return how many retries the budget allows now (taking them)."""
    allowed = 0
    while budget.try_retry():
        allowed += 1
    return allowed


def test_a_quiet_client_has_the_minimum():
    assert spend(RetryBudget(ratio=0.1, minimum=3, clock=Clock())) == 3


def test_retries_add_at_most_the_ratio_of_calls():
    budget = RetryBudget(ratio=0.1, minimum=3, clock=Clock())
    for _ in range(200):
        budget.record_call()
    assert spend(budget) == 3 + 20
    budget.record_call()
    assert not budget.try_retry()  # a tenth of one call is not a retry
    assert budget.counts() == (201, 23)


def test_the_window_slides():
    clock = Clock()
    budget = RetryBudget(ratio=0.5, minimum=0, window_s=10, clock=clock)
    for _ in range(10):
        budget.record_call()
    assert spend(budget) == 5
    clock.now += 9.5  # still in the window (whole seconds: bucket 1000 of 1000..1009)
    assert budget.counts() == (10, 5) and not budget.try_retry()
    clock.now += 0.5  # second 1010: the first second's calls and retries have left
    assert budget.counts() == (0, 0)
    for _ in range(4):
        budget.record_call()
    assert spend(budget) == 2


@pytest.mark.parametrize("arguments", [{"ratio": -0.1}, {"minimum": -1}, {"window_s": 0}])
def test_nonsense_budgets_are_refused(arguments):
    with pytest.raises(ValueError):
        RetryBudget(**arguments)


def test_every_retried_code_is_a_passing_trouble_in_the_error_table():
    """The client retries a read on these codes; the table must call them passing (503)."""
    retried = [code for code, kind in up.CODES.items() if issubclass(kind, up.BackendTrouble)]
    assert "ServiceTimeout" in retried and "SYSTEM_ERROR" in retried
    for code in retried:
        outcome = errors.outcome_for(up.GatewayError("busy", code=code))
        assert (outcome.status, outcome.write_unknown) == (503, True), code


# --- the client against the sandbox ---------------------------------------------------------


@pytest.fixture
def seller(test_secrets):
    return SellerCredentials(STORE_ID, test_secrets.access_token)


@pytest.fixture
def make_client(sandbox, test_secrets):
    """Build clients for the sandbox (closed at teardown), recording their CallRecords."""
    made: list[LazadaClient] = []

    def make(**options) -> LazadaClient:
        records = []
        values = dict(app_key=APP_KEY, app_secret=test_secrets.app_secret,
                      api_url=sandbox.api_url, auth_url=sandbox.api_url, read_retries=2,
                      backoff_factor=0.01, connect_timeout=1.0, read_timeout=2.0,
                      observers=[records.append])
        values.update(options)
        client = LazadaClient(**values)
        client.records = records
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def fault(sandbox, **rule) -> None:
    requests.post(sandbox.base_url + "/_sandbox/faults", json=rule,
                  timeout=5).raise_for_status()


def received(sandbox, api: str) -> int:
    """Return how many calls of ``api`` the sandbox received."""
    entries = requests.get(sandbox.base_url + "/_sandbox/ledger", timeout=5).json()["entries"]
    return sum(1 for entry in entries if entry["api"] == api)


def test_one_budget_serves_every_call_of_a_client(sandbox, make_client, seller):
    fault(sandbox, api="*", kind="http503", rate=1.0)
    client = make_client(retry_budget=RetryBudget(ratio=0, minimum=1))
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            client.rss(PRODUCT[0], seller, PRODUCT[1])
    assert received(sandbox, PRODUCT[0]) == 3 + 1  # one retry in all, not two per call
    assert [record.retries for record in client.records] == [1, 0, 0]


def test_a_failed_call_reports_the_retries_it_made(sandbox, make_client, seller):
    fault(sandbox, api="*", kind="reset", times=3)
    client = make_client()
    with pytest.raises(UpstreamUnavailable):
        client.rss(PRODUCT[0], seller, PRODUCT[1])
    assert received(sandbox, PRODUCT[0]) == 3
    assert [(record.code, record.retries) for record in client.records] == [("Unavailable", 2)]


@pytest.mark.parametrize("kind", ["truncated", "html", "ServiceTimeout", "SYSTEM_ERROR"])
def test_a_read_with_a_garbled_or_backend_trouble_answer_is_retried(sandbox, make_client,
                                                                     seller, kind):
    fault(sandbox, api="*", kind=kind)
    client = make_client()
    assert client.rss(PRODUCT[0], seller, PRODUCT[1]).data["rpc"] == 100150
    assert received(sandbox, PRODUCT[0]) == 2
    assert client.records[0].retries == 1


@pytest.mark.parametrize("kind", ["truncated", "html", "ServiceTimeout", "reset", "http503"])
def test_an_update_is_never_retried(sandbox, make_client, seller, kind):
    fault(sandbox, api="*", kind=kind)
    client = make_client()
    with pytest.raises((MalformedResponse, GatewayError, UpstreamUnavailable)):
        client.rss(UPDATE[0], seller, UPDATE[1], method="POST")
    assert received(sandbox, UPDATE[0]) == 1
    assert client.records[0].retries == 0


@pytest.mark.parametrize(("kind", "raised"), [("ApiCallLimit", GatewayError),
                                              ("IllegalAccessToken", GatewayError),
                                              ("http500", UpstreamUnavailable)])
def test_answers_a_retry_cannot_cure_are_not_retried(sandbox, make_client, seller, kind,
                                                     raised):
    fault(sandbox, api="*", kind=kind)
    with pytest.raises(raised):
        make_client().rss(PRODUCT[0], seller, PRODUCT[1])
    assert received(sandbox, PRODUCT[0]) == 1


def test_answer_retries_back_off_like_urllib3(sandbox, make_client, seller):
    fault(sandbox, api="*", kind="truncated", times=2)
    slept = []
    client = make_client(backoff_factor=0.2, sleep=slept.append, jitter=lambda: 0.5)
    client.rss(PRODUCT[0], seller, PRODUCT[1])
    # The first retry at once, the second after backoff_factor * 2 plus its share of jitter
    # (up to backoff_factor).
    assert slept == [0.0, pytest.approx(0.4 + 0.5 * 0.2)]
    assert client.records[0].retries == 2


def test_transport_retries_follow_the_same_policy(sandbox, make_client, seller):
    """A reset and a 503 wait as a garbled answer does: one policy, one injected sleep."""
    fault(sandbox, api="*", kind="reset", times=1)
    fault(sandbox, api="*", kind="http503", times=1)
    slept = []
    client = make_client(backoff_factor=0.2, sleep=slept.append, jitter=lambda: 0.25)
    client.rss(PRODUCT[0], seller, PRODUCT[1])
    assert slept == [0.0, pytest.approx(0.4 + 0.25 * 0.2)]
    assert received(sandbox, PRODUCT[0]) == 3
    assert client.records[0].retries == 2



def test_answer_retries_share_read_retries_and_the_budget(sandbox, make_client, seller):
    fault(sandbox, api="*", kind="truncated", times=5)
    with pytest.raises(MalformedResponse):
        make_client(read_retries=1).rss(PRODUCT[0], seller, PRODUCT[1])
    with pytest.raises(MalformedResponse):
        make_client(retry_budget=RetryBudget(ratio=0, minimum=0)).rss(PRODUCT[0], seller,
                                                                      PRODUCT[1])
    assert received(sandbox, PRODUCT[0]) == 2 + 1


def test_a_slow_failure_is_not_retried(sandbox, make_client, seller):
    """Half the read timeout gone: a retry could take the call far past its deadline."""
    fault(sandbox, api="*", kind="ServiceTimeout", latency_ms=600)
    with pytest.raises(GatewayError):
        make_client(read_timeout=1.0).rss(PRODUCT[0], seller, PRODUCT[1])
    assert received(sandbox, PRODUCT[0]) == 1
