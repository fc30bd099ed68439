"""GET /v1/pickup-locations[/{id}] over real HTTP, with and without the single-location API."""

from __future__ import annotations

import pytest
import requests
from legacy_docs import DOC_LOCATION

from shim.legacy import pickup_locations

NOT_FOUND = {"title": "The requested resource could not be found"}
MEMBERS = ["id", "name", "addressLine1", "addressLine2", "city", "postalCode", "country"]
SEED_IDS = ["23789", "23790", "23791", "23792", "23793"]
BAD_NUMBERS = ["abc", "1.5", "\u0663", "+1", " 1", "", "1e2", "0", "-1", "\uff11",
               "99999999999999999999"]
BAD_IDS = ["abc", "%D9%A3", "99999999999999999999", "9223372036854775808", "23789%26x%3D1",
           "23789%00", "23789%0D%0A", "3limit5", "-1", "+1", "%2023789", "23789.0", "1e5"]


def set_variance(sandbox, enabled: bool) -> None:
    requests.post(sandbox.base_url + "/_sandbox/variance", json={"enabled": enabled},
                  timeout=5).raise_for_status()


def calls(stack, after: int = 0) -> list[tuple[str, dict]]:
    """Return (api, params) of every platform call after ``after``."""
    return [(entry["api"], entry["params"]) for entry in stack.ledger(after)]


@pytest.fixture(scope="module")
def stack(make_stack):
    """The read-only routes share one stack: per-test client-secret checks are slow (scrypt)."""
    running = make_stack(rate_limit_per_second=10_000)
    yield running
    running.close()


@pytest.fixture
def legacy(stack):
    return stack.legacy


@pytest.fixture
def sent(stack):
    """Return a function listing the platform calls made since the test began."""
    start = len(calls(stack))
    return lambda: calls(stack, start)


@pytest.fixture
def fallback(make_stack):
    """A fresh stack whose platform lacks /rss/pickupLocation/get (reference 6.9)."""
    running = make_stack(sandbox_knobs={"single_location_api": False},
                         rate_limit_per_second=10_000)
    yield running
    running.close()


# The list


def test_list_defaults_to_page_1_of_50_with_total(legacy, sent):
    answer = legacy.get("/v1/pickup-locations")
    assert answer.status_code == 200
    page = answer.json()
    assert list(page) == ["page", "pageSize", "items", "total"]
    assert (page["page"], page["pageSize"], page["total"]) == (1, 50, len(SEED_IDS))
    assert [item["id"] for item in page["items"]] == SEED_IDS
    assert page["items"][0] == DOC_LOCATION
    for item in page["items"]:
        assert list(item) == MEMBERS
        assert all(isinstance(value, str) for value in item.values())
    assert sent() == [("/rss/pickupLocations/get",
                       {"storeId": "414", "page": "1", "pageSize": "50"})]


@pytest.mark.parametrize(("query", "ids"), [
    ("pageSize=2", SEED_IDS[:2]),
    ("pageSize=2&page=2", SEED_IDS[2:4]),
    ("pageSize=2&page=3", SEED_IDS[4:]),
    ("pageSize=2&page=4", []),
    ("pageSize=100&page=1", SEED_IDS),
    ("page=2147483647", []),
])
def test_paging_within_bounds(legacy, query, ids):
    page = legacy.get("/v1/pickup-locations?" + query).json()
    assert [item["id"] for item in page["items"]] == ids
    assert page["total"] == len(SEED_IDS)


@pytest.mark.parametrize("name", ["page", "pageSize"])
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_bad_paging_values_are_400_and_never_sent(legacy, sent, name, value):
    answer = legacy.get("/v1/pickup-locations", params={name: value})
    assert answer.status_code == 400
    assert answer.json()["title"] == "Bad Request"
    assert sent() == []


@pytest.mark.parametrize("query", ["pageSize=101", "page=2147483648", "page=1&page=1",
                                   "pageSize=2&pageSize=3"])
def test_out_of_bounds_and_repeated_parameters_are_400(legacy, sent, query):
    assert legacy.get("/v1/pickup-locations?" + query).status_code == 400
    assert sent() == []


# One location through /rss/pickupLocation/get


def test_the_docs_example_location_comes_back_verbatim(legacy, sent):
    answer = legacy.get("/v1/pickup-locations/23789")
    assert answer.status_code == 200
    assert answer.json() == DOC_LOCATION
    assert list(answer.json()) == MEMBERS
    assert sent() == [("/rss/pickupLocation/get", {"storeId": "414", "pickupLocationId": "23789"})]


def test_each_location_matches_its_list_entry(legacy):
    listed = legacy.get("/v1/pickup-locations").json()["items"]
    assert [legacy.get(f"/v1/pickup-locations/{item['id']}").json() for item in listed] == listed


@pytest.mark.parametrize("location_id", BAD_IDS)
def test_an_id_that_cannot_exist_is_404_and_never_sent(legacy, sent, location_id):
    answer = legacy.get("/v1/pickup-locations/" + location_id)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND
    assert sent() == []


@pytest.mark.parametrize("location_id", ["999", "0", "9223372036854775807"])
def test_an_absent_location_is_404(legacy, location_id):
    answer = legacy.get("/v1/pickup-locations/" + location_id)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND


# One location by paging /rss/pickupLocations/get


