"""Turn a raw Lazada answer into a payload or an ``UpstreamError``.

Two failure levels exist: the gateway's (``code`` other than "0", flat
``type``/``code``/``message``/``request_id``) and the RSS service's (``code`` "0" but
``result.success`` false). Values arrive with varying JSON types (see the Lazada reference,
section 7), so every check here accepts them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shim import jsoncodec
from shim.upstream.errors import BusinessError, GatewayError, MalformedResponse

_TRUE, _FALSE = "true", "false"


@dataclass(frozen=True)
class RssResult:
    """The business part of a successful RSS answer."""

    data: Any
    request_id: str | None
    page: Any = None
    page_size: Any = None
    total: Any = None


def decode(api: str, body: bytes) -> dict[str, Any]:
    """Return the JSON object in ``body`` or raise ``MalformedResponse``."""
    try:
        document = jsoncodec.loads(body)  # json.loads's answer, mostly at orjson's speed
    except (ValueError, RecursionError):
        raise MalformedResponse("answer is not JSON", api=api) from None
    if not isinstance(document, dict):
        raise MalformedResponse("answer is not a JSON object", api=api)
    return document


def check_gateway(api: str, document: dict[str, Any]) -> str | None:
    """Raise ``GatewayError`` unless the envelope's ``code`` is "0"; return the request id."""
    request_id = _text_or_none(document.get("request_id"))
    code = document.get("code")
    if code is None and "result" not in document and "access_token" not in document:
        raise MalformedResponse("answer has neither code nor result", api=api,
                                request_id=request_id)
    if code is not None and str(code).strip() != "0":
        raise GatewayError(
            _text_or_none(document.get("message")) or "no message",
            code=str(code),
            error_type=_text_or_none(document.get("type")),
            request_id=request_id,
            api=api,
        )
    return request_id


def parse_rss(api: str, document: dict[str, Any]) -> RssResult:
    """Return the ``result`` of an RSS answer, raising for gateway and business failures."""
    request_id = check_gateway(api, document)
    result = document.get("result")
    if not isinstance(result, dict):
        raise MalformedResponse("answer has no result object", api=api, request_id=request_id)
    error_message = result.get("errorMessage")
    if not _succeeded(result.get("success"), error_message):
        raise BusinessError(
            _text_or_none(error_message) or "the service reported a failure",
            request_id=request_id,
            api=api,
        )
    return RssResult(
        data=result.get("data"),
        request_id=request_id,
        page=result.get("page"),
        page_size=result.get("pageSize"),
        total=result.get("total"),
    )


def _succeeded(success: Any, error_message: Any) -> bool:
    if isinstance(success, bool):
        return success
    if isinstance(success, str) and success.strip().lower() in (_TRUE, _FALSE):
        return success.strip().lower() == _TRUE
    # Absent or unreadable: the gateway said "0", so only an error message means failure.
    return not error_message


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)
