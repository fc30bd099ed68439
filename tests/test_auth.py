"""The token endpoint, bearer authentication and scopes, as Kong 1.x showed them (real HTTP).

Reference: legacy-partner-api.md sections 1 and 8.
"""

from __future__ import annotations

import base64
import re
import secrets
import time

import pytest
import requests

from shim import credentials, scopes
from shim.app import create_app
from shim.serving import LocalServer
from shim.store import IssuedToken

TOKEN_PATH = "/oauth2/token"
LOCATIONS = "/v1/pickup-locations"
LOT_0 = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Invalid client authentication"}
BAD_GRANT = {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
MISSING = {"error": "invalid_request", "error_description": "The access token is missing"}
INVALID = {"error": "invalid_token",
           "error_description": "The access token is invalid or has expired"}
INVALID_CHALLENGE = ('Bearer realm="service" error="invalid_token" '
                     'error_description="The access token is invalid or has expired"')
RATE_HEADERS = ("x-ratelimit-limit-second", "x-ratelimit-remaining-second")


@pytest.fixture
def http():
    session = requests.Session()
    yield session
    session.close()


@pytest.fixture(scope="module")
def token_server(make_settings):
    """One shim for the tests that never reach the platform (token endpoint, 401s)."""
    settings = make_settings("http://127.0.0.1:9/rest")
    app = create_app(settings)
    with LocalServer(app) as running:
        yield running
    app.extensions["shim"].upstream.session.close()


@pytest.fixture
def serve(make_settings, sandbox):
    """Start a shim with settings overrides and an optional clock; stopped after the test."""
    started = []

    def start(*, clock=time.time, **overrides):
        settings = make_settings(sandbox.api_url, **overrides)
        app = create_app(settings, clock=clock)
        server = LocalServer(app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.app.extensions["shim"].upstream.session.close()


@pytest.fixture
def creds(test_secrets):
    """The client-credentials form of client ``full``."""
    return {"grant_type": "client_credentials", "client_id": "full",
            "client_secret": test_secrets.client_secret}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def post_token(http, server, **kwargs) -> requests.Response:
    return http.post(server.base_url + TOKEN_PATH, timeout=10, **kwargs)


def assert_no_store(response: requests.Response) -> None:
    for name, value in NO_STORE.items():
        assert response.headers.get(name) == value


# Token endpoint: where parameters come from


def test_token_from_form_body(http, token_server, creds):
    """Success is exactly Kong's body, with no refresh token, and is never cached."""
    answer = post_token(http, token_server, data=creds)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 7200
    assert answer.headers["content-type"].startswith("application/json")
    assert_no_store(answer)


def test_token_from_query_string(http, token_server, creds):
    answer = post_token(http, token_server, params=creds)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "bearer"


def test_form_body_overrides_query_string(http, token_server, creds):
    """Kong merged the body over the query: the body's grant type wins."""
    answer = post_token(http, token_server, params={"grant_type": "password"}, data=creds)
    assert answer.status_code == 200, answer.text


def test_token_from_multipart_body(http, token_server, creds):
    answer = post_token(http, token_server, data=creds, files={"note": ("note.txt", b"x")})
    assert answer.request.headers["content-type"].startswith("multipart/form-data")
    assert answer.status_code == 200, answer.text


def test_token_from_json_body(http, token_server, creds):
    """Kong's request body reader took JSON objects as well as forms."""
    answer = post_token(http, token_server, json=creds)
    assert answer.status_code == 200, answer.text


def test_client_from_basic_header(http, token_server, test_secrets):
    answer = post_token(http, token_server, data={"grant_type": "client_credentials"},
                        headers=basic("full", test_secrets.client_secret))
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "bearer"


def test_form_client_wins_over_basic_header(http, token_server, creds):
    """With id and secret in the parameters, a (wrong) Basic header is not looked at."""
    answer = post_token(http, token_server, data=creds, headers=basic("full", "wrong"))
    assert answer.status_code == 200, answer.text


def test_state_is_echoed_on_success_and_error(http, token_server, creds):
    ok = post_token(http, token_server, data={**creds, "state": "xyz 1"})
    assert ok.status_code == 200
    assert ok.json()["state"] == "xyz 1"
    refused = post_token(http, token_server, data={**creds, "client_secret": "no", "state": "s"})
    assert refused.status_code == 400
    assert refused.json() == {**INVALID_CLIENT, "state": "s"}


# Token endpoint: errors


@pytest.mark.parametrize("grant", ["password", "authorization_code", "CLIENT_CREDENTIALS", None])
def test_unsupported_grant_type(http, token_server, creds, grant):
    form = {**creds, "grant_type": grant}
    answer = post_token(http, token_server, data={k: v for k, v in form.items() if v})
    assert answer.status_code == 400
    assert answer.json() == BAD_GRANT
    assert "www-authenticate" not in answer.headers
    assert_no_store(answer)


@pytest.mark.parametrize("change", [
    {"client_secret": "wrong"},
    {"client_id": "nobody"},
    {"client_secret": None},  # Kong then looks for a Basic header; there is none
    {"client_id": None},
])
def test_invalid_client_from_form(http, token_server, creds, change):
    form = {k: v for k, v in {**creds, **change}.items() if v is not None}
    answer = post_token(http, token_server, data=form)
    assert answer.status_code == 400
    assert answer.json() == INVALID_CLIENT
    assert "www-authenticate" not in answer.headers
    assert_no_store(answer)


def test_wrong_secret_in_basic_header_is_401_with_challenge(http, token_server):
    answer = post_token(http, token_server, data={"grant_type": "client_credentials"},
                        headers=basic("full", "wrong"))
    assert answer.status_code == 401
    assert answer.json() == INVALID_CLIENT
    assert answer.headers["www-authenticate"] == 'Basic realm="OAuth2.0"'
    assert_no_store(answer)


@pytest.mark.parametrize("header", [
    "Basic " + base64.b64encode(b"nobody:secret").decode(),  # unknown client
    "Basic " + base64.b64encode(b"full").decode(),  # no colon: Kong found no client
    "Basic %%%not-base64",
    "Basic \u00e9t\u00e9",  # not ASCII: b64decode's ValueError was once a 500
    "Bearer abc",
])
def test_unknown_client_in_header_is_a_plain_400(http, token_server, header):
    """Kong answered an unknown client of this grant with a 400 and no challenge."""
    answer = post_token(http, token_server, data={"grant_type": "client_credentials"},
                        headers={"Authorization": header})
    assert answer.status_code == 400
    assert answer.json() == INVALID_CLIENT
    assert "www-authenticate" not in answer.headers


def test_invalid_client_takes_precedence_over_grant_type(http, token_server, creds):
    """Kong's order: a bad client overrides a bad grant type."""
    wrong_both = post_token(http, token_server,
                            data={**creds, "grant_type": "password", "client_secret": "no"})
    assert (wrong_both.status_code, wrong_both.json()) == (400, INVALID_CLIENT)
    unknown = post_token(http, token_server,
                         data={**creds, "grant_type": "password", "client_id": "nobody"})
    assert (unknown.status_code, unknown.json()) == (400, INVALID_CLIENT)
    by_header = post_token(http, token_server, data={"grant_type": "password"},
                           headers=basic("full", "wrong"))
    assert by_header.status_code == 401
    assert by_header.json() == INVALID_CLIENT
    assert by_header.headers["www-authenticate"] == 'Basic realm="OAuth2.0"'


def test_grant_type_and_client_are_checked_before_scope(http, token_server, creds):
    bad_grant = post_token(http, token_server,
                           data={**creds, "grant_type": "password", "scope": "read:nothing"})
    assert bad_grant.json() == BAD_GRANT
    bad_client = post_token(http, token_server,
                            data={**creds, "client_secret": "no", "scope": "read:nothing"})
    assert bad_client.json() == INVALID_CLIENT


@pytest.mark.parametrize(("client_id", "scope", "named"), [
    ("full", "read:everything", "read:everything"),
    ("full", "read:product admin", "admin"),
    ("reader", "read:product write:stock-lot", "write:stock-lot"),  # not allowed to this client
])
def test_invalid_scope(http, token_server, creds, client_id, scope, named):
    answer = post_token(http, token_server, data={**creds, "client_id": client_id, "scope": scope})
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_scope",
                             "error_description": f'"{named}" is an invalid scope'}
    assert_no_store(answer)


def test_scope_is_mandatory_when_configured(http, serve, creds):
    server = serve(mandatory_scope=True)
    answer = post_token(http, server, data=creds)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_scope",
                             "error_description": "You must specify a scope"}
    assert_no_store(answer)
    assert post_token(http, server, data={**creds, "scope": "read:product"}).status_code == 200
    # Kong refused only an absent scope: a present, empty one was granted a token.
    assert post_token(http, server, data={**creds, "scope": ""}).status_code == 200


