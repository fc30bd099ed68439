"""GET /v1/products[/{productId}] over real HTTP: shim on a socket -> signature-checking sandbox."""

from __future__ import annotations

import pytest
import requests
from legacy_docs import DOC_PRODUCT

NOT_FOUND = {"title": "The requested resource could not be found"}
PRODUCT_MEMBERS = ["rpc", "productCode", "title", "barcodes", "status", "pickupLocations"]
SEED_PRODUCTS = 300

# Query values the legacy API refused: not ASCII digits, or outside the bounds.
BAD_NUMBERS = ["abc", "1.5", "\u0663", "+1", " 1", "", "1e2", "0x1", "1 ", "\uff11"]


# Products are read-only, so one sandbox and one shim serve the whole module (a client
# secret check is scrypt: per-test tokens would dominate the run time).


@pytest.fixture(scope="module")
def stack(make_stack):
    # These tests call one route far more often than the legacy 10 per second.
    running = make_stack(rate_limit_per_second=10_000)
    yield running
    running.close()


@pytest.fixture(scope="module")
def sandbox(stack):
    return stack.sandbox


@pytest.fixture(scope="module")
def legacy(stack):
    return stack.legacy


@pytest.fixture
def sent(stack):
    """Return a function listing the platform calls made since the test began."""
    start = len(stack.ledger())
    return lambda: stack.ledger(after=start)


@pytest.fixture
def variance(sandbox):
    """Switch the sandbox's type-variance mode on for one test."""
    def switch(enabled: bool) -> None:
        requests.post(sandbox.base_url + "/_sandbox/variance", json={"enabled": enabled},
                      timeout=5).raise_for_status()

    yield switch
    switch(False)


def bad_request(answer) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["title"] == "Bad Request"


# The page envelope


def test_list_defaults_to_page_1_of_50_with_total(legacy, sent):
    answer = legacy.get("/v1/products")
    assert answer.status_code == 200
    page = answer.json()
    assert list(page) == ["page", "pageSize", "items", "total"]
    assert (page["page"], page["pageSize"], page["total"]) == (1, 50, SEED_PRODUCTS)
    assert len(page["items"]) == 50
    assert all(list(item) == PRODUCT_MEMBERS for item in page["items"])
    [call] = sent()
    assert call["api"] == "/rss/products/get"
    assert call["params"] == {"storeId": "414", "page": "1", "pageSize": "50"}


def test_member_types_are_the_legacy_ones(legacy):
    items = legacy.get("/v1/products?pageSize=100&page=3").json()["items"]
    assert any(item["rpc"] > 2**32 for item in items)  # int64 RPCs stay JSON numbers
    for item in items:
        assert type(item["rpc"]) is int
        assert isinstance(item["productCode"], str) and isinstance(item["title"], str)
        assert all(isinstance(code, str) for code in item["barcodes"])
        assert item["status"]["type"] in ("Enabled", "Disabled", "Discontinued")
        assert all(isinstance(ref["id"], str) for ref in item["pickupLocations"])


@pytest.mark.parametrize(("query", "page", "size", "count"), [
    ("page=2&pageSize=100", 2, 100, 100),
    ("pageSize=1", 1, 1, 1),
    ("page=3&pageSize=100", 3, 100, 100),
    ("page=4&pageSize=100", 4, 100, 0),
    ("page=0002&pageSize=07", 2, 7, 7),
])
def test_paging_within_bounds(legacy, query, page, size, count):
    body = legacy.get("/v1/products?" + query).json()
    assert (body["page"], body["pageSize"], len(body["items"])) == (page, size, count)
    assert body["total"] == SEED_PRODUCTS


def test_pages_do_not_overlap(legacy):
    first = legacy.get("/v1/products?page=1&pageSize=3").json()["items"]
    second = legacy.get("/v1/products?page=2&pageSize=3").json()["items"]
    both = legacy.get("/v1/products?page=1&pageSize=6").json()["items"]
    assert first + second == both


@pytest.mark.parametrize("name", ["page", "pageSize"])
@pytest.mark.parametrize("value", [*BAD_NUMBERS, "0", "-1", "99999999999999999999"])
def test_bad_paging_values_are_400_and_never_sent(legacy, sent, name, value):
    bad_request(legacy.get("/v1/products", params={name: value}))
    assert sent() == []


@pytest.mark.parametrize("value", ["101", "1000", "2147483648"])
def test_page_size_above_100_is_400(legacy, sent, value):
    bad_request(legacy.get("/v1/products", params={"pageSize": value}))
    assert sent() == []


@pytest.mark.parametrize("query", ["page=1&page=2", "pageSize=5&pageSize=5",
                                   "pickupLocations=23789&pickupLocations=23790"])
def test_a_repeated_parameter_is_400(legacy, sent, query):
    answer = legacy.get("/v1/products?" + query)
    bad_request(answer)
    assert "more than once" in answer.json()["detail"]
    assert sent() == []


