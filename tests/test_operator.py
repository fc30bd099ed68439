"""Operator endpoints: the operator credential, seller authorization end to end over real HTTP
(shim <-> sandbox consent page <-> callback), and the status page's figures and escaping."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import replace
from html.parser import HTMLParser
from secrets import token_hex
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests

from shim import authorization, credentials
from shim.app import create_app
from shim.legacy.ratelimit import FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW_S
from shim.record.settings import APP_KEY, OTHER_STORE_ID, STORE_ID
from shim.serving import LocalServer
from shim.store import App, Seller
from shim.store.records import RefreshFailed
from shim.store.sql import dump_rows

REDIS_URL = os.environ.get("SHIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STATUS = "/operator/status"
AUTHORIZE = "/operator/sellers/main/authorize"
CALLBACK = "/operator/callback"


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def token_creations(sandbox) -> list[dict]:
    entries = requests.get(sandbox.base_url + "/_sandbox/ledger", timeout=5).json()["entries"]
    return [entry for entry in entries if entry["api"] == "/auth/token/create"]


def needs_reauth(store, name="main", reason="IllegalRefreshToken"):
    store.update_tokens(name, lambda seller: RefreshFailed(reason, reauthorize=True))
    assert store.get_seller(name).needs_reauth


class StatusPage(HTMLParser):
    """The status page's table rows, keyed by their ``data-seller``/``data-client``: the
    cells' text (whitespace collapsed) and the consent link, if any."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sellers: dict[str, dict] = {}
        self.clients: dict[str, dict] = {}
        self._row: dict | None = None
        self._cell: list[str] | None = None
        self.scripts = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "tr" and ("data-seller" in attrs or "data-client" in attrs):
            self._row = {"cells": [], "link": None}
            table = self.sellers if "data-seller" in attrs else self.clients
            table[attrs.get("data-seller", attrs.get("data-client"))] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "form" and self._row is not None:
            self._row["link"] = attrs.get("action")
            self._row["method"] = attrs.get("method")

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


class LateApp:
    """A WSGI app picked after its socket is bound: its settings need its own address."""

    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