def test_omitted_scope_grants_the_clients_allowed_scopes(http, shim_server, creds):
    """Without a scope the reader may read everything, and still not write."""
    token = post_token(http, shim_server, data={**creds, "client_id": "reader"}).json()
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    for path in (LOCATIONS, "/v1/products", "/v1/pickup-jobs/123",
                 "/v1/products/100150/pickup-locations/23789/stock-lots"):
        answer = http.get(shim_server.base_url + path, headers=auth, timeout=10)
        assert answer.status_code == 200, (path, answer.text)
    write = http.patch(shim_server.base_url + LOT_0, json={"quantityAtPickupLocation": 5},
                       headers={**auth, "If-Match": '"10"'}, timeout=10)
    assert write.status_code == 403


# Issued tokens


def test_tokens_have_kongs_form_and_are_distinct(http, token_server, creds):
    """Kong issued exactly 32 ASCII alphanumerics, and clients depend on the length."""
    tokens = [post_token(http, token_server, data=creds).json()["access_token"]
              for _ in range(50)]
    assert len(set(tokens)) == 50
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9]{32}", token)


@pytest.mark.parametrize("old_token", [
    pytest.param(lambda: credentials.new_token(), id="kong-32"),
    pytest.param(lambda: secrets.token_urlsafe(32), id="earlier-shim-43"),
])
def test_a_token_file_read_back_with_the_old_length_works(http, shim_server, creds, tmp_path,
                                                          old_token):
    """The WooCommerce plugin's token cache, step by step as its PHP does it.

    It holds the previous token in a file; ``filesize()`` is taken (and PHP caches it for the
    process) before the new token is written over it; then ``fread($f, filesize($file))``
    reads back that many bytes. The new token must survive being read at the old length.
    """
    token_file = tmp_path / "redmart_token.txt"
    token_file.write_text(old_token())
    cached_size = token_file.stat().st_size
    issued = post_token(http, shim_server, data=creds).json()["access_token"]
    token_file.write_text(issued)
    with token_file.open() as cache:
        read_back = cache.read(cached_size)
    assert read_back == issued
    answer = http.get(shim_server.base_url + LOCATIONS, timeout=10,
                      headers={"Authorization": f"Bearer {read_back}"})
    assert answer.status_code == 200, answer.text


