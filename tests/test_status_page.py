"""The status page's glance, charts and timeline, read from its HTML and inline SVG as
served over real HTTP: series counts, the states the browser tests photograph (all well, a
seller to re-authorize, a breaker open, a client ready to retire), the instance and the
self-refresh, and nothing loaded from outside the page."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
import requests

from shim.app import create_app
from shim.operator.status_page import version
from shim.serving import LocalServer
from shim.store.records import RefreshFailed
from shim.usage import DAY_S, UsageRecorder

STATUS = "/operator/status"
PRODUCT_API = "/rss/product/get"


class Page(HTMLParser):
    """The page's SVG charts (attributes and their series), and any element by id or data
    attribute."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.charts: list[dict] = []
        self.elements: list[tuple[str, dict]] = []
        self.external: list[str] = []
        self._svg: dict | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attrs))
        for name in ("src", "href"):
            if name in attrs:
                self.external.append(attrs[name])
        if tag == "svg":
            self._svg = {**attrs, "series": [], "paths": 0}
            self.charts.append(self._svg)
        elif self._svg is not None and tag == "g" and "series" in attrs.get("class", "").split():
            self._svg["series"].append(attrs)
        elif self._svg is not None and tag == "path" and self._svg["series"]:
            self._svg["paths"] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None

    def chart(self, chart_id: str) -> dict:
        [found] = [chart for chart in self.charts if chart.get("id") == chart_id]
        return found

    def with_class(self, name: str) -> list[dict]:
        return [chart for chart in self.charts if name in chart["class"].split()]

    def find(self, tag: str, **attrs: str) -> list[dict]:
        return [found for t, found in self.elements if t == tag and all(
            found.get(name.replace("_", "-")) == value for name, value in attrs.items())]


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class View:
    """A breaker as the breaker registry's ``snapshot()`` lists it (the shared interface)."""

    api: str
    state: str
    since: float
    retry_after_s: float | None


class Breakers:
    """A breaker registry as the page reads it (``snapshot()``), with chosen views."""

    def __init__(self, views) -> None:
        self.views = views

    def snapshot(self):
        return list(self.views)


@pytest.fixture
def shim(db_settings, db_store, operator_token):
    app = create_app(db_settings, store=db_store, clock=Clock())
    with LocalServer(app) as server, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {operator_token}"

        def page(query: str = "") -> Page:
            answer = session.get(server.base_url + STATUS + query, timeout=10)
            assert answer.status_code == 200, answer.text
            page = Page(answer.text)
            page.headers = answer.headers
            return page

        yield server.base_url, app, page


def call(legacy, counts: dict[str, int]) -> None:
    for client_id, calls in counts.items():
        for i in range(calls):
            # Two routes, so the per-route limit (10/s) never refuses one.
            answer = legacy.get("/v1/pickup-locations" if i % 2 else "/v1/products",
                                client_id=client_id)
            assert answer.status_code == 200, answer.text


def test_all_well_with_one_series_per_client_route_and_api(shim, legacy_client):
    base_url, _app, page = shim
    call(legacy_client(base_url), {"full": 4, "reader": 1})
    shown = page()
    [summary] = shown.find("section", id="summary")
    assert summary["data-state"] == "ok" and shown.find("p", id="all-well")
    usage = shown.chart("usage-chart")
    assert usage["data-series-count"] == "2" and usage["paths"] == 2
    assert [s["data-series"] for s in usage["series"]] == ["full", "reader"]
    assert [s["data-total"] for s in usage["series"]] == ["4", "1"]
    routes = shown.with_class("usage-routes")
    assert [len(chart["series"]) for chart in routes] == [2, 1]  # full: 2 routes; reader: 1
    assert {s["data-series"] for s in routes[0]["series"]} == {
        "GET /v1/products", "GET /v1/pickup-locations"}
    rows = {row["data-plan-client"]: row["data-state"] for row in shown.find("tr")
            if "data-plan-client" in row}
    assert rows == {"full": "in-use", "reader": "in-use"}
    assert len(shown.with_class("usage-days")) == 2  # a sparkline per client row
    # The platform APIs this worker called, each with its sparkline; no breakers yet.
    apis = {row["data-api"]: row["data-breaker-state"] for row in shown.find("tr")
            if "data-api" in row}
    assert apis == {"/rss/pickupLocations/get": "closed", "/rss/products/get": "closed"}
    sparklines = shown.with_class("api-minutes")
    assert [chart["data-series-count"] for chart in sparklines] == ["1", "1"]
    assert sum(float(chart["series"][0]["data-total"]) for chart in sparklines) == 5
    timeline = shown.chart("token-timeline")
    assert timeline["data-series-count"] == "1"
    assert timeline["series"][0]["data-series"] == "main"
    assert timeline["series"][0]["data-reauth"] == "no"
    assert timeline["series"][0]["data-access"] == "ok"


