"""Known-answer tests for Lazada's request signature (Lazada reference, section 2.1)."""

from __future__ import annotations

import pytest

from shim.upstream.signing import SIGN_METHOD, sign, string_to_sign, verify

# The reference's made-up credentials: public documentation values, not secrets.
SECRET = "shim-test-secret-0123456789abcdef"
SYSTEM = {"app_key": "100001", "timestamp": "1700000000000", "sign_method": "sha256"}
TOKEN = {"access_token": "50000000000testAccessToken"}

RSS_VECTORS = [
    ("/rss/products/get",
     {"storeId": "414", "page": "1", "pageSize": "10", "pickupLocationIds": "[1837,1838]"},
     "391437A17BDABE1C5D61BA349642532B50FECFC9CFA1F6B42144C57333CE02CC"),
    ("/rss/stockLot/get",
     {"storeId": "414", "pickupLocationId": "1837", "productId": "1026158", "stockLotId": "0"},
     "8545AE938A8B511830DE41BF339D9498BACECCA7916D34DB60F2E9B790D46A76"),
    ("/rss/stockLot/update",
     {"storeId": "414", "pickupLocationId": "1837", "productId": "1000152", "stockLotId": "0",
      "stockLotUpdateDTO": '{"quantityAtPickupLocation":10}'},
     "2DD4AF25DE65B340DFDF75E57B536C8532B5D239F35C984A1DD97766177BE5F7"),
    ("/rss/pickup-jobs/get",
     {"storeId": "414", "from": "1709266007000", "till": "1710216407000",
      "statuses": "pending,pickedup"},
     "573B14C1E3BD38F9065D217E1D7BBB9072F879E016A842E0DB923CF0403A7D86"),
    ("/rss/pickupLocations/get",
     {"storeId": "414", "page": "1", "pageSize": "10",
      "partner_id": "lazop-sdk-python-20181207"},
     "F72513BE8F6DA2EEAA9CB4C3FD76A164FC404200CC8EB46D49B40704438D0F17"),
]
TOKEN_VECTORS = [
    ("/auth/token/create", {"code": "0_100001_testAuthCode"},
     "3686D5079EC746882B1B7B0936343CA1D4B1A5C4F248C907E9AA1DE96A708E18"),
    ("/auth/token/refresh", {"refresh_token": "50001000000testRefreshToken"},
     "4790647FCD6E472C07B573019DD1279DE2A1835B474B217B047F548A135F5329"),
]


def test_official_order_get_vector():
    """The vector from Lazada's HTTP-request-sample page, reproduced exactly."""
    params = {"access_token": "test", "app_key": "123456", "order_id": "1234",
              "sign_method": "sha256", "timestamp": "1517820392000"}
    assert string_to_sign("/order/get", params) == (
        "/order/getaccess_tokentestapp_key123456order_id1234sign_methodsha256"
        "timestamp1517820392000")
    assert sign("/order/get", params, "helloworld") == (
        "4190D32361CFB9581350222F345CB77F3B19F0E31D162316848A2C1FFD5FAB4A")


@pytest.mark.parametrize(("api_path", "business", "expected"), RSS_VECTORS,
                         ids=[row[0] for row in RSS_VECTORS])
def test_rss_vectors(api_path, business, expected):
    assert sign(api_path, {**SYSTEM, **TOKEN, **business}, SECRET) == expected


@pytest.mark.parametrize(("api_path", "business", "expected"), TOKEN_VECTORS,
                         ids=[row[0] for row in TOKEN_VECTORS])
def test_token_vectors_sign_without_an_access_token(api_path, business, expected):
    assert sign(api_path, {**SYSTEM, **business}, SECRET) == expected


def test_string_to_sign_of_the_update_row_sorts_case_sensitively_and_keeps_raw_json():
    _, business, _ = RSS_VECTORS[2]
    assert string_to_sign("/rss/stockLot/update", {**SYSTEM, **TOKEN, **business}) == (
        "/rss/stockLot/updateaccess_token50000000000testAccessTokenapp_key100001"
        "pickupLocationId1837productId1000152sign_methodsha256stockLotId0"
        'stockLotUpdateDTO{"quantityAtPickupLocation":10}storeId414timestamp1700000000000')


def test_empty_value_trap_signed_vs_dropped():
    """Signing an empty value and dropping it differ; the shim's rule is to drop it."""
    base = {**SYSTEM, **TOKEN, "storeId": "414"}
    assert sign("/rss/pickup-jobs/get", {**base, "statuses": ""}, SECRET) == (
        "547A14893814A8D72FD572A068F06F7E7C292BB8C84777529F08C023EEFCD16A")
    assert sign("/rss/pickup-jobs/get", base, SECRET) == (
        "06C7D9760F06E78BD470DD9D78A70B36372106BD926FAA954AF72DC41E23EF04")


def test_sign_method_is_sha256():
    assert SIGN_METHOD == "sha256"


def test_sign_covers_utf8_values():
    params = {**SYSTEM, "title": "Sữa tươi"}
    assert sign("/x", params, SECRET) != sign("/x", {**SYSTEM, "title": "Sua tuoi"}, SECRET)
    assert len(sign("/x", params, SECRET)) == 64


# verify


def _signed(api_path="/rss/stockLot/update"):
    _, business, expected = next(row for row in RSS_VECTORS if row[0] == api_path)
    return {**SYSTEM, **TOKEN, **business, "sign": expected}


def test_verify_accepts_the_uppercase_sign():
    assert verify("/rss/stockLot/update", _signed(), SECRET)


def test_verify_ignores_empty_values_like_the_platform():
    assert verify("/rss/stockLot/update", {**_signed(), "statuses": ""}, SECRET)


@pytest.mark.parametrize("tamper", [
    lambda p: p.update(sign=p["sign"].lower()),
    lambda p: p.update(storeId="415"),
    lambda p: p.update(extra="1"),
    lambda p: p.pop("timestamp"),
    lambda p: p.pop("sign"),
    lambda p: p.update(sign=""),
    lambda p: p.update(sign=p["sign"][:-1]),
    lambda p: p.update(sign="É" * 64),  # non-ASCII: refused, not a TypeError
], ids=["lowercase", "changed-value", "added-param", "dropped-param", "no-sign", "empty-sign",
        "short-sign", "non-ascii-sign"])
def test_verify_rejects_tampering(tamper):
    params = _signed()
    tamper(params)
    assert verify("/rss/stockLot/update", params, SECRET) is False


def test_verify_rejects_another_path_or_secret():
    assert not verify("/rss/stockLot/get", _signed(), SECRET)
    assert not verify("/rss/stockLot/update", _signed(), SECRET + "x")
