"""The sandbox's gateway checks and RSS APIs, over real HTTP on an ephemeral port."""

from __future__ import annotations

import json
import time

import pytest
import requests

from shim.sandbox import SandboxServer
from shim.sandbox.seed import JOB_STATUSES, build_catalog
from shim.sandbox.testing import FakeClock, make_client, make_config, signed_params
from shim.upstream.client import SellerCredentials
from shim.upstream.errors import BusinessError, GatewayError
from shim.upstream.signing import sign

DAY_MS = 86_400_000
LOT_0 = {"productId": 100150, "pickupLocationId": 23789, "stockLotId": "0"}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def config(clock):
    return make_config(("414", "415"), clock=clock)


@pytest.fixture
def server(config):
    with SandboxServer(config) as running:
        yield running


@pytest.fixture
def client(server, config):
    lazada = make_client(server, config)
    yield lazada
    lazada.session.close()


@pytest.fixture
def seller(config):
    return SellerCredentials("414", config.sellers[0].access_token)


@pytest.fixture
def raw(server, config):
    """Send hand-made parameters; return the decoded JSON body."""
    session = requests.Session()

    def send(api_path, values, *, method="GET"):
        url = server.api_url + api_path
        carrier = {"params": values} if method == "GET" else {"data": values}
        response = session.request(method, url, timeout=5, **carrier)
        assert response.status_code == 200
        return response.json()

    yield send
    session.close()


def signed(config, api_path="/rss/product/get", business=None, **options):
    options.setdefault("access_token", config.sellers[0].access_token)
    return signed_params(config, api_path, business or {"storeId": "414", "productId": "100150"},
                         **options)


def refused(body, code):
    """Assert a flat gateway error envelope with ``code``; return its message."""
    assert set(body) == {"type", "code", "message", "request_id"}
    assert body["type"] == "ISV"
    assert body["code"] == code
    return body["message"]


# Gateway checks


def test_a_correctly_signed_raw_call_passes(raw, config):
    body = raw("/rss/product/get", signed(config))
    assert body["code"] == "0"
    assert body["result"]["data"]["rpc"] == 100150


def test_params_may_be_split_between_query_and_multipart_body(server, config):
    values = signed(config, "/rss/stockLot/update",
                    {"storeId": "414", **{k: str(v) for k, v in LOT_0.items()},
                     "stockLotUpdateDTO": '{"quantityAtPickupLocation":"9"}'})
    system = {k: values.pop(k) for k in ("app_key", "timestamp", "sign_method", "sign",
                                        "access_token")}
    files = {name: (None, value) for name, value in values.items()}  # multipart text parts
    response = requests.post(server.api_url + "/rss/stockLot/update", params=system,
                             files=files, timeout=5)
    assert response.json()["result"]["data"]["quantityAtPickupLocation"] == 9


@pytest.mark.parametrize("tamper", ["param", "secret", "lowercase", "empty_signed", "unicode"])
def test_bad_signatures_are_incomplete_signature(raw, config, tamper):
    if tamper == "param":
        values = signed(config)
        values["productId"] = "100151"
    elif tamper == "secret":
        values = signed(config, secret="not-" + config.app_secret)
    elif tamper == "lowercase":
        values = signed(config)
        values["sign"] = values["sign"].lower()
    elif tamper == "unicode":
        values = signed(config)
        values["sign"] = "É" + values["sign"][1:]
    else:
        # Signing an empty value the way the Python SDK would: the platform skips empties.
        values = signed(config)
        values["pickupLocationIds"] = ""
        values["sign"] = signed_with_empty(config, values)
    body = raw("/rss/product/get", values)
    assert refused(body, "IncompleteSignature") == (
        "The request signature does not conform to platform standards")
    assert values["sign"] not in json.dumps(body)


def signed_with_empty(config, values):
    unsigned = {k: v for k, v in values.items() if k != "sign"}
    return sign("/rss/product/get", unsigned, config.app_secret)


def test_an_empty_param_left_out_of_the_signature_is_ignored(raw, config):
    values = signed(config)
    values["pickupLocationIds"] = ""
    assert raw("/rss/product/get", values)["code"] == "0"


