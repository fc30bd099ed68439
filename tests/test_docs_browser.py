"""``/docs`` in a real headless browser: Swagger UI from the shim's own files, a token got
through its Authorize dialog (the client-credentials flow against ``POST /oauth2/token``),
and "Try it out" showing a product; everything the page loads or calls is the shim's.

The browser, the shim on a socket and the screenshots are fixtures of ``tests/browsing.py``.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from legacy_docs import DOC_PRODUCT

from shim import scopes

TITLE = "RedMart Partner API"


def watch(page) -> tuple[list[str], list[str]]:
    """Collect the page's requests (their URLs) and its console errors (CSP refusals too)."""
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return requests, errors


def test_a_token_through_the_authorize_dialog_then_a_product_through_try_it_out(
        browser, shim_url, test_secrets, session_secrets, screenshot):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        requests, errors = watch(page)
        answer = page.goto(shim_url + "/docs")
        assert answer.status == 200
        page.locator(".swagger-ui .info .title").filter(has_text=TITLE).wait_for()

        page.locator(".scheme-container button.authorize").click()
        dialog = page.locator(".modal-ux")
        oauth2 = dialog.locator(".auth-container").filter(has_text="clientCredentials")
        oauth2.locator("#client_id_clientCredentials").fill("full")
        oauth2.locator("#client_secret_clientCredentials").fill(test_secrets.client_secret)
        oauth2.locator(f"input[data-value='{scopes.READ_PRODUCT}'] + label").click()
        with page.expect_response(shim_url + "/oauth2/token") as issued:
            oauth2.locator("button.authorize").click()
        # The page's starter moves the client from Swagger UI's Basic header to the form.
        token_call = issued.value.request
        assert "authorization" not in token_call.headers
        assert parse_qs(token_call.post_data) == {
            "grant_type": ["client_credentials"], "scope": [scopes.READ_PRODUCT],
            "client_id": ["full"], "client_secret": [test_secrets.client_secret]}
        assert issued.value.status == 200
        session_secrets.add(issued.value.json()["access_token"])  # for the run's secret scans
        oauth2.locator("button.authorize").filter(has_text="Logout").wait_for()
        assert oauth2.get_by_text("Authorized", exact=True).is_visible()
        assert oauth2.locator("#client_id_clientCredentials").count() == 0  # no more input
        oauth2.locator("h4").scroll_into_view_if_needed()
        screenshot(page, "docs-authorized", full_page=False)
        dialog.locator("button.close-modal").click()

        operation = page.locator(".opblock-get").filter(
            has=page.locator("[data-path='/v1/products/{productId}']"))
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("input[placeholder='productId']").fill(str(DOC_PRODUCT["rpc"]))
        with page.expect_response(f"{shim_url}/v1/products/{DOC_PRODUCT['rpc']}") as called:
            operation.locator("button.execute").click()
        assert called.value.status == 200
        assert called.value.request.headers["authorization"].startswith("Bearer ")
        live = operation.locator(".live-responses-table")
        assert live.locator("tbody .response-col_status").first.inner_text().strip() == "200"
        body = live.locator(".response-col_description pre.microlight").first
        assert json.loads(body.inner_text()) == DOC_PRODUCT
        body.scroll_into_view_if_needed()
        screenshot(page, "docs-try-it-out", full_page=False)
    finally:
        context.close()
    assert errors == []
    assert requests and all(url.startswith(shim_url + "/") for url in requests)


def test_a_wrong_secret_is_refused_in_the_dialog(browser, shim_url):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(shim_url + "/docs")
        page.locator(".scheme-container button.authorize").click()
        oauth2 = page.locator(".modal-ux .auth-container").filter(has_text="clientCredentials")
        oauth2.locator("#client_id_clientCredentials").fill("full")
        oauth2.locator("#client_secret_clientCredentials").fill("not-the-secret")
        with page.expect_response(shim_url + "/oauth2/token") as refused:
            oauth2.locator("button.authorize").click()
        # In the form, not a Basic header: Kong's 400, no challenge for the browser to prompt.
        assert refused.value.status == 400
        assert "www-authenticate" not in refused.value.headers
        error = oauth2.locator(".errors")
        error.wait_for()
        assert "invalid_client" in error.inner_text()
        assert error.is_visible()
        assert oauth2.locator("button.authorize").filter(has_text="Logout").count() == 0
    finally:
        context.close()
