"""Seller authorization functions against the sandbox: the consent link and its single-use
state, and the code exchange storing every field of every documented token answer form."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask, Response, request

from shim import authorization, credentials
from shim.record.settings import APP_KEY, OTHER_STORE_ID, STORE_ID
from shim.services import build_client
from shim.serving import LocalServer
from shim.store import open_store
from shim.store.records import RefreshFailed
from shim.store.sql import dump_rows

PUBLIC_URL = "https://shim.example.invalid/"
SANDBOX_SELLER_ID = f"11{int(STORE_ID):08d}"  # the sandbox's seller id for store 414


def link_for(store, settings, seller="main", now=None):
    return authorization.consent_link(
        store, seller=seller, app_key=settings.app_key, authorize_url=settings.authorize_url,
        public_url=PUBLIC_URL, now=time.time() if now is None else now)


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def ledger(sandbox) -> list[dict]:
    answer = requests.get(sandbox.base_url + "/_sandbox/ledger", timeout=5)
    return answer.json()["entries"]


def token_creations(sandbox) -> list[dict]:
    return [entry for entry in ledger(sandbox) if entry["api"] == "/auth/token/create"]


def sandbox_code(sandbox, store_id=STORE_ID) -> str:
    """Consent as the store would, at the sandbox's page; return the code it sends back."""
    consent = requests.get(sandbox.base_url + "/oauth/authorize", allow_redirects=False,
                           timeout=5, params={
                               "response_type": "code", "client_id": APP_KEY,
                               "redirect_uri": PUBLIC_URL + "operator/callback",
                               "store_id": store_id})
    assert consent.status_code == 302, consent.text
    return query_of(consent.headers["Location"])["code"]


class RewritingPlatform:
    """The sandbox behind a real HTTP proxy that rewrites successful ``/auth/token/create``
    answers into another form the platform documents; everything else passes untouched."""

    def __init__(self, sandbox, rewrite) -> None:
        self.sandbox = sandbox
        self.rewrite = rewrite
        self.http = requests.Session()
        app = Flask(__name__)
        app.add_url_rule("/rest/<path:api>", "rest", self._forward, methods=["GET", "POST"])
        self.server = LocalServer(app)
        self.api_url = self.server.base_url + "/rest"

    def _forward(self, api: str) -> Response:
        upstream = self.http.request(request.method, f"{self.sandbox.api_url}/{api}",
                                     params=request.args, data=request.form, timeout=5)
        body = upstream.json()
        if api == "auth/token/create" and body.get("code") == "0":
            body = self.rewrite(body)
        return Response(json.dumps(body), content_type="application/json")

    def __enter__(self) -> RewritingPlatform:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()
        self.http.close()


def exchange(store, settings, code, *, auth_url=None, seller="main", now=None):
    settings = replace(settings, auth_url=auth_url or settings.auth_url)
    with build_client(settings, settings.app_key, settings.app_secret) as upstream:
        return authorization.exchange_code(store, upstream, seller=seller, code=code,
                                           now=time.time() if now is None else now)


# --- the consent link and its state -------------------------------------------------------------

def test_the_consent_link_asks_the_platform_for_a_code_for_this_app(db_settings, db_store):
    link = link_for(db_store, db_settings)
    assert link.url.split("?")[0] == db_settings.authorize_url
    query = query_of(link.url)
    assert query.keys() == {"response_type", "force_auth", "redirect_uri", "client_id", "state"}
    assert query["response_type"] == "code"
    assert query["force_auth"] == "true"
    assert query["client_id"] == APP_KEY
    assert query["redirect_uri"] == "https://shim.example.invalid/operator/callback"
    assert len(query["state"]) >= 40  # 256 random bits