def test_tokens_issued_in_the_earlier_form_stay_valid_until_they_expire(frozen_clock, http, serve):
    """No forced logout on upgrade: a stored 43-character token works until its expiry."""
    clock = frozen_clock(time.time())
    server = serve(clock=clock)
    earlier = secrets.token_urlsafe(32)  # what the shim issued before Kong's form
    server.app.extensions["shim"].store.save_token(
        credentials.token_digest(earlier),
        IssuedToken(client_id="full", scopes=frozenset(scopes.ALL), expires_at=clock() + 600))
    auth = {"Authorization": f"Bearer {earlier}"}
    assert http.get(server.base_url + LOCATIONS, headers=auth, timeout=10).status_code == 200
    clock.advance(601)
    expired = http.get(server.base_url + LOCATIONS, headers=auth, timeout=10)
    assert expired.status_code == 401
    assert expired.json() == INVALID


def test_store_keeps_only_a_digest(http, token_server, creds):
    token = post_token(http, token_server, data=creds).json()["access_token"]
    held = repr(vars(token_server.app.extensions["shim"].store))
    assert credentials.token_digest(token) in held  # the lookup key is there...
    assert token not in held  # ...and the token itself nowhere


def test_tokens_expire_after_the_configured_ttl(frozen_clock, http, serve, creds):
    clock = frozen_clock(time.time())
    server = serve(clock=clock, token_ttl_s=600)
    body = post_token(http, server, data=creds).json()
    assert body["expires_in"] == 600
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    clock.advance(599)
    assert http.get(server.base_url + LOCATIONS, headers=auth, timeout=10).status_code == 200
    clock.advance(2)
    expired = http.get(server.base_url + LOCATIONS, headers=auth, timeout=10)
    assert expired.status_code == 401
    assert expired.json() == INVALID
    assert expired.headers["www-authenticate"] == INVALID_CHALLENGE


