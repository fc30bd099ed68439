"""The legacy error types, the one place that renders them, and the upstream error table.

Three body shapes reached legacy clients, and each is reproduced exactly:

    LegacyError                  status, headers, body()
    ├── Problem                  the service's {"title"} (400, 404, 409, 412, 422, 500, 503 ...)
    │   └── OutcomeUnknown       503: an update the platform may or may not have applied
    ├── GatewayMessage           Kong's {"message"} (404 no route, 429 rate limit, 500)
    └── OAuthError               Kong's OAuth2 {"error", "error_description"} (token, 401s)

Views raise these; ``render`` turns any of them into a response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Response, current_app

from shim.upstream import errors as up

log = logging.getLogger(__name__)

NOT_FOUND_TITLE = "The requested resource could not be found"
PICKUP_JOB_NOT_FOUND_TITLE = "Could not find store or pickup job"
CONFLICT_TITLE = "the request conflicted with the current state of the resource"
PRECONDITION_TITLE = "the If-Match condition evaluated to false"
REAUTHORIZE_TITLE = "Service Unavailable: the seller must authorize the shim again"
GATEWAY_FAILURE = "An unexpected error occurred"  # Kong's own 500, for gateway-side failures
STORE_UNAVAILABLE = "the shim's storage is unavailable or busy; retry shortly"
UNKNOWN_OUTCOME = ("the platform did not confirm the update, so it may or may not have been "
                   "applied: read the stock lot again and retry with its ETag")


class LegacyError(Exception):
    """Raised by views for any non-2xx legacy answer; rendered by ``render``."""

    status = 500

    def __init__(self, *, status: int | None = None, headers: Mapping[str, str] | None = None):
        super().__init__()
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """Return the JSON body legacy clients saw for this error."""
        raise NotImplementedError


class Problem(LegacyError):
    """The legacy service's error body: ``{"title": ...}``, plus ``detail`` for bad input."""

    def __init__(self, status: int, title: str, detail: str | None = None, **kwargs) -> None:
        super().__init__(status=status, **kwargs)
        self.title = title
        self.detail = detail

    def body(self) -> dict:
        body = {"title": self.title}
        if self.detail:
            body["detail"] = self.detail
        return body

    def __str__(self) -> str:
        return f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")


class GatewayMessage(LegacyError):
    """Kong's own error body: ``{"message": ...}``."""

    def __init__(self, status: int, message: str, **kwargs) -> None:
        super().__init__(status=status, **kwargs)
        self.message = message

    def body(self) -> dict:
        return {"message": self.message}


class OAuthError(LegacyError):
    """An OAuth2 error body as Kong's oauth2 plugin wrote it (``state`` echoed when given)."""

    def __init__(self, status: int, error: str, description: str, *,
                 state: str | None = None, **kwargs) -> None:
        super().__init__(status=status, **kwargs)
        self.error = error
        self.description = description
        self.state = state

    def body(self) -> dict:
        body = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            body["state"] = self.state
        return body


class OutcomeUnknown(Problem):
    """The 503 for an update whose fate the shim could not learn: re-read, then decide.

    Never a definitive failure: the platform may have applied the update, or may still.
    ``timed_out`` says the platform's answer was late (rather than lost or garbled).
    """

    def __init__(self, *, timed_out: bool = False) -> None:
        super().__init__(503, "Service Unavailable", UNKNOWN_OUTCOME,
                         headers={"Retry-After": "1"})
        self.timed_out = timed_out


def bad_request(detail: str) -> Problem:
    """Return the 400 Problem for malformed input, naming what is wrong."""
    return Problem(400, "Bad Request", detail)


def unprocessable(detail: str) -> Problem:
    """Return the 422 Problem for input that is well-formed but cannot be served."""
    return Problem(422, "Unprocessable Entity", detail)


def not_found(title: str = NOT_FOUND_TITLE) -> Problem:
    """Return the legacy 404 Problem."""
    return Problem(404, title)


def store_unavailable() -> Problem:
    """Return the 503 for a request that needed storage while it was down or locked."""
    return Problem(503, "Service Unavailable", STORE_UNAVAILABLE, headers={"Retry-After": "1"})


def render(error: LegacyError) -> Response:
    """Return the response for ``error``: the one place legacy error bodies are written."""
    # The app's JSON provider, so error bodies are compact like every other body (and Kong's).
    response = current_app.json.response(error.body())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


# --- upstream failures --------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """How one kind of upstream failure reaches a legacy client."""

    status: int
    title: str
    retry_after: int | None = None
    configuration: bool = False  # a shim/app misconfiguration: log loudly, page an operator
    # For an update: the platform may have applied it anyway (no answer came back, or its
    # backend failed after the gateway let the call through). Throttling, refused tokens and
    # signatures, and the service's own refusals are decided before anything is written.
    write_unknown: bool = False


_UNAVAILABLE = Outcome(503, "Service Unavailable", retry_after=1, write_unknown=True)
_CONFIGURATION = Outcome(500, "Internal Server Error", configuration=True)
_INTERNAL = Outcome(500, "Internal Server Error")
_THROTTLED = Outcome(429, "Too Many Requests", retry_after=1)

