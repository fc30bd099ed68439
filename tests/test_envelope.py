"""Envelope parsing over every type variance of the Lazada reference, section 7 (pure)."""

from __future__ import annotations

import pytest

from shim.upstream.envelope import RssResult, check_gateway, decode, parse_rss
from shim.upstream.errors import (
    BusinessError,
    GatewayError,
    MalformedResponse,
    TransportError,
    UpstreamError,
)

API = "/rss/products/get"
RID = "0ba2887315178178017221014"


def envelope(code="0", **result):
    """Return an RSS answer with ``code`` and a ``result`` holding ``result``."""
    answer = {"result": {"data": [{"id": "1"}], **result}, "request_id": RID}
    if code is not None:
        answer["code"] = code
    return answer


# code


@pytest.mark.parametrize("code", ["0", 0, " 0 "], ids=["string", "number", "padded"])
def test_code_zero_in_any_type_is_success(code):
    answer = parse_rss(API, envelope(code, success=True))
    assert answer == RssResult(data=[{"id": "1"}], request_id=RID)


@pytest.mark.parametrize("code", ["15", 15, "IllegalAccessToken"])
def test_non_zero_code_is_a_gateway_error_with_the_code_as_text(code):
    with pytest.raises(GatewayError) as caught:
        parse_rss(API, {"code": code, "message": "refused", "request_id": RID})
    assert caught.value.code == str(code)
    assert caught.value.request_id == RID


def test_gateway_error_flat_shape_carries_type_code_message_and_request_id():
    body = {"type": "ISV", "code": "IllegalAccessToken",
            "message": "The specified access token is invalid or expired", "request_id": RID}
    with pytest.raises(GatewayError) as caught:
        parse_rss(API, body)
    error = caught.value
    assert (error.error_type, error.code, error.message, error.request_id, error.api) == (
        "ISV", "IllegalAccessToken", body["message"], RID, API)
    assert isinstance(error, UpstreamError)
    assert not isinstance(error, TransportError)
    assert str(error) == (f"IllegalAccessToken from {API}: {body['message']} "
                          f"(request_id {RID})")


def test_gateway_error_without_message_or_type_still_raises():
    with pytest.raises(GatewayError) as caught:
        check_gateway(API, {"code": "901"})
    assert (caught.value.code, caught.value.error_type, caught.value.request_id) == (
        "901", None, None)
    assert caught.value.message


def test_no_code_and_no_result_is_malformed():
    with pytest.raises(MalformedResponse) as caught:
        parse_rss(API, {"request_id": RID, "something": "else"})
    assert caught.value.request_id == RID


def test_no_code_but_a_result_is_read():
    assert parse_rss(API, envelope(None, success=True)).data == [{"id": "1"}]


@pytest.mark.parametrize("result", [None, [], "ok", 1], ids=["null", "list", "text", "number"])
def test_code_zero_without_a_result_object_is_malformed(result):
    with pytest.raises(MalformedResponse):
        parse_rss(API, {"code": "0", "result": result, "request_id": RID})


def test_code_zero_with_no_result_at_all_is_malformed():
    with pytest.raises(MalformedResponse):
        parse_rss(API, {"code": "0", "request_id": RID})


def test_token_answers_pass_the_gateway_check():
    """Token answers have no ``result``: code "0" or an access_token is enough."""
    assert check_gateway("/auth/token/create", {"code": "0", "request_id": RID}) == RID
    assert check_gateway("/auth/token/create", {"access_token": "x"}) is None


# result.success and errorMessage


@pytest.mark.parametrize("success", [True, "true", "TRUE", " True "])
def test_success_true_in_any_form(success):
    assert parse_rss(API, envelope(success=success, errorMessage=None)).data == [{"id": "1"}]


@pytest.mark.parametrize("placeholder", ["error message", '"ERROR"', "An unexpected error"])
def test_placeholder_error_message_on_success_is_ignored(placeholder):
    assert parse_rss(API, envelope(success="true", errorMessage=placeholder)).request_id == RID


@pytest.mark.parametrize("success", [False, "false", "FALSE"])
def test_success_false_is_a_business_error_with_the_message(success):
    with pytest.raises(BusinessError) as caught:
        parse_rss(API, envelope(success=success, errorMessage="Product not found"))
    assert (caught.value.message, caught.value.request_id, caught.value.api) == (
        "Product not found", RID, API)
    assert caught.value.code == "BusinessFailure"


@pytest.mark.parametrize("message", [None, ""])
def test_success_false_without_a_message_still_fails(message):
    with pytest.raises(BusinessError) as caught:
        parse_rss(API, envelope(success=False, errorMessage=message))
    assert caught.value.message


def test_missing_success_without_error_message_is_success():
    assert parse_rss(API, envelope()).data == [{"id": "1"}]
    assert parse_rss(API, envelope(errorMessage=None)).data == [{"id": "1"}]


def test_missing_success_with_error_message_is_a_business_error():
    with pytest.raises(BusinessError) as caught:
        parse_rss(API, envelope(errorMessage="Stock lot not found"))
    assert caught.value.message == "Stock lot not found"


@pytest.mark.parametrize("success", ["yes", 1, None])
def test_unreadable_success_falls_back_to_the_error_message(success):
    assert parse_rss(API, envelope(success=success)).data == [{"id": "1"}]
    with pytest.raises(BusinessError):
        parse_rss(API, envelope(success=success, errorMessage="failed"))


def test_paging_figures_pass_through_untouched_for_the_schemas():
    answer = parse_rss(API, envelope(success="true", page="1", pageSize="10", total="15"))
    assert (answer.page, answer.page_size, answer.total) == ("1", "10", "15")


def test_missing_data_is_none():
    assert parse_rss(API, {"code": "0", "result": {"success": True}}).data is None


def test_numeric_request_id_becomes_text():
    assert parse_rss(API, {**envelope(success=True), "request_id": 123}).request_id == "123"


# decode


@pytest.mark.parametrize("body", [
    b"<html><body>punish</body></html>",
    b'{"code": "0", "result": {"da',
    b"",
    b"[1, 2]",
    b'"text"',
    b"null",
    b"\xff\xfe\x00garbage",
    b"[" * 100_000,
], ids=["html", "truncated", "empty", "array", "string", "null", "bad-bytes", "deep"])
def test_decode_refuses_anything_but_a_json_object(body):
    with pytest.raises(MalformedResponse) as caught:
        decode(API, body)
    assert caught.value.api == API
    assert isinstance(caught.value, TransportError)


def test_decode_reads_utf8():
    assert decode(API, '{"name": "Sữa"}'.encode()) == {"name": "Sữa"}