@pytest.mark.parametrize("name", ["app_key", "timestamp", "sign_method", "sign", "access_token"])
def test_missing_system_params(raw, config, name):
    values = signed(config)
    del values[name]
    assert refused(raw("/rss/product/get", values), "MissingParameter") == (
        f"Missing required parameter: {name}")


def test_unknown_app_key_and_sign_method(raw, config):
    values = signed(config)
    values["app_key"] = "999"
    assert refused(raw("/rss/product/get", values), "InvalidAppKey")
    values = signed(config)
    values["sign_method"] = "md5"
    assert refused(raw("/rss/product/get", values), "InvalidParameter") == (
        "The specified parameter sign_method is not valid")


@pytest.mark.parametrize(("timestamp", "code"), [
    (lambda now: str(int((now - 7300) * 1000)), "InvalidTimestamp"),
    (lambda now: str(int((now + 7300) * 1000)), "InvalidTimestamp"),
    (lambda now: "yesterday", "InvalidTimestamp"),
    (lambda now: "9" * 400, "InvalidTimestamp"),
    (lambda now: str(int((now - 7000) * 1000)), "0"),
    (lambda now: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "0"),
])
def test_timestamp_window(raw, config, timestamp, code):
    body = raw("/rss/product/get", signed(config, timestamp=timestamp(time.time())))
    assert body["code"] == code


def test_checks_run_in_platform_order(raw, config):
    stale = str(int((time.time() - 9000) * 1000))
    values = signed(config, timestamp=stale, access_token="bogus")
    values["sign"] = "0" * 64
    assert refused(raw("/rss/product/get", values), "InvalidTimestamp")
    values = signed(config, access_token="bogus")
    values["sign"] = "0" * 64
    assert refused(raw("/rss/product/get", values), "IncompleteSignature")
    values = signed(config, "/rss/product/get", {"storeId": "414"}, access_token="bogus")
    assert refused(raw("/rss/product/get", values), "IllegalAccessToken")


def test_unknown_and_expired_tokens(client, seller, clock):
    stranger = SellerCredentials("414", "50000unknown")
    with pytest.raises(GatewayError) as unknown:
        client.rss("/rss/product/get", stranger, {"productId": 100150})
    assert unknown.value.code == "IllegalAccessToken"
    assert unknown.value.message == "The specified access token is invalid or expired"
    clock.advance(864000 + 1)
    with pytest.raises(GatewayError) as expired:
        client.rss("/rss/product/get", seller, {"productId": 100150})
    assert expired.value.code == "IllegalAccessToken"


def test_unknown_path_is_invalid_api_path(raw, config):
    body = raw("/rss/nothing/get", signed(config, "/rss/nothing/get"))
    assert refused(body, "InvalidApiPath") == "The specified API Path is invalid"
    assert refused(raw("/whatever", {}), "InvalidApiPath")


def test_single_location_api_can_be_switched_off(config):
    config.single_location_api = False
    with SandboxServer(config) as off:
        lazada = make_client(off, config)
        try:
            with pytest.raises(GatewayError) as error:
                lazada.rss("/rss/pickupLocation/get",
                           SellerCredentials("414", config.sellers[0].access_token),
                           {"pickupLocationId": 23789})
        finally:
            lazada.session.close()
    assert error.value.code == "InvalidApiPath"


@pytest.mark.parametrize(("params", "code", "message"), [
    ({}, "MissingParameter", "Missing required parameter: productId"),
    ({"productId": "12ab"}, "InvalidParameter", "The specified parameter productId is not valid"),
    ({"productId": "1" * 20}, "InvalidParameter", "The specified parameter productId is not valid"),
])
def test_business_param_checks(client, seller, params, code, message):
    with pytest.raises(GatewayError) as error:
        client.rss("/rss/product/get", seller, params)
    assert (error.value.code, error.value.message) == (code, message)