# Protected routes: where the token comes from


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "Token", "token"])
def test_token_in_authorization_header(http, shim_server, legacy, scheme):
    answer = http.get(shim_server.base_url + LOCATIONS,
                      headers={"Authorization": f"{scheme} {legacy.token()}"}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_token_in_query_parameter(http, shim_server, legacy):
    answer = http.get(shim_server.base_url + LOCATIONS, params={"access_token": legacy.token()},
                      timeout=10)
    assert answer.status_code == 200, answer.text


def test_token_in_form_body(http, shim_server, legacy):
    """A form body's ``access_token`` authenticates: the view is reached (and refuses a form)."""
    url = shim_server.base_url + LOT_0
    with_token = http.patch(url, data={"access_token": legacy.token(),
                                       "quantityAtPickupLocation": "5"},
                            headers={"If-Match": '"10"'}, timeout=10)
    assert with_token.status_code == 415, with_token.text
    without = http.patch(url, data={"quantityAtPickupLocation": "5"},
                         headers={"If-Match": '"10"'}, timeout=10)
    assert without.status_code == 401


def test_form_token_overrides_query_token(http, shim_server, legacy):
    answer = http.patch(shim_server.base_url + LOT_0, params={"access_token": "stale"},
                        data={"access_token": legacy.token()}, headers={"If-Match": '"10"'},
                        timeout=10)
    assert answer.status_code == 415, answer.text


# Protected routes: 401s


@pytest.mark.parametrize("path", [LOCATIONS, LOT_0])  # unknown paths: the gateway's 404
def test_missing_token(http, token_server, path):
    answer = http.get(token_server.base_url + path, timeout=10)
    assert answer.status_code == 401
    assert answer.json() == MISSING
    assert answer.headers["www-authenticate"] == 'Bearer realm="service"'
    assert not any(name in answer.headers for name in RATE_HEADERS)


@pytest.mark.parametrize("request_kwargs", [
    {"headers": {"Authorization": "Bearer not-a-token"}},
    {"headers": {"Authorization": "Token " + "A" * 43}},
    {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}},  # taken whole, as Kong did
    {"headers": {"Authorization": "Bearer"}},
    {"params": {"access_token": "not-a-token"}},
    {"params": {"access_token": ""}},  # present but empty: invalid, not missing
])
def test_invalid_token(http, token_server, request_kwargs):
    answer = http.get(token_server.base_url + LOCATIONS, timeout=10, **request_kwargs)
    assert answer.status_code == 401
    assert answer.json() == INVALID
    assert answer.headers["www-authenticate"] == INVALID_CHALLENGE
    assert not any(name in answer.headers for name in RATE_HEADERS)


def test_header_token_is_used_even_when_query_has_a_good_one(http, shim_server, legacy):
    """Kong read the query only when there was no Authorization header at all."""
    answer = http.get(shim_server.base_url + LOCATIONS, params={"access_token": legacy.token()},
                      headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert answer.status_code == 401
    assert answer.json() == INVALID


# Scopes: the service's 403


def test_reader_cannot_patch_a_stock_lot(legacy):
    answer = legacy.patch(LOT_0, client_id="reader", json={"quantityAtPickupLocation": 5},
                          headers={"If-Match": '"10"'})
    assert answer.status_code == 403
    body = answer.json()
    assert body["title"] == "Forbidden"
    assert set(body) <= {"title", "detail"}
    assert scopes.WRITE_STOCK_LOT in body["detail"]
    assert all(name in answer.headers for name in RATE_HEADERS)  # it passed the gateway


def test_product_scope_does_not_open_pickup_jobs(http, shim_server, legacy):
    token = legacy.token("full", scope=scopes.READ_PRODUCT)
    auth = {"Authorization": f"Bearer {token}"}
    assert http.get(shim_server.base_url + "/v1/products", headers=auth,
                    timeout=10).status_code == 200
    for path in ("/v1/pickup-jobs/123", "/v1/pickup-jobs"):
        answer = http.get(shim_server.base_url + path, headers=auth, timeout=10)
        assert answer.status_code == 403, path
        assert answer.json()["title"] == "Forbidden"
