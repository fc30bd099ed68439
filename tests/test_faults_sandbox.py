"""The sandbox's knobs for the fault suite: outages, outside writes, applied-then-failed calls
and skipped calls (shim.sandbox.server, faults, app), through the shim's own client."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from shim.sandbox import SandboxServer
from shim.sandbox.testing import make_client, make_config
from shim.upstream.client import SellerCredentials
from shim.upstream.errors import GatewayError, UpstreamError, UpstreamUnavailable

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


def control(server, method, path, body=None, params=None) -> requests.Response:
    return requests.request(method, server.base_url + "/_sandbox" + path, json=body,
                            params=params, timeout=5)


def fault(server, **rule) -> None:
    answer = control(server, "POST", "/faults", rule)
    assert answer.status_code == 201, answer.text


def ledger(server) -> list[dict]:
    return control(server, "GET", "/ledger").json()["entries"]


def lot(server) -> dict:
    return control(server, "GET", "/stock", params=LOT).json()


def update(client, seller, quantity: int):
    return client.rss("/rss/stockLot/update", seller,
                      {**LOT_0, "stockLotUpdateDTO": {"quantityAtPickupLocation": quantity}},
                      method="POST").data


def read(client, seller):
    return client.rss("/rss/stockLot/get", seller, LOT_0).data


# --- down and up ----------------------------------------------------------------------------


def test_down_refuses_calls_and_up_serves_the_same_state_on_the_same_port(server, client,
                                                                          seller):
    update(client, seller, 33)
    url = server.base_url
    server.down()
    with pytest.raises(UpstreamUnavailable):
        read(client, seller)
    server.down()  # twice is harmless
    assert server.up() is server and server.base_url == url
    assert read(client, seller)["quantityAtPickupLocation"] == 33
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
    assert lot(server)["quantityAtPickupLocation"] == 34  # it ran before the outage


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
    assert lot(server)["quantityAtPickupLocation"] == 21


def test_without_run_the_call_does_not_happen(server, client, seller):
    fault(server, api="/rss/stockLot/update", kind="ServiceTimeout")
    with pytest.raises(GatewayError):
        update(client, seller, 22)
    assert "applied" not in ledger(server)[0]
    assert lot(server)["quantityAtPickupLocation"] == 10


def test_skip_lets_the_first_matching_calls_through(server, client, seller):
    fault(server, api="/rss/stockLot/get", kind="ServiceTimeout", times=1, skip=2)
    read(client, seller)
    read(client, seller)
    with pytest.raises(GatewayError):
        read(client, seller)
    read(client, seller)


@pytest.mark.parametrize("rule", [
    {"kind": "outside_write"},
    {"kind": "reset", "at_delta": 1},
    {"kind": "outside_write", "at_delta": "1"},
    {"kind": "lost_response", "run": True},
    {"kind": "latency", "latency_ms": 5, "run": True},
    {"kind": "reset", "run": "yes"},
    {"kind": "reset", "skip": -1},
])
def test_bad_knobs_are_refused(server, rule):
    answer = control(server, "POST", "/faults", rule)
    assert answer.status_code == 400
    assert answer.json()["error"]