def test_another_stores_id_is_a_business_failure(client, config):
    intruder = SellerCredentials("415", config.sellers[0].access_token)  # 414's token
    with pytest.raises(BusinessError) as error:
        client.rss("/rss/product/get", intruder, {"productId": 100150})
    assert error.value.message == "The store is not accessible with this access token"


# RSS APIs: success shapes


def test_success_envelope_shape(raw, config):
    body = raw("/rss/pickupLocations/get",
               signed(config, "/rss/pickupLocations/get",
                      {"storeId": "414", "page": "1", "pageSize": "2"}))
    assert set(body) == {"result", "code", "request_id"}
    assert body["code"] == "0"
    assert int(body["request_id"], 16) >= 0
    result = body["result"]
    assert (result["success"], result["errorMessage"]) == (True, None)
    assert (result["page"], result["pageSize"], result["total"]) == (1, 2, 5)
    assert result["data"][0] == {"id": "23789", "name": "ABC Merchant",
                                 "addressLine1": "1 Main Street", "addressLine2": "#02-15",
                                 "city": "Singapore", "postalCode": "123456",
                                 "country": "Singapore"}


def test_single_resources(client, seller):
    location = client.rss("/rss/pickupLocation/get", seller, {"pickupLocationId": 23790}).data
    assert location["id"] == "23790"
    product = client.rss("/rss/product/get", seller, {"productId": 100150}).data
    assert product == {"rpc": 100150, "productCode": "abc-merch-specific-choc-cereals-code",
                       "title": "Chocolate Cereals", "barcodes": ["111122223333"],
                       "pickupLocations": [{"id": "23789"}], "status": {"type": "Enabled"}}
    lot = {"id": "0", "quantityAtPickupLocation": 10, "quantityScheduledForPickup": 2,
           "quantityAvailableForSale": 8}
    assert client.rss("/rss/stockLot/get", seller, LOT_0).data == lot
    lots = client.rss("/rss/stockLots/get", seller,
                      {"productId": 100150, "pickupLocationId": 23789})
    assert lots.data == [lot]
    assert lots.page is None
    job = client.rss("/rss/pickup-job/get", seller, {"pickupJobId": 123}, method="POST").data
    assert job["scheduledAt"] == 1684135189000
    assert job["items"][0]["shipmentsInfo"][1] == {"qty": 6, "orderId": "49e74qjn1prp1to4"}


@pytest.mark.parametrize(("api", "params", "message"), [
    ("/rss/product/get", {"productId": 1}, "Product not found"),
    ("/rss/pickupLocation/get", {"pickupLocationId": 1}, "Pickup location not found"),
    ("/rss/stockLots/get", {"productId": 100150, "pickupLocationId": 1},
     "Pickup location not found"),
    ("/rss/stockLots/get", {"productId": 1, "pickupLocationId": 23789}, "Product not found"),
    ("/rss/stockLot/get", {**LOT_0, "stockLotId": "1"}, "Stock lot not found"),
    ("/rss/stockLot/get", {**LOT_0, "pickupLocationId": 23793}, "Stock lot not found"),
    ("/rss/stockLot/update", {**LOT_0, "productId": 1,
                              "stockLotUpdateDTO": {"quantityAtPickupLocation": 3}},
     "Product not found"),
    ("/rss/pickup-job/get", {"pickupJobId": 1}, "Pickup job not found"),
])
def test_not_found_is_a_business_failure(raw, config, api, params, message):
    business = {"storeId": "414", **{k: v if isinstance(v, str) else json.dumps(v)
                                     for k, v in params.items()}}
    body = raw(api, signed(config, api, business))
    assert body["code"] == "0"
    assert body["result"] == {"success": False, "errorMessage": message, "data": None}


def test_a_product_not_stocked_at_a_location_has_no_lots(client, seller):
    lots = client.rss("/rss/stockLots/get", seller,
                      {"productId": 100150, "pickupLocationId": 23793})
    assert lots.data == []


# Paging and filters


