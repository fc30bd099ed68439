"""Everything the Lazada client raises, as one tree rooted at ``UpstreamError``.

    UpstreamError                  code, message, request_id, api, http_status
    ├── TransportError             no usable answer arrived
    │   ├── UpstreamTimeout        connect or read deadline passed
    │   ├── UpstreamUnavailable    connection reset, or HTTP 5xx
    │   │   └── UpstreamUnreachable no connection could be opened: nothing was sent
    │   └── MalformedResponse      an answer that is not a Lazada envelope (HTML, truncated JSON)
    ├── GatewayError               the platform refused the call: ``code`` is not "0"
    │   ├── AccessTokenRefused     the seller's access token (IllegalAccessToken)
    │   ├── RefreshRefused         the refresh token: only the seller can restore access
    │   │   └── RefreshUnsupported the app may not refresh at all (AUTH_TYPE_UNSUPPORTED)
    │   ├── CodeRefused            an authorization code (onboarding only)
    │   ├── UnknownApi             the platform does not know (or lets us use) the API path
    │   ├── CallRefused            the call as the shim made it: signature, app, parameters
    │   ├── SellerNotActive        the seller's store may not use the API...
    │   ├── SellerNotVerified      ...yet
    │   ├── Throttled              too many calls now: try again in a second
    │   │   └── QuotaSpent         the app's daily quota: try again in hours
    │   └── BackendFailure         the platform's backend failed (it may have acted)
    │       └── BackendTrouble     ...with a code that says "try again"
    │           └── BackendLate    ...because it gave up waiting: a write may still land
    ├── BusinessError              the RSS service answered ``result.success`` false
    │   └── BusinessNotFound       ...because what was asked for does not exist
    └── BreakerOpen                no call was made: the API's circuit breaker is open

A platform code is classified here and nowhere else: ``GatewayError(message, code=...)``
returns an instance of the class ``CODES`` names for the code (as ``OSError(errno, ...)``
returns a ``FileNotFoundError``), an unknown code goes by Lazada's error type, and a
``BusinessError`` whose message says "not found" is a ``BusinessNotFound``. Every layer above
catches classes and never compares code strings.

Messages never carry a URL, a parameter value or a response body: those hold the access token
and the signature, and these exceptions end up in logs.
"""

from __future__ import annotations

from typing import Any, ClassVar

LATE_STATUSES = frozenset({504})  # a proxy in front of the platform gave up waiting


class UpstreamError(Exception):
    """Raised when a Lazada call does not produce a successful result."""

    default_code = "UpstreamError"
    # Whether the platform may still be working on the call: a write can land later.
    late_by_kind: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        api: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.request_id = request_id
        self.api = api
        self.http_status = http_status

    @property
    def late(self) -> bool:
        """Return whether the answer was late (so the platform may still act on the call)."""
        return self.late_by_kind or self.http_status in LATE_STATUSES

    def __str__(self) -> str:
        where = f" from {self.api}" if self.api else ""
        rid = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{rid}"


class TransportError(UpstreamError):
    """Raised when no usable answer arrived from the platform."""

    default_code = "TransportError"


class UpstreamTimeout(TransportError):
    """Raised when the connect or read deadline passed."""

    default_code = "Timeout"
    late_by_kind = True


class UpstreamUnavailable(TransportError):
    """Raised on a reset connection or an HTTP 5xx answer."""

    default_code = "Unavailable"


class UpstreamUnreachable(UpstreamUnavailable):
    """Raised when no connection could be opened (refused, no route): nothing was sent."""


class MalformedResponse(TransportError):
    """Raised when the answer is not a Lazada JSON envelope."""

    default_code = "MalformedResponse"