def test_the_state_is_stored_as_a_digest_bound_to_the_seller(db_settings, db_store):
    now = time.time()
    link = link_for(db_store, db_settings, now=now)
    state = query_of(link.url)["state"]
    assert link.expires_at == now + authorization.STATE_TTL_S
    rows = dump_rows(db_store, ["auth_states"])
    assert state not in rows  # a database dump cannot complete an authorization
    assert credentials.token_digest(state) in rows and '"main"' in rows


def test_a_state_is_accepted_once(db_settings, db_store):
    state = query_of(link_for(db_store, db_settings).url)["state"]
    assert authorization.seller_for_state(db_store, state, time.time()) == "main"
    with pytest.raises(authorization.AuthorizationError, match="unknown, used or expired"):
        authorization.seller_for_state(db_store, state, time.time())


def test_a_state_expires_after_its_ttl(db_settings, db_store):
    now = time.time()
    first = query_of(link_for(db_store, db_settings, now=now).url)["state"]
    second = query_of(link_for(db_store, db_settings, now=now).url)["state"]
    assert first != second
    ttl = authorization.STATE_TTL_S
    assert authorization.seller_for_state(db_store, first, now + ttl - 1) == "main"
    with pytest.raises(authorization.AuthorizationError):
        authorization.seller_for_state(db_store, second, now + ttl)


@pytest.mark.parametrize("state", ["", "made-up", "x" * 43])
def test_an_unknown_state_is_refused(db_store, state):
    with pytest.raises(authorization.AuthorizationError, match="unknown, used or expired"):
        authorization.seller_for_state(db_store, state, time.time())


def test_no_link_for_an_unknown_seller(db_settings, db_store):
    with pytest.raises(authorization.AuthorizationError, match="no seller 'ghost'"):
        link_for(db_store, db_settings, seller="ghost")
    assert dump_rows(db_store, ["auth_states"]) == ""


def test_declarative_mode_cannot_authorize(make_settings, sandbox):
    settings = make_settings(sandbox.api_url)
    store = open_store(settings)  # sellers come from the file: nowhere to keep tokens
    with pytest.raises(authorization.AuthorizationError, match="declarative mode"):
        link_for(store, settings)
    with pytest.raises(authorization.AuthorizationError, match="declarative mode"):
        authorization.seller_for_state(store, "anything", time.time())
    with pytest.raises(authorization.AuthorizationError, match="declarative mode"):
        exchange(store, settings, sandbox_code(sandbox))
    assert token_creations(sandbox) == []


# --- the code exchange --------------------------------------------------------------------------

def test_the_exchange_stores_everything_the_token_answer_gives(db_settings, db_store, sandbox):
    before = db_store.get_seller("main")
    now = time.time()
    updated = exchange(db_store, db_settings, sandbox_code(sandbox), now=now)
    assert [entry["method"] for entry in token_creations(sandbox)] == ["POST"]
    stored = db_store.get_seller("main")
    assert stored == updated
    assert stored.access_token not in (None, before.access_token)
    assert stored.refresh_token not in (None, before.refresh_token)
    assert sandbox.state.store_for_access_token(stored.access_token) == STORE_ID
    assert sandbox.state.refresh_token_store(stored.refresh_token) == STORE_ID
    # Both expiries absolute: the answer's lifetimes added to the time of the answer.
    assert stored.access_expires_at == pytest.approx(now + 864000, abs=5)
    assert stored.refresh_expires_at == pytest.approx(now + 4320000, abs=5)
    assert stored.account == f"seller-{STORE_ID}@sandbox.invalid"
    assert stored.country == "sg"
    [user] = stored.user_info
    assert user["seller_id"] == SANDBOX_SELLER_ID and user["country"] == "sg"
    assert stored.generation == before.generation + 1
    assert stored.last_refresh_result == "authorized"
    assert db_store.refresh_log("main")[-1]["result"] == "authorized"


def test_authorizing_clears_a_reauthorization_mark(db_settings, db_store, sandbox):
    db_store.update_tokens("main", lambda seller: RefreshFailed("IllegalRefreshToken",
                                                                reauthorize=True))
    assert db_store.get_seller("main").needs_reauth
    exchange(db_store, db_settings, sandbox_code(sandbox))
    healed = db_store.get_seller("main")
    assert not healed.needs_reauth and healed.reauth_reason is None