# Gateway error codes (reference section 5.2) -> legacy outcome. Every code the sandbox can
# emit must be here; tests/test_errors.py fails when one is missing.
GATEWAY_CODES: dict[str, Outcome] = {
    # A seller token the platform refuses is the operator's to fix (re-import or re-authorize).
    "IllegalAccessToken": _CONFIGURATION,
    "IllegalRefreshToken": Outcome(503, REAUTHORIZE_TITLE, configuration=True),
    # Only the onboarding exchange of an authorization code can see this one.
    "InvalidCode": _CONFIGURATION,
    "AUTH_TYPE_UNSUPPORTED": _CONFIGURATION,
    "IncompleteSignature": _CONFIGURATION,
    "InvalidSignature": _CONFIGURATION,
    "InvalidTimestamp": _CONFIGURATION,
    "InvalidAppKey": _CONFIGURATION,
    "APP_KEY_INVALID": _CONFIGURATION,
    "InsufficientPermission": _CONFIGURATION,
    "AppWhiteIpLimit": _CONFIGURATION,
    "InvalidApiPath": _CONFIGURATION,
    "InvalidApi": _CONFIGURATION,
    "MissingParameter": _CONFIGURATION,
    "InvalidParameter": _CONFIGURATION,
    "SellerNotActive": Outcome(403, "Forbidden: the seller's store is not active"),
    "SellerNotVerified": Outcome(403, "Forbidden: the seller's store is not verified"),
    "ApiCallLimit": _THROTTLED,
    "901": _THROTTLED,
    "E901": _THROTTLED,
    "OPEN_API_CALL_EXCEED_LIMIT": _THROTTLED,
    "TRAFFIC_CONTROL": _THROTTLED,
    "AppCallLimit": Outcome(429, "Too Many Requests", retry_after=3600),
    "ServiceTimeout": _UNAVAILABLE,
    "HttpConnectError": _UNAVAILABLE,
    "UnknownRuntimeException": _UNAVAILABLE,
    "SYSTEM_ERROR": _UNAVAILABLE,
    "InternalError": _UNAVAILABLE,
    "6": _UNAVAILABLE,
    "E006": _UNAVAILABLE,
    "1000": _UNAVAILABLE,
    "5": _CONFIGURATION,
    "E005": _CONFIGURATION,
    "30": _CONFIGURATION,
    "E030": _CONFIGURATION,
}

# Failures without a gateway code, by exception class (most specific first).
TRANSPORT_OUTCOMES: tuple[tuple[type[up.UpstreamError], Outcome], ...] = (
    (up.UpstreamTimeout, _UNAVAILABLE),
    (up.UpstreamUnavailable, _UNAVAILABLE),
    (up.MalformedResponse, _UNAVAILABLE),
    (up.TransportError, _UNAVAILABLE),  # any other way no usable answer arrived
)

# An unknown gateway code: by Lazada's error type when it gave one.
GATEWAY_TYPE_OUTCOMES: dict[str | None, Outcome] = {
    "ISP": _UNAVAILABLE,  # backend service problem: retry later
    "SYSTEM": _UNAVAILABLE,
    "ISV": _CONFIGURATION,  # the request was wrong: the shim built it, so it is ours to fix
    None: _INTERNAL,
}

_NOT_FOUND_MARKERS = ("not found", "does not exist", "not exist", "no such")


def outcome_for(error: up.UpstreamError) -> Outcome:
    """Return the legacy outcome of an upstream failure (the table above, applied)."""
    if isinstance(error, up.GatewayError):
        return GATEWAY_CODES.get(error.code) or GATEWAY_TYPE_OUTCOMES.get(
            error.error_type, _INTERNAL)
    if isinstance(error, up.BusinessError):
        text = error.message.lower()
        if any(marker in text for marker in _NOT_FOUND_MARKERS):
            return Outcome(404, NOT_FOUND_TITLE)
        return _INTERNAL
    for kind, outcome in TRANSPORT_OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return _INTERNAL


# A write failing with these may still be at the backend and land later: not sent again.
LATE_CODES = frozenset({"ServiceTimeout"})  # the platform's gateway gave up on its backend
LATE_STATUSES = frozenset({504})  # so did a proxy in front of it


def from_upstream(error: up.UpstreamError, *, not_found_title: str = NOT_FOUND_TITLE,
                  write: bool = False) -> Problem:
    """Return the legacy Problem for an upstream failure, logging it at the right level.

    For a write whose outcome the failure leaves open (``Outcome.write_unknown``), the
    Problem is ``OutcomeUnknown``, which says so.
    """
    outcome = outcome_for(error)
    if outcome.configuration:
        log.error("upstream refused the shim's call, fix the configuration: %s", error)
    elif outcome.status >= 500:
        log.warning("upstream failure: %s", error)
    else:
        log.info("upstream answer mapped to %s: %s", outcome.status, error)
    if write and outcome.write_unknown:
        # Late, whether our deadline passed or the platform's backend said so: a late write
        # can still land, so it is not sent again.
        late = (isinstance(error, up.UpstreamTimeout) or error.code in LATE_CODES
                or error.http_status in LATE_STATUSES)
        return OutcomeUnknown(timed_out=late)
    title = not_found_title if outcome.status == 404 else outcome.title
    headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
    return Problem(outcome.status, title, headers=headers)
