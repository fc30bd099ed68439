"""Contract tests: every case under fixtures/ replayed through the shim over real HTTP.

Each case is a legacy request, the platform exchanges the shim must make, and the legacy
answer it must give (fixtures/README.md). The shim runs on a real socket and talks to a
replay upstream (shim/record/replay.py) that answers only signed calls matching the case.
The case format itself is ``shim.record.cases``; ``redmart-shim verify`` is a second runner
over the same cases (tests/test_record.py runs it over this corpus too).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from legacy_docs import DOC_JOB, DOC_LOCATION, DOC_PRODUCT, DOC_STOCK_LOT

from shim import legacy
from shim.app import create_app
from shim.record.cases import SYSTEM_PARAMS, case_id, load_case
from shim.record.replay import Exchange, ReplayServer
from shim.record.settings import APP_KEY
from shim.serving import LocalServer
from shim.upstream import GatewayError
from shim.upstream.client import LazadaClient, SellerCredentials

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CASE_FILES = sorted(FIXTURES.glob("*/*/case.json"))

# Route directory -> whether the legacy docs give the route a 404 (its declaration says).
ROUTES = {route.fixtures: route.documents_not_found for route in legacy.ROUTES}
REQUIRED_TAGS = {"success", "validation", "upstream-error", "variance", "docs-example"}
SIGN_LIKE = re.compile(r"\b[0-9A-F]{64}\b")
SECRET_MEMBER = re.compile(r'"(' + "|".join(SYSTEM_PARAMS) + r')"\s*:')

# Cases whose expected answer (true to the legacy reference) the shim does not give yet.
KNOWN_BUGS: dict[str, str] = {}



def _doc_patch(case: dict) -> bool:
    request = case["request"]
    return (request["headers"].get("If-Match") == '"10"'
            and request.get("body") == {"quantityAtPickupLocation": 20}
            and case["expect"]["json"] == {**DOC_STOCK_LOT, "quantityAtPickupLocation": 20,
                                           "quantityAvailableForSale": 18})


# Route -> what its docs-example cases must show.
DOC_EXAMPLES = {
    "pickup-locations-list": lambda case: DOC_LOCATION in case["expect"]["json"]["items"],
    "pickup-locations-get": lambda case: case["expect"]["json"] == DOC_LOCATION,
    "products-list": lambda case: DOC_PRODUCT in case["expect"]["json"]["items"],
    "products-get": lambda case: case["expect"]["json"] == DOC_PRODUCT,
    "stock-lots-list": lambda case: case["expect"]["json"] == [DOC_STOCK_LOT],
    "stock-lot-get": lambda case: (case["expect"]["json"] == DOC_STOCK_LOT
                                   and case["expect"]["headers"].get("etag") == '"10"'),
    "stock-lot-patch": _doc_patch,
    "pickup-jobs-list": lambda case: DOC_JOB in case["expect"]["json"],
    "pickup-jobs-get": lambda case: case["expect"]["json"] == DOC_JOB,
}


def _cases():
    for path in CASE_FILES:
        marks = ([pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case_id(path)])]
                 if case_id(path) in KNOWN_BUGS else [])
        yield pytest.param(path, id=case_id(path), marks=marks)


@pytest.fixture(scope="module")
def replay(test_secrets):
    with ReplayServer(app_key=APP_KEY, app_secret=test_secrets.app_secret,
                      access_token=test_secrets.access_token) as server:
        yield server


def _fixed_clock(now_ms: int):
    return lambda: now_ms / 1000


def _send(http: requests.Session, base_url: str, request: dict, token: str):
    body = None
    if "body" in request:
        body = json.dumps(request["body"]).encode("utf-8")
    elif "raw_body" in request:
        body = request["raw_body"].encode("utf-8")
    return http.request(request["method"], base_url + request["path"],
                        params=request.get("query") or None, data=body, timeout=15,
                        headers={**request.get("headers", {}), "Authorization": f"Bearer {token}"})


def _body(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:  # shown in the failure instead of a decoding traceback
        return f"<not JSON: {answer.text[:200]!r}>"


@pytest.mark.parametrize("path", list(_cases()))
def test_case(make_settings, path, replay, test_secrets):
    """The shim makes exactly the recorded platform calls and gives the legacy answer."""
    case = load_case(path)
    replay.expect(Exchange.from_case(entry) for entry in case["upstream"])
    settings = make_settings(replay.api_url)
    clock = _fixed_clock(case["now_ms"]) if "now_ms" in case else time.time
    request = case["request"]
    with LocalServer(create_app(settings, clock=clock)) as shim, requests.Session() as http:
        form = {"grant_type": "client_credentials", "client_id": request.get("client", "full"),
                "client_secret": test_secrets.client_secret}
        if "scope" in request:
            form["scope"] = request["scope"]
        issued = http.post(shim.base_url + "/oauth2/token", timeout=10, data=form)
        assert issued.status_code == 200, issued.text
        answer = _send(http, shim.base_url, request, issued.json()["access_token"])
    # Raw names, case-sensitive: clients that parse headers themselves look up "etag".
    headers = dict(answer.raw.headers.items())
    assert not replay.mismatches, json.dumps(replay.mismatches, indent=2)
    assert not replay.remaining, json.dumps(replay.remaining, indent=2)
    expect = case["expect"]
    assert (answer.status_code, _body(answer)) == (expect["status"], expect["json"])
    assert {name: headers.get(name) for name in expect["headers"]} == expect["headers"]


@pytest.mark.parametrize("path", CASE_FILES, ids=case_id)
def test_case_is_well_formed(path):
    """Every case.json follows fixtures/README.md and sits under a known route."""
    load_case(path)
    assert path.parent.parent.name in ROUTES


def test_fixture_tree_holds_only_routes_and_cases():
    """Nothing under fixtures/ escapes the runner: every case directory has its case.json,
    and the route directories are exactly those the routes declare."""
    assert len(ROUTES) == len(legacy.ROUTES)  # one directory per route
    for entry in FIXTURES.iterdir():
        assert entry.name == "README.md" or entry.name in ROUTES, entry
    for route in ROUTES:
        for case_dir in (FIXTURES / route).iterdir():
            assert sorted(p.name for p in case_dir.iterdir()) == ["case.json"], case_dir


def test_every_route_has_each_kind_of_case():
    """Each route has success, validation, upstream-error, variance and docs-example cases,
    plus not-found where the legacy docs give it a 404."""
    found: dict[str, set[str]] = {route: set() for route in ROUTES}
    for path in CASE_FILES:
        found[path.parent.parent.name] |= set(load_case(path)["tags"])
    missing = {route: sorted((REQUIRED_TAGS | ({"not-found"} if has_404 else set()))
                             - found[route])
               for route, has_404 in ROUTES.items()}
    assert {route: gaps for route, gaps in missing.items() if gaps} == {}


@pytest.mark.parametrize("route", list(DOC_EXAMPLES))
def test_docs_examples_are_verbatim(route):
    """Every docs-example case carries the legacy docs' example payload unchanged."""
    examples = [load_case(path) for path in CASE_FILES
                if path.parent.parent.name == route
                and "docs-example" in load_case(path)["tags"]]
    assert examples
    assert all(DOC_EXAMPLES[route](case) for case in examples)


