"""The gateway's checks (system parameters, app key, timestamp, signature, token) and envelopes.

Every refusal is a ``GatewayRefusal`` rendered as the platform's flat error body with HTTP 200;
business failures are ``BusinessFailure``, rendered inside ``result`` with ``code`` "0".
Messages name parameters, never their values: values include tokens and signatures.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal, overload

from shim.sandbox.state import SandboxState
from shim.upstream.signing import SIGN_METHOD, verify

SYSTEM_PARAMS = frozenset(
    {"app_key", "timestamp", "sign_method", "sign", "access_token", "partner_id", "debug"})
SECRET_PARAMS = frozenset({"access_token", "sign", "refresh_token", "code", "app_secret"})
_ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

ERRORS: dict[str, str] = {
    "MissingParameter": "Missing required parameter: {name}",
    "InvalidParameter": "The specified parameter {name} is not valid",
    "InvalidApiPath": "The specified API Path is invalid",
    "InvalidAppKey": "The specified App Key is invalid",
    "InvalidTimestamp": "The specified timestamp is invalid or outside the allowed window",
    "IncompleteSignature": "The request signature does not conform to platform standards",
    "IllegalAccessToken": "The specified access token is invalid or expired",
    "IllegalRefreshToken": "The specified refresh token is invalid or expired",
    "InvalidCode": "The specified authorization code is invalid, used or expired",
}


class GatewayRefusal(Exception):
    """Raised when the gateway refuses a call before (or instead of) the business service."""

    def __init__(self, code: str, *, name: str = "", error_type: str = "ISV",
                 message: str | None = None) -> None:
        self.code = code
        self.type = error_type
        self.message = message or ERRORS[code].format(name=name)
        super().__init__(self.message)


class BusinessFailure(Exception):
    """Raised when the RSS service answers ``success`` false with an ``errorMessage``."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def new_request_id() -> str:
    """Return a random request id shaped like the platform's (hex digits)."""
    return secrets.token_hex(13)


@overload
def verify_call(state: SandboxState, api_path: str, params: dict[str, str], *,
                needs_token: Literal[True]) -> str: ...
@overload
def verify_call(state: SandboxState, api_path: str, params: dict[str, str], *,
                needs_token: Literal[False]) -> None: ...
def verify_call(state: SandboxState, api_path: str, params: dict[str, str], *,
                needs_token: bool) -> str | None:
    """Run the gateway checks in platform order; return the token's store (or None)."""
    required = ["app_key", "timestamp", "sign_method", "sign"]
    if needs_token:
        required.append("access_token")
    for name in required:
        if not params.get(name):
            raise GatewayRefusal("MissingParameter", name=name)
    if params["app_key"] != state.config.app_key:
        raise GatewayRefusal("InvalidAppKey")
    if params["sign_method"] != SIGN_METHOD:
        raise GatewayRefusal("InvalidParameter", name="sign_method")
    if not _timestamp_in_window(params["timestamp"], state.now(),
                                state.config.timestamp_window_s):
        raise GatewayRefusal("InvalidTimestamp")
    # compare_digest refuses non-ASCII text with a TypeError; such a sign is simply wrong.
    if not params["sign"].isascii() or not verify(api_path, params, state.config.app_secret):
        raise GatewayRefusal("IncompleteSignature")
    if not needs_token:
        return None
    store_id = state.store_for_access_token(params["access_token"])
    if store_id is None:
        raise GatewayRefusal("IllegalAccessToken")
    return store_id


def _timestamp_in_window(text: str, now: float, window_s: int) -> bool:
    if text.isascii() and text.isdigit():
        if len(text) > 16:  # beyond year 2286, and too big for a float division
            return False
        seconds = int(text) / 1000
    elif _ISO_TIMESTAMP.match(text):
        try:
            parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return False
        seconds = parsed.timestamp()
    else:
        return False
    return abs(now - seconds) <= window_s


def business_params(params: dict[str, str]) -> dict[str, str]:
    """Return the non-system parameters, without secrets: what the ledger may keep."""
    return {name: value for name, value in params.items()
            if name not in SYSTEM_PARAMS and name not in SECRET_PARAMS}


def error_body(refusal: GatewayRefusal, request_id: str) -> dict[str, Any]:
    """Return the platform's flat gateway error envelope."""
    return {"type": refusal.type, "code": refusal.code, "message": refusal.message,
            "request_id": request_id}


def result_body(result: dict[str, Any], request_id: str) -> dict[str, Any]:
    """Return the RSS envelope around a ``result`` object."""
    return {"result": result, "code": "0", "request_id": request_id}


def success_result(data: Any, *, page: tuple[int, int, int] | None = None,
                   variance: bool = False) -> dict[str, Any]:
    """Return a successful ``result``; ``page`` is (page, pageSize, total) for paged APIs."""
    result: dict[str, Any] = {"success": True, "errorMessage": None, "data": data}
    if page is not None:
        result.update(page=page[0], pageSize=page[1], total=page[2])
    if variance:
        # The rendered documentation samples (reference section 7), not the backend types.
        result.update(success="true", errorMessage="error message")
        if page is not None:
            result.update(page=str(page[0]), pageSize=str(page[1]), total=str(page[2]))
        if data == []:
            result["data"] = None
    return result


def failure_result(message: str, *, variance: bool = False) -> dict[str, Any]:
    """Return a business failure ``result``."""
    return {"success": "false" if variance else False, "errorMessage": message, "data": None}