class GatewayError(UpstreamError):
    """Raised when the platform answers with a non-zero ``code`` (signature, token, limits...).

    Built as ``GatewayError``, it is an instance of the subclass its code classifies to.
    """

    def __new__(cls, message: str, *, code: str | None = None,
                error_type: str | None = None, **kwargs: Any) -> GatewayError:
        kind = classify(code, error_type) if cls is GatewayError else cls
        return super().__new__(kind, message)

    def __init__(self, message: str, *, error_type: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.error_type = error_type  # ISV (caller), ISP (backend) or SYSTEM (gateway)


class AccessTokenRefused(GatewayError):
    """Raised when the platform refuses the seller's access token: renew it, replay once."""


class RefreshRefused(GatewayError):
    """Raised when the platform refuses a refresh token: the seller must authorize again."""


class RefreshUnsupported(RefreshRefused):
    """Raised when the app may not refresh tokens at all (a Service Market subscription)."""


class CodeRefused(GatewayError):
    """Raised when the platform refuses an authorization code (bad, used or expired)."""


class UnknownApi(GatewayError):
    """Raised when the API path is unknown to the platform or outside the app's permissions."""


class CallRefused(GatewayError):
    """Raised when the platform refuses the call as made: the shim's configuration is wrong."""


class SellerNotActive(GatewayError):
    """Raised when the seller's store is not active."""


class SellerNotVerified(GatewayError):
    """Raised when the seller's store is not verified."""


class Throttled(GatewayError):
    """Raised when the platform limits the call rate: a second later it may pass."""


class QuotaSpent(Throttled):
    """Raised when the app's rolling daily quota is spent: only hours help."""


class BackendFailure(GatewayError):
    """Raised when the platform's backend failed; a write may have been applied anyway."""


class BackendTrouble(BackendFailure):
    """Raised for a passing backend failure: the platform says another try may succeed."""


class BackendLate(BackendTrouble):
    """Raised when the platform's gateway gave up waiting on its backend (ServiceTimeout)."""

    late_by_kind = True


class BusinessError(UpstreamError):
    """Raised when the RSS service answers ``result.success`` false with an ``errorMessage``.

    Built as ``BusinessError``, it is a ``BusinessNotFound`` when the message says so.
    """

    default_code = "BusinessFailure"

    def __new__(cls, message: str, **kwargs: Any) -> BusinessError:
        not_found = cls is BusinessError and any(
            marker in message.lower() for marker in NOT_FOUND_MARKERS)
        return super().__new__(BusinessNotFound if not_found else cls, message)


class BusinessNotFound(BusinessError):
    """Raised when the service's refusal says the object asked for does not exist."""


class BreakerOpen(UpstreamError):
    """Raised instead of a call while the API's circuit breaker is open: nothing was sent.

    ``retry_after_s`` is how long until the breaker lets a probe call through.
    """

    default_code = "BreakerOpen"

    def __init__(self, message: str, *, retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


# Gateway codes (reference section 5.2) -> class. tests/test_errors.py fails when a code the
# sandbox can emit or the reference lists is missing.
CODES: dict[str, type[GatewayError]] = {
    "IllegalAccessToken": AccessTokenRefused,
    "IllegalRefreshToken": RefreshRefused,
    "AUTH_TYPE_UNSUPPORTED": RefreshUnsupported,
    "InvalidCode": CodeRefused,
    "InvalidApiPath": UnknownApi,
    "InvalidApi": UnknownApi,
    **dict.fromkeys(("IncompleteSignature", "InvalidSignature", "InvalidTimestamp",
                     "InvalidAppKey", "APP_KEY_INVALID", "InsufficientPermission",
                     "AppWhiteIpLimit", "MissingParameter", "InvalidParameter",
                     "5", "E005", "30", "E030"), CallRefused),
    "SellerNotActive": SellerNotActive,
    "SellerNotVerified": SellerNotVerified,
    **dict.fromkeys(("ApiCallLimit", "901", "E901", "OPEN_API_CALL_EXCEED_LIMIT",
                     "TRAFFIC_CONTROL"), Throttled),
    "AppCallLimit": QuotaSpent,
    **dict.fromkeys(("HttpConnectError", "UnknownRuntimeException", "SYSTEM_ERROR",
                     "InternalError", "6", "E006", "1000"), BackendTrouble),
    "ServiceTimeout": BackendLate,
}

# An unknown code, by Lazada's error type; any other type stays a plain ``GatewayError``.
ERROR_TYPES: dict[str, type[GatewayError]] = {
    "ISP": BackendFailure,  # the backend service failed
    "SYSTEM": BackendFailure,
    "ISV": CallRefused,  # the request was wrong, and the shim built it
}

NOT_FOUND_MARKERS = ("not found", "does not exist", "not exist", "no such")


def classify(code: str | None, error_type: str | None = None) -> type[GatewayError]:
    """Return the class of a gateway refusal with ``code`` (and Lazada's ``error_type``)."""
    if code is not None and code in CODES:
        return CODES[code]
    return ERROR_TYPES.get(error_type or "", GatewayError)