def test_a_seller_to_reauthorize_needs_attention(shim, db_store):
    _base_url, _app, page = shim
    db_store.update_tokens("main", lambda seller: RefreshFailed("IllegalRefreshToken",
                                                                 reauthorize=True))
    shown = page()
    [summary] = shown.find("section", id="summary")
    assert summary["data-state"] == "attention"
    assert shown.find("li", data_attention="reauth", data_name="main")
    assert shown.find("tr", data_seller="main")[0]["data-reauth"] == "needed"
    assert shown.chart("token-timeline")["series"][0]["data-reauth"] == "needed"


def test_a_client_idle_for_retire_after_days_is_ready_to_retire(shim, db_store):
    _base_url, _app, page = shim
    recorder = UsageRecorder(db_store, clock=lambda: time.time() - 20 * DAY_S)
    recorder.count("reader", "GET /v1/products")
    recorder.flush()
    UsageRecorder(db_store).count("full", "GET /v1/products")
    shown = page()
    rows = {row["data-plan-client"]: row["data-state"] for row in shown.find("tr")
            if "data-plan-client" in row}
    assert rows == {"full": "in-use", "reader": "ready-to-retire"}
    assert [s["data-retire"] for s in shown.find("span") if "data-retire" in s] == ["reader"]
    # Ready to retire is news, not trouble: the glance stays well.
    assert shown.find("section", id="summary")[0]["data-state"] == "ok"


def test_a_breaker_open_shows_on_its_api_and_at_a_glance(make_stack, tmp_path, operator_token):
    stack = make_stack(database=tmp_path / "shim.db", breaker_failures=2, breaker_open_s=60.0,
                       read_retries=0)
    try:
        session = stack.session()
        stack.fault(api=PRODUCT_API, kind="http503", rate=1.0)
        for _ in range(2):  # breaker_failures in a row: the product API's breaker opens
            assert session.get(stack.shim.base_url + "/v1/products/100150",
                               timeout=30).status_code == 503
        answer = requests.get(stack.shim.base_url + STATUS, timeout=10,
                              headers={"Authorization": f"Bearer {operator_token}"})
        assert answer.status_code == 200
        shown = Page(answer.text)
    finally:
        session.close()
        stack.close()
    [row] = [row for row in shown.find("tr") if row.get("data-api") == PRODUCT_API]
    assert row["data-breaker-state"] == "open"
    assert shown.find("section", id="summary")[0]["data-state"] == "attention"
    assert [item["data-name"] for item in shown.find("li", data_attention="breaker")] == [
        PRODUCT_API]


def test_the_worst_breaker_of_an_api_over_its_apps_is_shown(shim):
    _base_url, app, page = shim
    now = time.time()
    # The page reads only services.breakers.snapshot(): here a list with several apps.
    object.__setattr__(app.extensions["shim"], "breakers", Breakers([
        View("/rss/products/get", "closed", now - 900, None),
        View("/rss/products/get", "half_open", now - 5, None),  # the same API, another app
        View("/rss/stock/get", "closed", now - 900, None)]))
    shown = page()
    apis = {row["data-api"]: row["data-breaker-state"] for row in shown.find("tr")
            if "data-api" in row}
    assert apis == {"/rss/products/get": "half_open", "/rss/stock/get": "closed"}
    assert [item["data-name"] for item in shown.find("li", data_attention="breaker")] == [
        "/rss/products/get"]


def test_the_page_names_its_instance_refreshes_itself_and_loads_nothing(shim):
    _base_url, _app, page = shim
    shown = page()
    [instance] = shown.find("p", id="instance")
    assert instance["data-hostname"] == socket.gethostname()
    assert instance["data-pid"] == str(os.getpid())
    assert instance["data-version"] == version() != ""
    assert shown.find("meta", http_equiv="refresh")[0]["content"] == "30"
    assert not page("?refresh=0").find("meta", http_equiv="refresh")
    assert page("?refresh=1").find("meta", http_equiv="refresh")[0]["content"] == "5"
    # No script, no stylesheet or font from anywhere: only the SVG namespace names a URL.
    assert shown.external == []
    assert not shown.find("script")
    csp = shown.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
