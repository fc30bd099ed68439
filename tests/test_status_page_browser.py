"""The operator's status page in a real headless browser (Debian's chromium, driven by
Playwright): the figures as rendered, the consent link followed through the sandbox's consent
page to the callback, the 401 without the credential, escaping; and the states an operator
meets (all well, a seller to re-authorize, a circuit breaker open, a client ready to retire),
each asserted on what the browser shows (the charts as drawn: their series laid out and
painted, not only present in the source) and saved as a screenshot.

The browser, the shim on a socket and the screenshots are fixtures of ``tests/browsing.py``.
"""

from __future__ import annotations

import contextlib
import time

import requests
from playwright.sync_api import Error as PlaywrightError

from shim.record.settings import OTHER_STORE_ID, STORE_ID
from shim.store import Seller
from shim.store.records import RefreshFailed
from shim.usage import DAY_S, UsageRecorder

STATUS = "/operator/status"
PRODUCT_API = "/rss/products/get"


def make_legacy_calls(legacy, counts: dict[str, int]) -> None:
    try:
        for client_id, calls in counts.items():
            for i in range(calls):
                path = "/v1/pickup-locations" if i % 2 else "/v1/products"
                assert legacy.get(path, client_id=client_id).status_code == 200
    finally:
        legacy.close()


def needs_reauth(store, name: str, reason: str = "IllegalRefreshToken") -> None:
    store.update_tokens(name, lambda seller: RefreshFailed(reason, reauthorize=True))


def cells(page, selector: str) -> list[str]:
    return [" ".join(text.split()) for text in page.locator(selector + " td").all_inner_texts()]