def test_unknown_parameters_are_ignored_even_repeated(legacy):
    answer = legacy.get("/v1/products?sort=title&sort=rpc&pageSize=2")
    assert answer.status_code == 200
    assert answer.json()["pageSize"] == 2


# The pickup-location filter


@pytest.mark.parametrize("name", ["pickupLocations", "pickupLocationIds"])
def test_filter_by_one_location_under_either_name(legacy, sent, name):
    body = legacy.get(f"/v1/products?{name}=23790&pageSize=100").json()
    assert 0 < body["total"] < SEED_PRODUCTS
    assert body["items"]
    assert all({"id": "23790"} in item["pickupLocations"] for item in body["items"])
    assert sent()[-1]["params"]["pickupLocationIds"] == "[23790]"


def test_filter_by_several_locations(legacy, sent):
    body = legacy.get("/v1/products?pickupLocationIds=23789,23790&pageSize=100").json()
    wanted = {"23789", "23790"}
    assert all(wanted & {ref["id"] for ref in item["pickupLocations"]}
               for item in body["items"])
    only_first = legacy.get("/v1/products?pickupLocations=23789").json()["total"]
    assert only_first < body["total"] < SEED_PRODUCTS
    assert sent()[0]["params"]["pickupLocationIds"] == "[23789,23790]"


def test_both_filter_names_together_are_merged(legacy, sent):
    body = legacy.get("/v1/products?pickupLocations=23789&pickupLocationIds=23790,23789").json()
    assert sent()[-1]["params"]["pickupLocationIds"] == "[23789,23790]"
    assert body["total"] == legacy.get(
        "/v1/products?pickupLocationIds=23789,23790").json()["total"]


def test_the_doc_curl_example_finds_the_doc_product(legacy):
    items = legacy.get("/v1/products?pickupLocationIds=23789&pageSize=100").json()["items"]
    assert DOC_PRODUCT in items


def test_an_empty_filter_is_no_filter(legacy, sent):
    assert legacy.get("/v1/products?pickupLocations=").json()["total"] == SEED_PRODUCTS
    assert "pickupLocationIds" not in sent()[-1]["params"]


@pytest.mark.parametrize("value", ["abc", "23789,abc", "23789,,23790", ",23789", "23789,",
                                   "\u0663", "1.5", "-1", "+1", "3limit5", "[23789]",
                                   "99999999999999999999"])
@pytest.mark.parametrize("name", ["pickupLocations", "pickupLocationIds"])
def test_bad_filter_items_are_400(legacy, sent, name, value):
    bad_request(legacy.get("/v1/products", params={name: value}))
    assert sent() == []


# One product


def test_the_docs_example_product_comes_back_verbatim(legacy, sent):
    answer = legacy.get("/v1/products/100150")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == DOC_PRODUCT
    assert list(answer.json()) == PRODUCT_MEMBERS
    assert sent()[0]["params"] == {"storeId": "414", "productId": "100150"}


def test_a_large_rpc_round_trips_as_a_number(legacy):
    items = legacy.get("/v1/products?page=3&pageSize=100").json()["items"]
    large = next(item for item in items if item["rpc"] > 2**32)
    assert legacy.get(f"/v1/products/{large['rpc']}").json() == large


@pytest.mark.parametrize("product_id", [
    "abc", "%D9%A3", "99999999999999999999", "9223372036854775808", "1%26storeId%3D415",
    "100150%00", "100150%0D%0A", "%0D%0A100150", "3limit5", "-1", "+1", "%20100150", "1.0",
    "100150%20", "1e5", "%EF%BC%91",
])
def test_an_rpc_that_is_not_int64_digits_is_400_and_never_sent(legacy, sent, product_id):
    bad_request(legacy.get("/v1/products/" + product_id))
    assert sent() == []


def test_the_largest_int64_reaches_the_platform(legacy, sent):
    answer = legacy.get("/v1/products/9223372036854775807")
    assert answer.status_code == 404
    assert sent()[0]["params"]["productId"] == "9223372036854775807"


@pytest.mark.parametrize("product_id", ["999", "0", "100000"])
def test_an_unknown_product_is_404(legacy, product_id):
    answer = legacy.get("/v1/products/" + product_id)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND


def test_another_store_sees_its_own_catalog(legacy, sent):
    assert legacy.get("/v1/products/100150", client_id="other").json() == DOC_PRODUCT
    assert sent()[0]["params"]["storeId"] == "415"


# Upstream type variance


@pytest.mark.parametrize("path", [
    "/v1/products", "/v1/products?page=3&pageSize=100", "/v1/products?page=9",
    "/v1/products?pickupLocations=23791", "/v1/products/100150", "/v1/products/999",
])
def test_variance_mode_gives_byte_identical_answers(legacy, variance, path):
    normal = legacy.get(path)
    variance(True)
    varied = legacy.get(path)
    assert varied.status_code == normal.status_code
    assert varied.content == normal.content