class Clock:
    """Real time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Shim:
    """The shim on a real socket with ``public_url`` set to its own address."""

    def __init__(self, base_url: str, app, clock: Clock, operator_token: str) -> None:
        self.base_url = base_url
        self.app = app
        self.clock = clock
        self.operator = requests.Session()
        self.operator.headers["Authorization"] = f"Bearer {operator_token}"
        self.browser = requests.Session()  # the seller's browser: no operator credential

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.operator.get(self.base_url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.operator.post(self.base_url + path, timeout=10, **kwargs)

    def consent_link(self, name: str = "main") -> str:
        answer = self.post(f"/operator/sellers/{name}/authorize")
        assert answer.status_code == 200, answer.text
        return answer.json()["url"]

    def close(self) -> None:
        self.operator.close()
        self.browser.close()


@pytest.fixture
def shim(db_settings, db_store):
    slot = LateApp()
    with LocalServer(slot) as server:
        clock = Clock()
        slot.app = create_app(replace(db_settings, public_url=server.base_url), store=db_store,
                              clock=clock)
        running = Shim(server.base_url, slot.app, clock, db_settings.operator_token)
        yield running
        running.close()


@pytest.fixture
def bearer(operator_token) -> dict[str, str]:
    """The operator credential as a bearer token."""
    return {"Authorization": f"Bearer {operator_token}"}


@pytest.fixture
def client(db_settings, db_store):
    """The Flask test client on the same database-mode app."""
    return create_app(db_settings, store=db_store).test_client()


# --- the operator credential --------------------------------------------------------------------

@pytest.mark.parametrize("path", [STATUS, AUTHORIZE, AUTHORIZE + "?redirect=1"])
def test_every_operator_endpoint_asks_for_the_credential(operator_token, client, path):
    answer = client.open(path, method="GET" if path == STATUS else "POST")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")  # browsers prompt
    assert answer.headers["Cache-Control"] == "no-store"
    assert operator_token not in answer.get_data(as_text=True)


@pytest.mark.parametrize("headers_for", [
    lambda token: {"Authorization": "Bearer wrong"},
    lambda token: {"Authorization": f"Bearer {token}x"},
    lambda token: {"Authorization": f"Bearer {token[:-1]}"},
    lambda token: {"Authorization": "Bearer"},
    lambda token: {"Authorization": f"Token {token}"},
    lambda token: {"Authorization": token},
    lambda token: basic("operator", "wrong"),
    lambda token: basic(token, ""),  # the token as the user name is not the password
    lambda token: {"Authorization": "Basic !!not-base64!!"},
    lambda token: {"X-Operator-Token": token},
], ids=["wrong", "longer", "shorter", "empty", "other-scheme", "no-scheme", "basic-wrong",
        "basic-as-user", "basic-malformed", "other-header"])
def test_a_wrong_credential_is_refused(operator_token, client, headers_for):
    assert client.get(STATUS, headers=headers_for(operator_token)).status_code == 401


@pytest.mark.parametrize("headers_for", [
    lambda token: {"Authorization": f"Bearer {token}"},
    lambda token: {"Authorization": f"bearer {token}"},
    lambda token: basic("operator", token),
    lambda token: basic("", token),
], ids=["bearer", "bearer-lower", "basic", "basic-no-user"])
def test_the_operator_token_opens_the_page_as_bearer_or_basic_password(operator_token, client,
                                                                        headers_for):
    answer = client.get(STATUS, headers=headers_for(operator_token))
    assert answer.status_code == 200
    assert answer.mimetype == "text/html"


@pytest.mark.parametrize("token", [None, ""])
def test_without_an_operator_token_configured_nothing_opens(bearer, db_settings, db_store, token):
    client = create_app(replace(db_settings, operator_token=token), store=db_store).test_client()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"},
                    basic("", ""), basic("operator", "None"), bearer):
        for path in (STATUS, AUTHORIZE, "/metrics"):
            answer = client.open(path, method="POST" if path == AUTHORIZE else "GET",
                                 headers=headers)
            assert answer.status_code == 401, (headers, path)
            assert "no operator credential is configured" in answer.json["detail"]
            assert "SHIM_OPERATOR_TOKEN" in answer.json["detail"]


def test_failed_operator_credentials_are_throttled_per_address(bearer, db_settings, db_store):
    # A clock held inside one window: the limit counts per calendar minute.
    client = create_app(db_settings, store=db_store,
                        clock=lambda: FAILED_AUTH_WINDOW_S * 30_000_000 + 1.0).test_client()
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    for _ in range(3):  # the right credential and none at all are no failures
        assert client.get(STATUS, headers=bearer).status_code == 200
        assert client.get(STATUS).status_code == 401
    for _ in range(FAILED_AUTH_LIMIT):
        assert client.get(STATUS, headers=wrong).status_code == 401
    # Then every guess is refused without being checked, the right one too, on /metrics too.
    for path, headers in ((STATUS, wrong), (STATUS, bearer), ("/metrics", bearer)):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 429, path
        assert answer.headers["Retry-After"] == str(FAILED_AUTH_WINDOW_S - 1)
        assert answer.json["title"] == "Too Many Requests"
    # Another address is not held back.
    other = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get(STATUS, headers=bearer, environ_base=other).status_code == 200


def test_two_instances_on_one_redis_share_the_operator_throttle(bearer, db_settings, db_store):
    prefix = "shim-test-" + token_hex(4)
    shared = replace(db_settings, rate_limit_storage=REDIS_URL, rate_limit_key_prefix=prefix)
    first, second = (create_app(shared, store=db_store,
                                clock=lambda: FAILED_AUTH_WINDOW_S * 30_000_000 + 1.0)
                     .test_client() for _ in range(2))
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    try:
        half = FAILED_AUTH_LIMIT // 2
        for instance, times in ((first, half), (second, FAILED_AUTH_LIMIT - half)):
            for _ in range(times):
                assert instance.get(STATUS, headers=wrong).status_code == 401
        for instance in (first, second):
            assert instance.get("/metrics", headers=bearer).status_code == 429
    finally:
        connection = redis.Redis.from_url(REDIS_URL)
        for key in connection.scan_iter(f"*{prefix}*"):
            connection.delete(key)
        connection.close()


def test_a_wrong_credential_is_not_told_that_none_is_configured(client):
    answer = client.get(STATUS, headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert answer.status_code == 401
    assert answer.json["detail"] == "the operator credential is required"


def test_a_legacy_clients_credentials_never_open_an_operator_endpoint(
        legacy_client, shim, test_secrets):
    legacy = legacy_client(shim.base_url)
    try:
        bearer = legacy.token("full")
        assert legacy.get("/v1/products").status_code == 200  # a working legacy token
        for headers in ({"Authorization": f"Bearer {bearer}"},
                        basic("full", test_secrets.client_secret)):
            for path in (STATUS, AUTHORIZE):
                answer = legacy.session.request("POST" if path == AUTHORIZE else "GET",
                                                shim.base_url + path, headers=headers,
                                                timeout=10)
                assert answer.status_code == 401, (headers, path)
    finally:
        legacy.close()


# --- the consent link ---------------------------------------------------------------------------

def test_the_consent_link_points_at_the_platform_with_a_state(shim, db_settings):
    before = time.time()
    answer = shim.post(AUTHORIZE)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    url = answer.json()["url"]
    assert url.split("?")[0] == db_settings.authorize_url  # the sandbox's consent page
    query = query_of(url)
    assert query["response_type"] == "code" and query["force_auth"] == "true"
    assert query["client_id"] == APP_KEY
    assert query["redirect_uri"] == shim.base_url + CALLBACK
    assert query["state"] and query["state"] != query_of(shim.consent_link())["state"]
    assert int(before) + authorization.STATE_TTL_S <= answer.json()["expiresAt"] \
        <= time.time() + authorization.STATE_TTL_S


def test_the_redirect_form_sends_the_browser_to_the_consent_page(shim, db_settings):
    answer = shim.post(AUTHORIZE + "?redirect=1", allow_redirects=False,
                       headers={"Origin": shim.base_url})  # as the status page's button
    assert answer.status_code == 303
    location = answer.headers["Location"]
    assert location.startswith(db_settings.authorize_url + "?")
    assert query_of(location)["redirect_uri"] == shim.base_url + CALLBACK


def test_no_consent_link_for_an_unknown_seller(shim, db_store):
    answer = shim.post("/operator/sellers/ghost/authorize")
    assert answer.status_code == 404
    assert dump_rows(db_store, ["auth_states"]) == ""


def test_a_seller_of_another_app_gets_that_apps_consent_link(shim, db_store):
    db_store.put_app(App("200002", "app2-" + "s" * 16))
    db_store.add_seller(Seller(name="second", store_id=OTHER_STORE_ID, app_key="200002"))
    assert query_of(shim.consent_link("second"))["client_id"] == "200002"
    db_store.add_seller(Seller(name="orphan", store_id="416", app_key="300003"))
    assert shim.post("/operator/sellers/orphan/authorize").status_code == 409


def test_a_get_mints_no_consent_link(shim, db_store):
    answer = shim.get(AUTHORIZE + "?redirect=1", allow_redirects=False)
    assert answer.status_code == 405
    assert dump_rows(db_store, ["auth_states"]) == ""


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},  # a sandboxed frame or a privacy-stripped origin
    {"Sec-Fetch-Site": "cross-site"},  # a browser that left Origin out
    {"Sec-Fetch-Site": "same-site"},
], ids=["other-origin", "null-origin", "cross-site", "same-site"])
def test_a_cross_origin_post_mints_no_consent_link(shim, db_store, headers):
    # The operator's browser holds the credential; another site's form must not use it.
    answer = shim.post(AUTHORIZE + "?redirect=1", allow_redirects=False, headers=headers)
    assert answer.status_code == 403
    assert "Location" not in answer.headers
    assert dump_rows(db_store, ["auth_states"]) == ""
    # The shim's own origin (or a tool that sends none) still mints one.
    own = shim.post(AUTHORIZE + "?redirect=1", allow_redirects=False,
                    headers={"Origin": shim.base_url, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 303
    assert dump_rows(db_store, ["auth_states"]) != ""


def test_the_public_urls_origin_is_the_shims_own_too(db_settings, db_store, bearer):
    client = create_app(replace(db_settings, public_url="https://shim.example/base"),
                        store=db_store).test_client()
    answer = client.post(AUTHORIZE, headers={**bearer, "Origin": "https://shim.example"})
    assert answer.status_code == 200 and answer.json["url"]
    answer = client.post(AUTHORIZE, headers={**bearer, "Origin": "https://other.example"})
    assert answer.status_code == 403


# --- the callback -------------------------------------------------------------------------------

def consent(shim, url: str, store_id: str = STORE_ID) -> requests.Response:
    """The seller consents as store 414 (by default) at the sandbox; the browser follows the
    redirect."""
    return shim.browser.get(url + f"&store_id={store_id}", timeout=10)


def test_authorizing_a_seller_end_to_end(shim, db_store, sandbox):
    needs_reauth(db_store)
    before = db_store.get_seller("main")
    url = shim.consent_link()
    landed = consent(shim, url)
    assert landed.status_code == 200, landed.text
    assert landed.url.startswith(shim.base_url + CALLBACK + "?")
    assert "Authorized" in landed.text and "main" in landed.text
    assert landed.headers["Referrer-Policy"] == "no-referrer"  # the address holds a code
    assert len(token_creations(sandbox)) == 1

    now = time.time()
    after = db_store.get_seller("main")
    assert after.generation == before.generation + 1
    assert not after.needs_reauth and after.reauth_reason is None
    assert after.last_refresh_result == "authorized"
    assert after.access_token != before.access_token
    assert sandbox.state.store_for_access_token(after.access_token) == STORE_ID
    assert after.account == f"seller-{STORE_ID}@sandbox.invalid" and after.country == "sg"
    assert after.user_info and after.user_info[0]["country"] == "sg"
    assert after.access_expires_at == pytest.approx(now + 864000, abs=10)
    assert after.refresh_expires_at == pytest.approx(now + 4320000, abs=10)

    # The same callback again (a reload, or someone who saw the address): refused, no call.
    again = shim.browser.get(landed.url, timeout=10)
    assert again.status_code == 400
    assert "unknown, used or expired" in again.text
    assert len(token_creations(sandbox)) == 1
    assert db_store.get_seller("main") == after


@pytest.mark.parametrize("state", ["", "forged", None], ids=["empty", "forged", "missing"])
def test_a_callback_without_a_valid_state_exchanges_nothing(shim, sandbox, db_store, state):
    before = db_store.get_seller("main")
    code = requests.post(sandbox.base_url + "/_sandbox/codes", json={"store_id": STORE_ID},
                         timeout=5).json()["code"]
    params = {"code": code} if state is None else {"code": code, "state": state}
    answer = shim.browser.get(shim.base_url + CALLBACK, params=params, timeout=10)
    assert answer.status_code == 400
    assert "Authorization failed" in answer.text
    assert token_creations(sandbox) == []
    assert db_store.get_seller("main") == before


def test_an_expired_state_exchanges_nothing(shim, sandbox, db_store):
    url = shim.consent_link()
    shim.clock.offset = authorization.STATE_TTL_S + 1  # the seller took too long
    answer = consent(shim, url)
    assert answer.status_code == 400
    assert "unknown, used or expired" in answer.text
    assert token_creations(sandbox) == []


def test_a_state_is_bound_to_the_seller_it_was_issued_for(shim, sandbox, db_store):
    db_store.add_seller(Seller(name="second", store_id=OTHER_STORE_ID))
    consent(shim, shim.consent_link("second"), OTHER_STORE_ID)
    assert db_store.get_seller("second").access_token
    assert db_store.get_seller("main").last_refresh_result == "imported"  # untouched


def test_a_refused_code_fails_the_page_and_keeps_the_tokens(shim, sandbox, db_store):
    before = db_store.get_seller("main")
    url = shim.consent_link()
    redirect = shim.browser.get(url + f"&store_id={STORE_ID}", allow_redirects=False, timeout=10)
    callback = redirect.headers["Location"]
    # The code is used before the callback arrives (e.g. pasted into the CLI meanwhile).
    assert sandbox.state.redeem_code(query_of(callback)["code"]) is not None
    answer = shim.browser.get(callback, timeout=10)
    assert answer.status_code == 400
    assert "refused the code (InvalidCode)" in answer.text
    assert db_store.get_seller("main") == before


def test_consent_by_another_stores_account_is_refused_and_the_old_grant_serves(
        shim, sandbox, db_store, legacy_client, caplog):
    """The link for "main" (store 414) completed by store 415's account: the new token cannot
    read store 414, so it is not stored; the seller can open the same link again, signed in
    as the right account."""
    before = db_store.get_seller("main")
    url = shim.consent_link()
    wrong = consent(shim, url, OTHER_STORE_ID)
    assert wrong.status_code == 400
    assert "Authorization failed" in wrong.text and "Authorized<" not in wrong.text
    assert f"cannot serve store {STORE_ID}" in wrong.text
    assert f"seller-{OTHER_STORE_ID}@sandbox.invalid" in wrong.text  # who consented
    assert len(token_creations(sandbox)) == 1  # the code was exchanged, then refused
    assert db_store.get_seller("main") == before
    assert any(record.levelname == "ERROR" and "cannot serve store" in record.getMessage()
               for record in caplog.records)
    legacy = legacy_client(shim.base_url)
    try:
        assert legacy.get("/v1/products").status_code == 200  # the old grant still serves
    finally:
        legacy.close()

    right = consent(shim, url)  # the same link, now as store 414's account
    assert right.status_code == 200 and "Authorized" in right.text, right.text
    after = db_store.get_seller("main")
    assert after.generation == before.generation + 1
    assert sandbox.state.store_for_access_token(after.access_token) == STORE_ID


def test_an_outage_during_the_account_check_keeps_the_old_grant(shim, sandbox, db_store):
    before = db_store.get_seller("main")
    url = shim.consent_link()
    requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5,
                  json={"api": authorization.ACCOUNT_CHECK_API, "kind": "http503",
                        "times": 5}).raise_for_status()
    failed = consent(shim, url)
    assert failed.status_code == 503
    assert "could not confirm" in failed.text
    assert db_store.get_seller("main") == before


def test_a_platform_outage_at_the_callback_leaves_the_link_usable(shim, sandbox, db_store):
    """The exchange failed in transport, so the code was not used: the same callback works
    on a reload, and the page says to reload rather than that the code was refused."""
    before = db_store.get_seller("main")
    url = shim.consent_link()
    redirect = shim.browser.get(url + f"&store_id={STORE_ID}", allow_redirects=False, timeout=10)
    callback = redirect.headers["Location"]
    requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5,
                  json={"api": "/auth/token/create", "kind": "http503"}).raise_for_status()
    failed = shim.browser.get(callback, timeout=10)
    assert failed.status_code == 503
    assert "could not be reached" in failed.text and "reload" in failed.text
    assert db_store.get_seller("main") == before
    reloaded = shim.browser.get(callback, timeout=10)
    assert reloaded.status_code == 200, reloaded.text
    assert db_store.get_seller("main").generation == before.generation + 1
    assert shim.browser.get(callback, timeout=10).status_code == 400  # now it is used


def test_declarative_mode_has_no_authorization(bearer, make_settings, operator_token, sandbox):
    settings = make_settings(sandbox.api_url,
                             operator_token=operator_token)
    client = create_app(settings).test_client()
    assert client.post(AUTHORIZE, headers=bearer).status_code == 409
    answer = client.get(CALLBACK, query_string={"state": "x", "code": "y"})
    assert answer.status_code == 400 and "declarative mode" in answer.get_data(as_text=True)
    page = client.get(STATUS, headers=bearer)
    assert page.status_code == 200
    rows = StatusPage(page.get_data(as_text=True))
    assert set(rows.sellers) == {"main", "other"} and rows.sellers["main"]["cells"][1] == STORE_ID
    assert set(rows.clients) == {"full", "reader", "other"}


# --- the status page ----------------------------------------------------------------------------

def test_the_page_shows_each_sellers_token_state(bearer, client, db_store):
    db_store.add_seller(Seller(name="second", store_id=OTHER_STORE_ID))
    needs_reauth(db_store, "second", "IllegalRefreshToken")
    page = client.get(STATUS, headers=bearer)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    rows = StatusPage(page.get_data(as_text=True))
    main, second = rows.sellers["main"], rows.sellers["second"]
    seller = db_store.get_seller("main")
    assert main["cells"][:2] == ["main", STORE_ID]
    expiry = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seller.access_expires_at))
    refresh_expiry = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seller.refresh_expires_at))
    assert main["cells"][2] == expiry
    assert main["cells"][3] == refresh_expiry
    assert main["cells"][4].endswith("imported")
    assert main["cells"][5] == "no" and main["link"] is None
    assert second["cells"][1] == OTHER_STORE_ID
    assert second["cells"][2] == "-"  # never authorized: no tokens at all
    assert second["cells"][4].endswith("failed: IllegalRefreshToken")
    assert second["cells"][5].startswith("needed (IllegalRefreshToken)")
    assert second["link"] == "/operator/sellers/second/authorize?redirect=1"
    assert second["method"] == "post"


def test_a_due_token_is_flagged(bearer, db_settings, db_store):
    client = create_app(replace(db_settings, refresh_margin_s=864000 * 2),
                        store=db_store).test_client()
    rows = StatusPage(client.get(STATUS, headers=bearer).get_data(as_text=True))
    assert rows.sellers["main"]["cells"][2].endswith("(due)")


def test_the_consent_link_on_the_page_leads_to_the_consent_page(shim, db_store, db_settings):
    needs_reauth(db_store)
    rows = StatusPage(shim.get(STATUS).text)
    link = rows.sellers["main"]["link"]
    hop = shim.post(link, allow_redirects=False, headers={"Origin": shim.base_url})
    assert hop.status_code == 303
    assert hop.headers["Location"].startswith(db_settings.authorize_url + "?")
    landed = consent(shim, hop.headers["Location"])
    assert landed.status_code == 200 and "Authorized" in landed.text
    rows = StatusPage(shim.get(STATUS).text)
    assert rows.sellers["main"]["cells"][5] == "no"
    assert rows.sellers["main"]["cells"][4].endswith("authorized")


def test_the_page_counts_each_clients_calls_over_real_http(legacy_client, shim):
    legacy = legacy_client(shim.base_url)
    try:
        for client_id, calls in (("full", 7), ("reader", 3)):
            for _ in range(calls):
                # Spread over routes so the per-route rate limit (10/s) never refuses one.
                answer = legacy.get("/v1/pickup-locations" if _ % 2 else "/v1/products",
                                    client_id=client_id)
                assert answer.status_code == 200, answer.text
    finally:
        legacy.close()
    rows = StatusPage(shim.get(STATUS).text)
    assert rows.clients["full"]["cells"] == ["full", "main", "yes", "7"]
    assert rows.clients["reader"]["cells"] == ["reader", "main", "yes", "3"]
    # Showing the page is no legacy call: it counts nothing.
    rows = StatusPage(shim.get(STATUS).text)
    assert rows.clients["full"]["cells"][3] == "7"


HOSTILE_NAME = '<script>alert("name")</script>'
HOSTILE_REASON = '<img src=x onerror=alert("reason")>'


def test_every_value_on_the_page_is_escaped(shim, db_store):
    db_store.add_seller(Seller(name=HOSTILE_NAME, store_id=OTHER_STORE_ID))
    needs_reauth(db_store, HOSTILE_NAME, HOSTILE_REASON)
    page = shim.get(STATUS)
    assert "<script" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]  # no script may run
    rows = StatusPage(page.text)
    assert rows.scripts == 0
    row = rows.sellers[HOSTILE_NAME]  # the parser unescaped the attribute: it round-trips
    assert row["cells"][0] == HOSTILE_NAME
    assert HOSTILE_REASON in row["cells"][5]
    # Its consent link still names exactly that seller.
    hop = shim.post(row["link"], allow_redirects=False, headers={"Origin": shim.base_url})
    assert hop.status_code == 303
    state = query_of(hop.headers["Location"])["state"]
    assert authorization.seller_for_state(db_store, state, time.time()) == HOSTILE_NAME


def test_no_token_or_secret_is_on_the_page(
        operator_token, shim, db_store, sandbox, test_secrets, db_settings, client_digest):
    needs_reauth(db_store)
    consent(shim, shim.consent_link())  # new tokens from the platform too
    seller = db_store.get_seller("main")
    page = shim.get(STATUS)
    source = page.text + str(page.headers)
    secrets = [*test_secrets.all(), operator_token, db_settings.encryption_key, client_digest,
               seller.access_token, seller.refresh_token]
    for secret in secrets:
        assert secret not in source
    for sealed in dump_rows(db_store, ["sellers"]).split('"'):
        if len(sealed) > 40:  # the sealed token columns
            assert sealed not in source
    assert credentials.token_digest(operator_token) not in source


def test_the_callback_page_escapes_the_seller_name(shim, db_store):
    db_store.add_seller(Seller(name=HOSTILE_NAME, store_id=STORE_ID))
    landed = consent(shim, shim.consent_link(HOSTILE_NAME))
    assert landed.status_code == 200 and "Authorized" in landed.text
    assert "<script" not in landed.text and "&lt;script&gt;" in landed.text
    assert db_store.get_seller(HOSTILE_NAME).last_refresh_result == "authorized"