@contextlib.contextmanager
def status_page(browser, operator, shim_url):
    """Open the status page as the operator, in a window wide enough for its tables."""
    context = browser.new_context(http_credentials=operator,
                                  viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        assert page.goto(shim_url + STATUS).status == 200
        yield page
    finally:
        context.close()


def visible_texts(locator) -> list[str]:
    """The texts of the elements of ``locator`` that a person sees (laid out, not hidden)."""
    return [" ".join(element.inner_text().split()) for element in locator.all()
            if element.is_visible()]


# A series is seen when it takes room on the page and one of its shapes is painted: laid out,
# not hidden, not transparent, with a stroke or a fill.
SEEN_SERIES = """series => series.filter(group => {
    const box = group.getBoundingClientRect();
    const painted = [...group.querySelectorAll("path, rect, line, polyline, circle")].some(
        shape => {
            const style = getComputedStyle(shape);
            return style.display !== "none" && style.visibility === "visible"
                && Number(style.opacity) > 0 && (style.stroke !== "none" || style.fill !== "none");
        });
    return box.width > 0 && box.height > 0 && painted;
}).map(group => group.dataset.series)"""


def shown_series(chart) -> list[str]:
    """The names of the series of ``chart`` that a person sees, as the browser drew them."""
    return chart.locator("g.series").evaluate_all(SEEN_SERIES)


def assert_chart(chart, series: list[str]) -> None:
    """``chart`` (an ``svg.chart``) is on screen with a real size, and shows ``series``."""
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box["width"] > 100 and box["height"] > 20
    assert chart.get_attribute("data-series-count") == str(len(series))
    assert sorted(shown_series(chart)) == sorted(series)


# --- the states an operator meets, each photographed --------------------------------------

def test_all_well(legacy_client, operator, browser, shim_url, screenshot):
    make_legacy_calls(legacy_client(shim_url), {"full": 4, "reader": 2})
    with status_page(browser, operator, shim_url) as page:
        assert page.locator("#summary").get_attribute("data-state") == "ok"
        assert page.locator("#all-well").is_visible()
        assert visible_texts(page.locator("#sellers td.reauth")) == ["no"]
        assert page.locator("button.consent").count() == 0
        assert cells(page, "#clients tr[data-client='full']")[3] == "4"
        assert cells(page, "#clients tr[data-client='reader']")[3] == "2"
        # One seller on the token timeline; one line per client on the usage chart; one
        # sparkline per platform API called, none of their breakers open.
        assert_chart(page.locator("svg#token-timeline"), ["main"])
        assert page.locator("svg#token-timeline g.series").get_attribute("data-reauth") == "no"
        assert_chart(page.locator("svg#usage-chart"), ["full", "reader"])
        apis = page.locator("#apis tr[data-api]")
        assert sorted(row.get_attribute("data-api") for row in apis.all()) == [
            "/rss/pickupLocations/get", "/rss/products/get"]
        for sparkline in page.locator("#apis svg.sparkline").all():
            assert_chart(sparkline, ["calls"])
        assert not any(state.startswith(("open", "half"))
                       for state in visible_texts(page.locator("#apis td.breaker")))
        screenshot(page, "status-all-well")
        # The check reads the drawing: a series made transparent is no longer counted.
        page.locator("svg#usage-chart g.series[data-series='reader'] path").evaluate(
            "path => { path.style.opacity = '0'; }")
        assert shown_series(page.locator("svg#usage-chart")) == ["full"]


def test_a_seller_to_reauthorize(operator, browser, shim_url, db_store, screenshot):
    needs_reauth(db_store, "main", "IllegalRefreshToken")
    with status_page(browser, operator, shim_url) as page:
        reauth = page.locator("#sellers tr[data-seller='main'] td.reauth")
        assert reauth.locator(".bad").inner_text() == "needed"
        assert reauth.locator(".bad").is_visible()
        assert "IllegalRefreshToken" in reauth.inner_text()
        assert reauth.locator("button.consent").is_visible()
        assert reauth.locator("button.consent").is_enabled()
        assert page.locator("#summary").get_attribute("data-state") == "attention"
        assert page.locator("#summary li[data-attention='reauth'][data-name='main']").is_visible()
        assert page.locator("#all-well").count() == 0
        timeline = page.locator("svg#token-timeline")
        assert_chart(timeline, ["main"])
        assert timeline.locator("g.series").get_attribute("data-reauth") == "needed"
        assert "\N{WARNING SIGN}" in timeline.locator("g.series text").first.text_content()
        screenshot(page, "status-reauthorize")


def test_a_client_ready_to_retire(legacy_client, operator, browser, shim_url, db_store,
                                  screenshot):
    # reader last called 20 days ago (retire_after_days is 14); full calls today.
    then = UsageRecorder(db_store, clock=lambda: time.time() - 20 * DAY_S)
    for route in ("GET /v1/products", "GET /v1/pickup-locations", "GET /v1/products"):
        then.count("reader", route)
    then.flush()
    make_legacy_calls(legacy_client(shim_url), {"full": 3})
    with status_page(browser, operator, shim_url) as page:
        reader = page.locator("#retirement tr[data-plan-client='reader']")
        assert reader.get_attribute("data-state") == "ready-to-retire"
        assert reader.locator("td.status").inner_text() == "ready to retire"
        assert reader.locator("td.status .retire").is_visible()
        full = page.locator("#retirement tr[data-plan-client='full']")
        assert full.locator("td.status").inner_text() == "in use"
        assert visible_texts(page.locator("#retire-summary [data-retire]")) == ["reader"]
        assert page.locator("#summary").get_attribute("data-state") == "ok"  # news, not trouble
        assert_chart(page.locator("svg#usage-chart"), ["full", "reader"])
        assert_chart(reader.locator("svg.sparkline"), ["calls"])
        routes = page.locator("figure.usage-routes[data-client='reader'] svg.chart")
        assert_chart(routes, ["GET /v1/pickup-locations", "GET /v1/products"])
        screenshot(page, "status-ready-to-retire")


def test_a_breaker_open(legacy_client, operator, browser, open_shim, sandbox, screenshot):
    shim_url = open_shim(breaker_failures=2, breaker_open_s=600.0, read_retries=0)
    legacy = legacy_client(shim_url)
    assert legacy.get("/v1/pickup-locations").status_code == 200
    requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5, json={
        "api": PRODUCT_API, "kind": "http503", "rate": 1.0}).raise_for_status()
    answers = [legacy.get("/v1/products") for _ in range(3)]
    assert answers[-1].status_code == 503 and "Retry-After" in answers[-1].headers
    with status_page(browser, operator, shim_url) as page:
        products = page.locator(f"#apis tr[data-api='{PRODUCT_API}']")
        assert products.locator("td.breaker").inner_text().startswith("open since ")
        assert products.locator("td.breaker").is_visible()
        assert page.locator("#apis tr[data-api='/rss/pickupLocations/get'] td.breaker"
                            ).inner_text() == "closed"
        assert page.locator("#summary").get_attribute("data-state") == "attention"
        assert visible_texts(page.locator("#summary li[data-attention='breaker']")) == [
            f"circuit breaker open for {PRODUCT_API}"]
        assert page.locator("#all-well").count() == 0
        for sparkline in page.locator("#apis svg.sparkline").all():
            assert_chart(sparkline, ["calls"])
        screenshot(page, "status-breaker-open")


