"""Sandbox misbehaviour on request, through the shim's own client: fault rules, latency,
type variance, outside writers, outages (down/up), applied-then-failed calls and skips."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time

import pytest
import requests

from shim.sandbox import SandboxServer
from shim.sandbox.testing import make_client, make_config, signed_params
from shim.upstream.client import SellerCredentials
from shim.upstream.errors import (
    BusinessError,
    GatewayError,
    MalformedResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

LOT = {"storeId": 414, "productId": 100150, "pickupLocationId": 23789}
LOT_0 = {"productId": 100150, "pickupLocationId": 23789, "stockLotId": "0"}


@pytest.fixture
def config():
    return make_config(("414",))


@pytest.fixture
def server(config):
    with SandboxServer(config) as running:
        yield running


@pytest.fixture
def client(server, config):
    lazada = make_client(server, config, read_timeout=2.0)
    yield lazada
    lazada.close()


@pytest.fixture
def seller(config):
    return SellerCredentials("414", config.sellers[0].access_token)


def control(server, method, path, body=None, expect=(200, 201)):
    response = requests.request(method, server.base_url + "/_sandbox" + path, json=body,
                                params=None if body is not None else LOT, timeout=5)
    assert response.status_code in expect, response.text
    return response.json()


def fault(server, **rule):
    return control(server, "POST", "/faults", rule)["id"]


def read_product(client, seller):
    return client.rss("/rss/product/get", seller, {"productId": 100150}).data


def update(client, seller, quantity):
    return client.rss("/rss/stockLot/update", seller,
                      {**LOT_0, "stockLotUpdateDTO": {"quantityAtPickupLocation": quantity}},
                      method="POST").data


def read_lot(client, seller):
    return client.rss("/rss/stockLot/get", seller, LOT_0).data


def stock(server):
    return control(server, "GET", "/stock")["quantityAtPickupLocation"]


def ledger(server) -> list[dict]:
    return control(server, "GET", "/ledger", {})["entries"]


@pytest.mark.parametrize(("code", "error_type", "message"), [
    ("ApiCallLimit", "ISV", "Api access frequency exceeds the limit. this ban will last 1 seconds"),
    ("AppCallLimit", "ISV", None),
    ("ServiceTimeout", "ISP", "The request has failed due to service timeout"),
    ("SYSTEM_ERROR", "SYSTEM", None),
    ("IllegalAccessToken", "ISV", "The specified access token is invalid or expired"),
    ("E0042", "ISP", "The request has failed (E0042)"),
])
def test_gateway_error_faults(server, client, seller, code, error_type, message):
    fault(server, api="/rss/product/get", kind=code)
    with pytest.raises(GatewayError) as error:
        read_product(client, seller)
    assert (error.value.code, error.value.error_type) == (code, error_type)
    assert error.value.message == (message or error.value.message)
    assert read_product(client, seller)["rpc"] == 100150  # times defaults to 1


def test_a_fault_on_one_path_leaves_others_alone(server, client, seller):
    fault(server, api="/rss/stockLots/get", kind="ApiCallLimit", times=2)
    assert read_product(client, seller)
    for _ in range(2):
        with pytest.raises(GatewayError):
            client.rss("/rss/stockLots/get", seller, {"productId": 100150,
                                                       "pickupLocationId": 23789})
    assert client.rss("/rss/stockLots/get", seller, {"productId": 100150,
                                                      "pickupLocationId": 23789}).data


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_status_faults(server, client, seller, status):
    fault(server, api="*", kind=f"http{status}")
    with pytest.raises(UpstreamUnavailable) as error:
        read_product(client, seller)
    assert error.value.http_status == status


@pytest.mark.parametrize("kind", ["html", "truncated"])
def test_unreadable_answers(server, client, seller, kind):
    fault(server, kind=kind)
    with pytest.raises(MalformedResponse):
        read_product(client, seller)


def test_truncated_answer_still_ran_the_write(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="truncated")
    with pytest.raises(MalformedResponse):
        update(client, seller, 31)
    assert stock(server) == 31


def test_reset_drops_the_connection_without_running_the_call(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="reset")
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        update(client, seller, 40)
    assert time.monotonic() - started < 1  # a prompt error, not a hang
    assert stock(server) == 10
    entry = ledger(server)[-1]
    assert (entry["fault"], entry["success"]) == ("reset", False)


def test_lost_response_applies_the_write_then_drops(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="lost_response")
    with pytest.raises(UpstreamUnavailable):
        update(client, seller, 41)
    assert stock(server) == 41
    entry = ledger(server)[-1]
    assert (entry["fault"], entry["applied"], entry["after"]["quantityAtPickupLocation"]) == (
        "lost_response", True, 41)


def test_latency_fault_answers_late_but_normally(server, client, seller):
    fault(server, kind="latency", latency_ms=150)
    started = time.monotonic()
    assert read_product(client, seller)["rpc"] == 100150
    assert time.monotonic() - started >= 0.15


def test_sleep_fault_outlives_the_deadline_after_the_write(server, config, seller):
    impatient = make_client(server, config, read_timeout=0.2)
    fault(server, api="/rss/stockLot/update", kind="sleep", latency_ms=600)
    try:
        with pytest.raises(UpstreamTimeout):
            update(impatient, seller, 42)
    finally:
        impatient.session.close()
    assert stock(server) == 42


def test_global_latency(server, client, seller):
    assert control(server, "POST", "/latency", {"ms": 120}) == {"ms": 120}
    started = time.monotonic()
    read_product(client, seller)
    assert time.monotonic() - started >= 0.12
    control(server, "POST", "/latency", {"ms": 0})


def test_rate_rules_use_the_seeded_rng(server, client, seller):
    fault(server, kind="ServiceTimeout", rate=0.5)
    outcomes = []
    for _ in range(24):
        try:
            read_product(client, seller)
            outcomes.append(True)
        except GatewayError:
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 24
    assert len(control(server, "GET", "/faults", {})["faults"]) == 1  # rate rules stay
    control(server, "DELETE", "/faults", {})
    assert read_product(client, seller)


@pytest.mark.parametrize("rule", [
    {"kind": "nonsense kind!"}, {"kind": "latency"}, {"kind": "reset", "times": 0},
    {"kind": "reset", "rate": 1.5}, {"kind": "reset", "times": 1, "rate": 0.5},
    {"kind": "reset", "api": "rss/products/get"},
    {"kind": "outside_write"}, {"kind": "reset", "at_delta": 1},
    {"kind": "outside_write", "at_delta": "1"}, {"kind": "lost_response", "run": True},
    {"kind": "latency", "latency_ms": 5, "run": True}, {"kind": "reset", "run": "yes"},
    {"kind": "reset", "skip": -1}, {"kind": "reset", "land_after_ms": -1},
    {"kind": "http504", "land_after_ms": 60_001}, {"kind": "http504", "land_after_ms": True},
    {"kind": "http504", "run": True, "land_after_ms": 10},
    {"kind": "sleep", "latency_ms": 5, "land_after_ms": 10}])
def test_bad_fault_rules_are_refused(server, rule):
    assert "error" in control(server, "POST", "/faults", rule, expect=(400,))


def test_variance_mode(server, client, seller):
    control(server, "POST", "/variance", {"enabled": True})
    page = client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 3})
    assert (page.page, page.page_size, page.total) == ("1", "3", "300")
    assert isinstance(page.data[0]["status"], str)
    lot = client.rss("/rss/stockLot/get", seller, LOT_0).data
    assert lot["id"] == 0
    empty = client.rss("/rss/stockLots/get", seller, {"productId": 100150,
                                                      "pickupLocationId": 23793})
    assert empty.data is None
    control(server, "POST", "/variance", {"enabled": False})
    assert client.rss("/rss/stockLot/get", seller, LOT_0).data["id"] == "0"


def test_variance_mode_envelope(server, config, seller):
    control(server, "POST", "/variance", {"enabled": True})
    values = signed_params(config, "/rss/product/get", {"storeId": "414", "productId": "1"},
                           access_token=seller.access_token)
    failure = requests.get(server.api_url + "/rss/product/get", params=values, timeout=5).json()
    assert failure["result"]["success"] == "false"
    values = signed_params(config, "/rss/product/get", {"storeId": "414", "productId": "100150"},
                           access_token=seller.access_token)
    result = requests.get(server.api_url + "/rss/product/get", params=values,
                          timeout=5).json()["result"]
    assert (result["success"], result["errorMessage"]) == ("true", "error message")


def test_outside_writer(server, client, seller):
    after = control(server, "POST", "/stock", {**LOT, "quantityScheduledForPickup": 9})
    assert after == {"id": "0", "quantityAtPickupLocation": 10,
                     "quantityScheduledForPickup": 9, "quantityAvailableForSale": 1}
    assert client.rss("/rss/stockLot/get", seller, LOT_0).data == after
    with pytest.raises(BusinessError, match="cannot be lower"):
        update(client, seller, 8)
    entry = next(e for e in ledger(server) if e["source"] == "outside")
    assert entry["before"]["quantityScheduledForPickup"] == 2
    assert entry["after"]["quantityScheduledForPickup"] == 9
    control(server, "POST", "/stock", {**LOT, "quantityScheduledForPickup": 11}, expect=(409,))
    control(server, "POST", "/stock", {**LOT, "productId": 1, "quantityAtPickupLocation": 1},
            expect=(404,))
    control(server, "POST", "/stock", LOT, expect=(400,))


def test_ledger_after(server, client, seller):
    read_product(client, seller)
    first = requests.get(server.base_url + "/_sandbox/ledger", timeout=5).json()
    read_product(client, seller)
    later = requests.get(server.base_url + "/_sandbox/ledger",
                         params={"after": first["last_seq"]}, timeout=5).json()
    assert [e["seq"] for e in later["entries"]] == [first["last_seq"] + 1]


def test_a_long_ledger_leaves_nothing_for_the_garbage_collector_to_walk(server, client, seller):
    """Every full collection walks every tracked object, with the sandbox paused: kept as
    dicts, 10^5 recorded calls made each one take up to 76 ms. Entries still read back whole,
    as copies."""
    read_product(client, seller)
    state = server.state
    [real] = state.ledger()
    gc.collect()
    before = len(gc.get_objects())
    for n in range(10_000):
        state.record({"api": "/rss/product/get", "params": {"productId": str(n)},
                      "source": "api"})
    gc.collect()
    assert len(gc.get_objects()) - before < 100  # as dicts: ~10,000 more
    assert state.ledger()[0] == real and real["params"]
    [last] = state.ledger(10_000)
    assert (last["seq"], last["params"]) == (10_001, {"productId": "9999"})
    last["params"]["productId"] = "changed"
    assert state.ledger(10_000)[0]["params"] == {"productId": "9999"}


def test_secrets_never_reach_the_logs(server, client, seller, config, caplog):
    caplog.set_level(logging.DEBUG)
    fault(server, kind="http500")
    for call in (lambda: read_product(client, seller),
                 lambda: client.rss("/rss/product/get", SellerCredentials("414", "bad"), {}),
                 lambda: read_product(client, seller)):
        with contextlib.suppress(GatewayError, UpstreamUnavailable):
            call()
    requests.get(server.api_url + "/rss/product/get?access_token=leaky&sign=ABC", timeout=5)
    assert "/rss/product/get" in caplog.text
    for secret in (config.app_secret, seller.access_token, "leaky", "sign=ABC"):
        assert secret not in caplog.text


# --- down and up ----------------------------------------------------------------------------


def test_down_refuses_calls_and_up_serves_the_same_state_on_the_same_port(server, client,
                                                                          seller):
    update(client, seller, 33)
    url = server.base_url
    server.down()
    with pytest.raises(UpstreamUnavailable):
        read_lot(client, seller)
    server.down()  # twice is harmless
    assert server.up() is server and server.base_url == url
    assert read_lot(client, seller)["quantityAtPickupLocation"] == 33
    assert [entry["api"] for entry in ledger(server)] == ["/rss/stockLot/update",
                                                          "/rss/stockLot/get"]


def test_down_cuts_a_call_in_flight_without_an_answer(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="sleep", latency_ms=5000)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            update(client, seller, 34)
        except UpstreamError as error:
            raised.append(error)

    worker = threading.Thread(target=call)
    worker.start()
    while not ledger(server):
        time.sleep(0.01)
    started = time.monotonic()
    server.down()
    worker.join()
    assert time.monotonic() - started < 1
    assert [type(error) for error in raised] == [UpstreamUnavailable]
    server.up()
    assert stock(server) == 34  # it ran before the outage


# --- outside writes, applied-then-failed calls, skips ---------------------------------------


def test_an_outside_write_lands_between_a_read_and_the_update(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="outside_write", at_delta=5,
          scheduled_delta=1)
    assert update(client, seller, 20)["quantityAtPickupLocation"] == 20
    outside, call = ledger(server)
    assert (outside["source"], outside["via"]) == ("outside", "outside_write")
    assert (outside["before"]["quantityAtPickupLocation"],
            outside["after"]["quantityAtPickupLocation"],
            outside["after"]["quantityScheduledForPickup"]) == (10, 15, 3)
    assert (call["source"], call["before"], call["applied"]) == ("api", outside["after"], True)


def test_an_impossible_outside_write_is_skipped(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="outside_write", at_delta=-100)
    update(client, seller, 20)
    assert [entry["api"] for entry in ledger(server)] == ["/rss/stockLot/update"]


@pytest.mark.parametrize(("rule", "raised"), [
    ({"kind": "ServiceTimeout"}, GatewayError),
    ({"kind": "http502"}, UpstreamUnavailable),
    ({"kind": "http504"}, UpstreamUnavailable),
    ({"kind": "reset"}, UpstreamUnavailable),
])
def test_run_applies_the_call_then_fails_it(server, client, seller, rule, raised):
    fault(server, api="/rss/stockLot/update", run=True, **rule)
    with pytest.raises(raised):
        update(client, seller, 21)
    (entry,) = ledger(server)
    assert (entry["fault"], entry["applied"], entry["success"]) == (rule["kind"], True, True)
    assert stock(server) == 21


def test_without_run_the_call_does_not_happen(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="ServiceTimeout")
    with pytest.raises(GatewayError):
        update(client, seller, 22)
    assert "applied" not in ledger(server)[0]
    assert stock(server) == 10


def test_skip_lets_the_first_matching_calls_through(server, client, seller):
    fault(server, api="/rss/stockLot/get", kind="ServiceTimeout", times=1, skip=2)
    read_lot(client, seller)
    read_lot(client, seller)
    with pytest.raises(GatewayError):
        read_lot(client, seller)
    read_lot(client, seller)


def test_land_after_runs_the_call_late_behind_the_fault(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="http504", land_after_ms=300)
    with pytest.raises(UpstreamUnavailable) as error:
        update(client, seller, 23)
    assert error.value.http_status == 504
    assert stock(server) == 10  # not yet
    deadline = time.monotonic() + 5
    while stock(server) != 23 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stock(server) == 23
    answered, landed = ledger(server)
    assert (answered["fault"], answered["success"], "applied" not in answered) == (
        "http504", False, True)
    assert (landed["late"], landed["applied"], landed["request_id"]) == (
        True, True, answered["request_id"])