def test_fixtures_hold_no_secrets(test_secrets):
    """No secret, nothing shaped like a sign, and no system parameter is written to fixtures."""
    files = [path for path in FIXTURES.rglob("*") if path.is_file()]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not [value for value in test_secrets.all() if value in text], path
        assert not SIGN_LIKE.search(text), path
        if path.name == "case.json":
            assert not SECRET_MEMBER.search(text), path
            case = load_case(path)
            assert "access_token" not in case["request"].get("query", {}), path
            for exchange in case["upstream"]:
                assert not set(exchange["params"]) & {*SYSTEM_PARAMS, "partner_id"}, path


PRODUCT_CALL = {"api": "/rss/product/get", "method": "GET",
                "params": {"storeId": "414", "productId": "100150"},
                "response": {"json": {"result": {"success": True, "errorMessage": None,
                                                 "data": DOC_PRODUCT},
                                      "code": "0", "request_id": "0b1c"}}}


@pytest.mark.parametrize(("secret", "token", "skew_s", "product", "problem"), [
    ("wrong", None, 0, 100150, "the signature does not verify"),
    (None, "wrong", 0, 100150, "access_token is not the seller's token"),
    (None, None, -7300, 100150, "timestamp is not epoch ms within 7200 s of now"),
    (None, None, 0, 100151, "the call differs from the next expected exchange"),
])
def test_replay_answers_only_signed_matching_calls(replay, test_secrets, secret, token,
                                                   skew_s, product, problem):
    """The replay refuses a bad signature, token, timestamp or call, and says which."""
    replay.expect([Exchange.from_case(PRODUCT_CALL)])
    client = LazadaClient(app_key=APP_KEY, app_secret=secret or test_secrets.app_secret,
                          api_url=replay.api_url, read_retries=0,
                          clock=lambda: time.time() + skew_s)
    seller = SellerCredentials("414", token or test_secrets.access_token)
    with client.session, pytest.raises(GatewayError) as refused:
        client.rss("/rss/product/get", seller, {"productId": product})
    assert refused.value.code == "ReplayMismatch"
    assert [(m["index"], m["problem"]) for m in replay.mismatches] == [(0, problem)]
    assert replay.remaining == [Exchange.from_case(PRODUCT_CALL).expected()]
    assert test_secrets.app_secret not in json.dumps(replay.mismatches)


def test_replay_answers_the_recorded_response(replay, test_secrets):
    """A signed call that matches gets the recorded answer and consumes the exchange."""
    replay.expect([Exchange.from_case(PRODUCT_CALL)])
    client = LazadaClient(app_key=APP_KEY, app_secret=test_secrets.app_secret,
                          api_url=replay.api_url, read_retries=0)
    with client.session:
        result = client.rss("/rss/product/get",
                            SellerCredentials("414", test_secrets.access_token),
                            {"productId": 100150})
    assert (result.data, replay.mismatches, replay.remaining) == (DOC_PRODUCT, [], [])