def test_paging(client, seller):
    second = client.rss("/rss/pickupLocations/get", seller, {"page": 2, "pageSize": 2})
    assert [loc["id"] for loc in second.data] == ["23791", "23792"]
    assert (second.page, second.page_size, second.total) == (2, 2, 5)
    beyond = client.rss("/rss/pickupLocations/get", seller, {"page": 9, "pageSize": 2})
    assert (beyond.data, beyond.total) == ([], 5)
    pages = [client.rss("/rss/products/get", seller, {"page": n, "pageSize": 100})
             for n in (1, 2, 3, 4)]
    rpcs = [p["rpc"] for page in pages for p in page.data]
    assert len(rpcs) == len(set(rpcs)) == pages[0].total == 300
    assert rpcs == sorted(rpcs)
    assert max(rpcs) > 2**32  # int64 values are exercised


@pytest.mark.parametrize(("name", "value"), [
    ("page", 0), ("pageSize", 0), ("pageSize", 101), ("page", "x")])
def test_paging_limits(client, seller, name, value):
    with pytest.raises(GatewayError) as error:
        client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 10, name: value})
    assert error.value.code == "InvalidParameter"
    assert name in error.value.message


def test_products_filter_accepts_json_and_comma_lists(client, seller):
    def at(ids):
        result = client.rss("/rss/products/get", seller,
                            {"page": 1, "pageSize": 100, "pickupLocationIds": ids})
        return result.total, [p["rpc"] for p in result.data]

    total, rpcs = at("[23790,23791]")
    assert 0 < total < 300
    assert at("[23790, 23791]") == at("23790,23791") == (total, rpcs)
    only = client.rss("/rss/products/get", seller,
                      {"page": 1, "pageSize": 100, "pickupLocationIds": [23790]}).data
    assert all({"id": "23790"} in p["pickupLocations"] for p in only)
    with pytest.raises(GatewayError) as error:
        at("[23790,abc]")
    assert error.value.message == "The specified parameter pickupLocationIds is not valid"


def test_pickup_jobs_window_and_statuses(client, seller):
    now = int(time.time() * 1000)
    window = {"from": now - 171 * DAY_MS, "till": now + 15 * DAY_MS}
    everything = client.rss("/rss/pickup-jobs/get", seller, window).data
    assert len(everything) >= 75
    assert {job["status"] for job in everything} == set(JOB_STATUSES)
    times = [job["scheduledAt"] for job in everything]
    assert times == sorted(times)
    assert all(window["from"] <= t <= window["till"] for t in times)
    some = client.rss("/rss/pickup-jobs/get", seller,
                      {**window, "statuses": "pending, arrived"}).data
    assert some
    assert {job["status"] for job in some} == {"pending", "arrived"}
    future = client.rss("/rss/pickup-jobs/get", seller, {"from": now, "till": window["till"]})
    assert all(job["scheduledAt"] >= now for job in future.data)
    doc = client.rss("/rss/pickup-jobs/get", seller,
                     {"from": 1684135189000, "till": 1684135189000}).data
    assert [job["id"] for job in doc] == [123]


@pytest.mark.parametrize(("params", "code", "name"), [
    ({"till": 1}, "MissingParameter", "from"),
    ({"from": 1}, "MissingParameter", "till"),
    ({"from": 1, "till": 2, "statuses": "pending,shipped"}, "InvalidParameter", "statuses"),
    ({"from": 1, "till": 2, "statuses": '"pickedup"'}, "InvalidParameter", "statuses"),
])
def test_pickup_jobs_param_checks(client, seller, params, code, name):
    with pytest.raises(GatewayError) as error:
        client.rss("/rss/pickup-jobs/get", seller, params)
    assert error.value.code == code
    assert name in error.value.message


# Stock lot update


def ledger(server, after=0):
    return requests.get(server.base_url + "/_sandbox/ledger", params={"after": after},
                        timeout=5).json()["entries"]


