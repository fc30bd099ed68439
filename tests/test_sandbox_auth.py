"""Sandbox seller authorization: consent page, codes, token create and refresh, expiry."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shim.sandbox import SandboxServer
from shim.sandbox.testing import FakeClock, make_client, make_config, signed_params
from shim.upstream.client import SellerCredentials
from shim.upstream.errors import GatewayError

PRODUCT = {"productId": 100150}


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


def control(server, path, body):
    response = requests.post(server.base_url + "/_sandbox" + path, json=body, timeout=5)
    assert response.status_code < 300, response.text
    return response.json()


def new_code(server, store_id="415"):
    return control(server, "/codes", {"store_id": store_id})["code"]


def test_create_token_from_a_code(server, client, config):
    code = new_code(server)
    assert code.startswith(f"0_{config.app_key}_")
    token = client.create_token(code)
    assert (token["code"], token["expires_in"], token["refresh_expires_in"]) == (
        "0", 864000, 4320000)
    assert token["country"] == "sg"
    assert token["account_platform"] == "seller_center"
    assert token["country_user_info"][0]["seller_id"] == config.sellers[1].seller_id
    assert token["access_token"].startswith("50000")
    assert token["refresh_token"].startswith("50001")
    product = client.rss("/rss/product/get", SellerCredentials("415", token["access_token"]),
                         PRODUCT)
    assert product.data["rpc"] == 100150


@pytest.mark.parametrize(("spoil", "code", "message"), [
    ("reuse", "InvalidCode", "The specified authorization code is invalid, used or expired"),
    ("age", "InvalidCode", "The specified authorization code is invalid, used or expired"),
    ("unknown", "InvalidCode", "The specified authorization code is invalid, used or expired"),
    ("empty", "MissingParameter", "Missing required parameter: code"),
])
def test_bad_codes(server, client, clock, spoil, code, message):
    issued = new_code(server)
    if spoil == "reuse":
        client.create_token(issued)
    elif spoil == "age":
        clock.advance(30 * 60 + 1)
    elif spoil == "unknown":
        issued = issued + "x"
    else:
        issued = ""
    with pytest.raises(GatewayError) as error:
        client.create_token(issued)
    assert (error.value.code, error.value.message) == (code, message)
    assert error.value.error_type == "ISV"


def test_refresh_rotates_both_tokens_and_keeps_the_refresh_expiry(client, config, clock):
    old = config.sellers[0]
    clock.advance(1000)
    fresh = client.refresh_token(old.refresh_token)
    assert fresh["country_user_info_list"][0]["seller_id"] == old.seller_id
    assert "country_user_info" not in fresh
    assert fresh["expires_in"] == 864000
    assert fresh["refresh_expires_in"] == 4320000 - 1000  # never extended
    assert fresh["access_token"] != old.access_token
    assert fresh["refresh_token"] != old.refresh_token
    for token in (fresh["access_token"], old.access_token):  # the old one lives until expiry
        client.rss("/rss/product/get", SellerCredentials("414", token), PRODUCT)
    with pytest.raises(GatewayError) as reused:
        client.refresh_token(old.refresh_token)
    assert reused.value.code == "IllegalRefreshToken"
    assert reused.value.message == "The specified refresh token is invalid or expired"
    again = client.refresh_token(fresh["refresh_token"])
    assert again["refresh_expires_in"] == 4320000 - 1000


def test_an_expired_refresh_token_is_illegal(client, config, clock):
    clock.advance(4320000 + 1)
    with pytest.raises(GatewayError) as error:
        client.refresh_token(config.sellers[0].refresh_token)
    assert error.value.code == "IllegalRefreshToken"


def test_token_calls_work_over_get_and_need_no_access_token(server, config):
    values = signed_params(config, "/auth/token/refresh",
                           {"refresh_token": config.sellers[0].refresh_token})
    body = requests.get(server.auth_url + "/auth/token/refresh", params=values, timeout=5).json()
    assert body["code"] == "0"
    ledger = requests.get(server.base_url + "/_sandbox/ledger", timeout=5).json()["entries"]
    assert ledger[-1]["store_id"] == "414"
    assert ledger[-1]["params"] == {}  # the refresh token is a secret: never kept


def test_expire_control_forces_a_refresh(server, client, config):
    seller = SellerCredentials("414", config.sellers[0].access_token)
    assert control(server, "/expire", {"store_id": "414"}) == {"expired": 1}
    with pytest.raises(GatewayError) as error:
        client.rss("/rss/product/get", seller, PRODUCT)
    assert error.value.code == "IllegalAccessToken"
    fresh = client.refresh_token(config.sellers[0].refresh_token)
    client.rss("/rss/product/get", SellerCredentials("414", fresh["access_token"]), PRODUCT)
    control(server, "/expire", {"store_id": "414", "access": False, "refresh": True})
    with pytest.raises(GatewayError) as refresh_error:
        client.refresh_token(fresh["refresh_token"])
    assert refresh_error.value.code == "IllegalRefreshToken"


def test_sellers_can_be_added_at_runtime(server, client):
    answer = control(server, "/sellers", {"store_id": "500", "access_token": "50000new",
                                          "refresh_token": "50001new"})
    assert answer == {"store_id": "500", "seeded": True}
    data = client.rss("/rss/product/get", SellerCredentials("500", "50000new"), PRODUCT).data
    assert data["rpc"] == 100150
    bad = requests.post(server.base_url + "/_sandbox/sellers", json={"store_id": "x1"},
                        timeout=5)
    assert bad.status_code == 400


def test_consent_page_redirects_with_a_code(server, client, config):
    query = {"response_type": "code", "force_auth": "true", "client_id": config.app_key,
             "redirect_uri": "https://shim.example/callback?tenant=a", "state": "xyz"}
    page = requests.get(server.base_url + "/oauth/authorize", params=query, timeout=5)
    assert page.status_code == 200
    assert 'value="414"' in page.text
    assert config.app_secret not in page.text
    answer = requests.get(server.base_url + "/oauth/authorize",
                          params={**query, "store_id": "414"}, allow_redirects=False,
                          timeout=5)
    assert answer.status_code == 302
    target = urlsplit(answer.headers["Location"])
    assert target.netloc == "shim.example"
    sent = parse_qs(target.query)
    assert (sent["tenant"], sent["state"]) == (["a"], ["xyz"])
    token = client.create_token(sent["code"][0])
    assert token["country_user_info"][0]["seller_id"] == config.sellers[0].seller_id


@pytest.mark.parametrize("change", [
    {"client_id": "nope"}, {"response_type": "token"}, {"redirect_uri": "javascript:alert(1)"},
    {"store_id": "999"}])
def test_consent_page_rejects_bad_requests(server, config, change):
    query = {"response_type": "code", "client_id": config.app_key,
             "redirect_uri": "https://shim.example/cb", **change}
    answer = requests.get(server.base_url + "/oauth/authorize", params=query,
                          allow_redirects=False, timeout=5)
    assert answer.status_code == 400
    assert "<script" not in answer.text