# --- the re-authorization, through the consent page ----------------------------------------

def test_the_operator_reads_the_page_and_reauthorizes_a_seller(
        legacy_client, operator, browser, shim_url, db_store, sandbox):
    make_legacy_calls(legacy_client(shim_url), {"full": 7, "reader": 3})
    needs_reauth(db_store, "main")
    context = browser.new_context(http_credentials=operator)
    try:
        page = context.new_page()
        answer = page.goto(shim_url + STATUS)
        assert answer.status == 200
        assert page.locator("h1").inner_text() == "redmart-shim status"

        main = cells(page, "#sellers tr[data-seller='main']")
        expiry = db_store.get_seller("main").access_expires_at
        assert main[:3] == ["main", STORE_ID,
                            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expiry))]
        assert main[4].endswith("failed: IllegalRefreshToken")
        assert main[5].startswith("needed (IllegalRefreshToken)")
        assert cells(page, "#clients tr[data-client='full']") == ["full", "main", "yes", "7"]
        assert cells(page, "#clients tr[data-client='reader']") == ["reader", "main", "yes", "3"]

        # The consent button: a POST from the shim's own page, redirected to the platform's
        # consent page.
        page.locator("#sellers tr[data-seller='main'] button.consent").click()
        page.wait_for_url(sandbox.base_url + "/oauth/authorize?**")
        assert page.locator("h1").inner_text() == "Authorize app"
        # The seller picks the store and consents; the platform sends the browser back.
        page.select_option("select[name=store_id]", STORE_ID)
        page.locator("button[type=submit]").click()
        page.wait_for_url(shim_url + "/operator/callback?**")
        assert page.locator("h1").inner_text() == "Authorized"
        assert "main" in page.locator("p").inner_text()

        page.goto(shim_url + STATUS)
        main = cells(page, "#sellers tr[data-seller='main']")
        assert main[5] == "no" and main[4].endswith("authorized")
        assert page.locator("button.consent").count() == 0
    finally:
        context.close()
    seller = db_store.get_seller("main")
    assert not seller.needs_reauth
    assert sandbox.state.store_for_access_token(seller.access_token) == STORE_ID


def test_without_the_credential_the_browser_gets_the_401(browser, shim_url):
    context = browser.new_context()  # no credential: a real browser would prompt here
    try:
        page = context.new_page()
        seen = []
        page.on("response", lambda response: seen.append(response))
        try:
            page.goto(shim_url + STATUS)
        except PlaywrightError as error:  # headless cannot prompt: the navigation is cancelled
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(error)
        [refusal] = [response for response in seen if response.url == shim_url + STATUS]
        assert refusal.status == 401
        assert refusal.headers["www-authenticate"].startswith("Basic ")
        assert page.locator("#sellers").count() == 0
    finally:
        context.close()

    context = browser.new_context(http_credentials={"username": "operator",
                                                    "password": "wrong"})
    try:
        page = context.new_page()
        answer = page.goto(shim_url + STATUS)
        assert answer.status == 401
        assert "Unauthorized" in page.content()
        assert page.locator("#sellers").count() == 0
    finally:
        context.close()


def test_a_bearer_header_opens_the_page_too(operator_token, browser, shim_url):
    context = browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {operator_token}"})
    try:
        page = context.new_page()
        assert page.goto(shim_url + STATUS).status == 200
        assert page.locator("#sellers tr[data-seller='main']").count() == 1
    finally:
        context.close()


def test_hostile_values_render_as_text(operator, browser, shim_url, db_store):
    name = "<script>document.title='pwned-by-name'</script>"
    reason = "<img src=x onerror=\"document.title='pwned-by-reason'\">"
    db_store.add_seller(Seller(name=name, store_id=OTHER_STORE_ID))
    needs_reauth(db_store, name, reason)
    context = browser.new_context(http_credentials=operator)
    try:
        page = context.new_page()
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        assert page.goto(shim_url + STATUS).status == 200
        assert page.title() == "redmart-shim status"
        assert page.evaluate("document.querySelectorAll('script, img').length") == 0
        row = page.locator("#sellers tbody tr").filter(has_text="pwned-by-name")
        texts = [" ".join(text.split()) for text in row.locator("td").all_inner_texts()]
        assert texts[0] == name
        assert reason in texts[5]
        assert dialogs == []
    finally:
        context.close()