def test_update_sets_the_quantity_and_is_in_the_ledger(client, seller, server, config):
    updated = client.rss("/rss/stockLot/update", seller,
                         {**LOT_0, "stockLotUpdateDTO": {"quantityAtPickupLocation": 25}},
                         method="POST")
    assert updated.data == {"id": "0", "quantityAtPickupLocation": 25,
                            "quantityScheduledForPickup": 2, "quantityAvailableForSale": 23}
    assert client.rss("/rss/stockLot/get", seller, LOT_0).data == updated.data
    entry = ledger(server)[-2]  # the read above came after
    assert entry["api"] == "/rss/stockLot/update"
    assert (entry["code"], entry["success"], entry["applied"]) == ("0", True, True)
    assert entry["before"]["quantityAtPickupLocation"] == 10
    assert entry["after"]["quantityAtPickupLocation"] == 25
    assert entry["params"]["stockLotUpdateDTO"] == '{"quantityAtPickupLocation":25}'
    text = json.dumps(ledger(server))
    for secret in (config.app_secret, config.sellers[0].access_token, '"sign"', "app_key"):
        assert secret not in text


def test_updates_are_store_scoped(client, seller, config):
    other = SellerCredentials("415", config.sellers[1].access_token)
    client.rss("/rss/stockLot/update", seller,
               {**LOT_0, "stockLotUpdateDTO": {"quantityAtPickupLocation": 50}}, method="POST")
    assert client.rss("/rss/stockLot/get", other, LOT_0).data["quantityAtPickupLocation"] == 10


def test_update_below_scheduled_is_refused(client, seller, server):
    with pytest.raises(BusinessError) as error:
        client.rss("/rss/stockLot/update", seller,
                   {**LOT_0, "stockLotUpdateDTO": {"quantityAtPickupLocation": 1}})
    assert error.value.message == (
        "Quantity at pickup location cannot be lower than quantity scheduled for pickup")
    entry = ledger(server)[-1]
    assert (entry["success"], entry["applied"]) == (False, False)
    assert entry["after"] == entry["before"]
    assert client.rss("/rss/stockLot/get", seller, LOT_0).data["quantityAtPickupLocation"] == 10


def test_update_accepts_a_numeric_string_and_get(client, seller):
    updated = client.rss("/rss/stockLot/update", seller,
                         {**LOT_0, "stockLotUpdateDTO": '{"quantityAtPickupLocation":"2"}'})
    assert updated.data["quantityAvailableForSale"] == 0


@pytest.mark.parametrize("dto", [
    "{not json", "[10]", '{"quantityAtPickupLocation": -1}', '{"quantityAtPickupLocation": 1.5}',
    '{"quantityAtPickupLocation": true}', '{"quantityAtPickupLocation": "ten"}', "{}"])
def test_bad_update_dto_is_invalid(client, seller, dto):
    with pytest.raises(GatewayError) as error:
        client.rss("/rss/stockLot/update", seller, {**LOT_0, "stockLotUpdateDTO": dto},
                   method="POST")
    assert error.value.message == "The specified parameter stockLotUpdateDTO is not valid"


# Seed data


def test_seed_is_deterministic_and_holds_the_doc_examples():
    first, again = build_catalog(7, 1_700_000_000_000), build_catalog(7, 1_700_000_000_000)
    assert first == again
    assert build_catalog(8, 1_700_000_000_000).products != first.products
    assert len(first.locations) == 5
    assert len(first.products) == 300
    assert {p["status"]["type"] for p in first.products} == {"Enabled", "Disabled",
                                                             "Discontinued"}
    assert first.stock[(100150, "23789")] == {"quantityAtPickupLocation": 10,
                                              "quantityScheduledForPickup": 2}
    for product in first.products:
        assert 1 <= len(product["pickupLocations"]) <= 3
        for location in product["pickupLocations"]:
            assert (product["rpc"], location["id"]) in first.stock
    for job in first.jobs:
        assert job["qtyCount"] == sum(item["qty"] for item in job["items"])
        assert job["qtyFulfilledCount"] == sum(i.get("qtyFulfilled", 0) for i in job["items"])
        assert job["category"] in ("Dry", "Fresh", "Frozen")
    optional = ("pickedAt", "amendabilityCutOffDate", "preferredPickupTime")
    assert all(any(name in job for job in first.jobs) for name in optional)
    assert all(any(name not in job for job in first.jobs) for name in optional)