def test_without_the_single_api_the_shim_pages_and_stops_trying_it(ledger, fallback):
    first = fallback.legacy.get("/v1/pickup-locations/23793")
    assert first.status_code == 200
    assert first.json()["id"] == "23793"
    [(missing, _), *scans] = calls(fallback)
    assert missing == "/rss/pickupLocation/get"
    assert ledger(fallback.sandbox)[0]["code"] == "InvalidApiPath"
    assert scans == [("/rss/pickupLocations/get",
                      {"storeId": "414", "page": "1", "pageSize": "100"})]
    seen = len(calls(fallback))
    assert fallback.legacy.get("/v1/pickup-locations/23789").json() == DOC_LOCATION
    absent = fallback.legacy.get("/v1/pickup-locations/999")
    assert (absent.status_code, absent.json()) == (404, NOT_FOUND)
    assert [api for api, _ in calls(fallback, seen)] == ["/rss/pickupLocations/get"] * 2


@pytest.mark.parametrize(("location_id", "pages"), [
    ("23789", ["1"]),
    ("23791", ["1", "2"]),  # only on page 2
    ("23793", ["1", "2", "3"]),
    ("999", ["1", "2", "3"]),  # page 3 holds the last of `total`: no fourth call
])
def test_paging_walks_pages_until_found_or_exhausted(fallback, monkeypatch, location_id, pages):
    monkeypatch.setattr(pickup_locations, "SCAN_PAGE_SIZE", 2)
    answer = fallback.legacy.get("/v1/pickup-locations/" + location_id)
    assert answer.status_code == (404 if location_id == "999" else 200)
    if answer.status_code == 200:
        assert answer.json()["id"] == location_id
    scans = [params for api, params in calls(fallback) if api == "/rss/pickupLocations/get"]
    assert [params["page"] for params in scans] == pages
    assert {params["pageSize"] for params in scans} == {"2"}


def test_a_full_last_page_ends_the_scan_by_total(fallback, monkeypatch):
    monkeypatch.setattr(pickup_locations, "SCAN_PAGE_SIZE", 5)
    assert fallback.legacy.get("/v1/pickup-locations/999").status_code == 404
    scans = [params for api, params in calls(fallback) if api == "/rss/pickupLocations/get"]
    assert [params["page"] for params in scans] == ["1"]


class Platform:
    """A store of ``count`` locations served page by page, as a stand-in for the list API."""

    def __init__(self, count: int, *, cap: int = 100, with_total: bool = True) -> None:
        self.locations = [{"id": str(50_000 + n)} for n in range(count)]
        self.cap, self.with_total = cap, with_total
        self.pages: list[int] = []

    def fetch(self, page: int, page_size: int) -> dict:
        self.pages.append(page)
        size = min(page_size, self.cap)
        data = self.locations[(page - 1) * size:page * size]
        return {"data": data, "page": page, "page_size": size,
                "total": len(self.locations) if self.with_total else None}


@pytest.mark.parametrize(("count", "wanted", "pages"), [
    (250, "50000", [1]),
    (250, "50150", [1, 2]),
    (250, "50249", [1, 2, 3]),
    (250, "1", [1, 2, 3]),
    (200, "1", [1, 2]),
    (0, "1", [1]),
])
def test_scan_over_more_than_100_locations(count, wanted, pages):
    platform = Platform(count)
    found = pickup_locations.scan(wanted, platform.fetch, 100)
    assert (found or {}).get("id") == (wanted if wanted != "1" else None)
    assert platform.pages == pages


def test_scan_when_the_platform_caps_the_page_size():
    # Asked for 100, served 50: a short first page is not the end while the total says more.
    platform = Platform(250, cap=50)
    assert pickup_locations.scan("50220", platform.fetch, 100) == {"id": "50220"}
    assert platform.pages == [1, 2, 3, 4, 5]
    without_total = Platform(250, cap=50, with_total=False)
    assert pickup_locations.scan("50220", without_total.fetch, 100) == {"id": "50220"}


def test_scan_gives_up_after_max_pages():
    class Endless:
        calls = 0

        def fetch(self, page, page_size):
            self.calls += 1
            return {"data": [{"id": "0"}] * page_size, "page": page, "page_size": page_size,
                    "total": None}

    endless = Endless()
    assert pickup_locations.scan("1", endless.fetch, 100) is None
    assert endless.calls == pickup_locations.MAX_SCAN_PAGES


# Upstream type variance


@pytest.mark.parametrize("path", [
    "/v1/pickup-locations", "/v1/pickup-locations?pageSize=2&page=3",
    "/v1/pickup-locations?page=9", "/v1/pickup-locations/23789", "/v1/pickup-locations/999",
])
def test_variance_mode_gives_byte_identical_answers(stack, path):
    normal = stack.legacy.get(path)
    set_variance(stack.sandbox, True)
    try:
        varied = stack.legacy.get(path)
    finally:
        set_variance(stack.sandbox, False)
    assert (varied.status_code, varied.content) == (normal.status_code, normal.content)


@pytest.mark.parametrize("location_id", ["23792", "999"])
def test_variance_mode_while_paging(fallback, monkeypatch, location_id):
    monkeypatch.setattr(pickup_locations, "SCAN_PAGE_SIZE", 2)
    normal = fallback.legacy.get("/v1/pickup-locations/" + location_id)
    set_variance(fallback.sandbox, True)
    varied = fallback.legacy.get("/v1/pickup-locations/" + location_id)
    assert (varied.status_code, varied.content) == (normal.status_code, normal.content)