def _as_list_key(body):
    body = dict(body)
    body["country_user_info_list"] = body.pop("country_user_info")
    return body


def _as_country_map(body):
    body = dict(body)
    users = body.pop("country_user_info")
    body["country_user_info_list"] = {user.pop("country"): user for user in users}
    return body


def _numbers_as_text(body):
    return {**body, "expires_in": str(body["expires_in"]),
            "refresh_expires_in": str(body["refresh_expires_in"])}


@pytest.mark.parametrize("rewrite", [_as_list_key, _as_country_map, _numbers_as_text],
                         ids=["country_user_info_list", "keyed_by_country", "lifetimes_as_text"])
def test_every_documented_answer_form_loads(db_settings, db_store, sandbox, rewrite):
    with RewritingPlatform(sandbox, rewrite) as platform:
        now = time.time()
        exchange(db_store, db_settings, sandbox_code(sandbox), auth_url=platform.api_url, now=now)
    stored = db_store.get_seller("main")
    assert sandbox.state.store_for_access_token(stored.access_token) == STORE_ID
    assert stored.refresh_expires_at == pytest.approx(now + 4320000, abs=5)
    [user] = stored.user_info
    assert user["seller_id"] == SANDBOX_SELLER_ID and user["country"] == "sg"
    assert stored.account and stored.country == "sg"


def test_a_code_of_another_stores_account_is_refused_and_the_grant_stays(db_settings,
                                                                         db_store, sandbox):
    before = db_store.get_seller("main")
    with pytest.raises(authorization.WrongAccount, match=f"cannot serve store {STORE_ID}"):
        exchange(db_store, db_settings, sandbox_code(sandbox, OTHER_STORE_ID))
    assert db_store.get_seller("main") == before
    checks = [entry for entry in ledger(sandbox)
              if entry["api"] == authorization.ACCOUNT_CHECK_API]
    assert [(entry["store_id"], entry["success"]) for entry in checks] == [
        (OTHER_STORE_ID, False)]  # one read, refused by the platform for store 414
    exchange(db_store, db_settings, sandbox_code(sandbox))  # the right account still works
    assert db_store.get_seller("main").generation == before.generation + 1


def test_a_used_code_is_refused_and_the_tokens_stay(db_settings, db_store, sandbox):
    code = sandbox_code(sandbox)
    first = exchange(db_store, db_settings, code)
    with pytest.raises(authorization.AuthorizationError, match=r"refused the code \(InvalidCode\)"):
        exchange(db_store, db_settings, code)
    assert db_store.get_seller("main") == first


def test_an_unreadable_answer_changes_nothing(db_settings, db_store, sandbox):
    before = db_store.get_seller("main")

    def without_refresh_token(body):
        return {name: value for name, value in body.items() if name != "refresh_token"}

    with RewritingPlatform(sandbox, without_refresh_token) as platform, pytest.raises(
            authorization.AuthorizationError, match="unreadable"):
        exchange(db_store, db_settings, sandbox_code(sandbox), auth_url=platform.api_url)
    assert db_store.get_seller("main") == before


@pytest.mark.parametrize("code", ["", "x" * 513, "line\nbreak"])
def test_a_malformed_code_is_refused_without_a_call(db_settings, db_store, sandbox, code):
    with pytest.raises(authorization.AuthorizationError, match="missing or malformed"):
        exchange(db_store, db_settings, code)
    assert token_creations(sandbox) == []


def test_no_exchange_for_an_unknown_seller(db_settings, db_store, sandbox):
    with pytest.raises(authorization.AuthorizationError, match="no seller 'ghost'"):
        exchange(db_store, db_settings, sandbox_code(sandbox), seller="ghost")
    assert token_creations(sandbox) == []
