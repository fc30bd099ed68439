"""The legacy error types, the one place that renders them, and the upstream error table.

Three body shapes reached legacy clients, and each is reproduced exactly:

    LegacyError                  status, headers, body()
    ├── Problem                  the service's {"title"} (400, 404, 409, 412, 422, 500, 503 ...)
    │   └── OutcomeUnknown       503: an update the platform may or may not have applied
    ├── GatewayMessage           Kong's {"message"} (404 no route, 429 rate limit, 500)
    └── OAuthError               Kong's OAuth2 {"error", "error_description"} (token, 401s)

Views raise these; ``render`` turns any of them into a response. Failures raised below the
legacy surface (the platform's ``shim.upstream.errors`` classes, and the shim's own:
``shim.failures``, ``shim.locks.LockTimeout``) reach legacy clients through one table,
``OUTCOMES``, applied by ``problem_for``.

Flask is imported only where a response is built, so the types and the table load without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shim.failures import (
    ClientBusy,
    InstanceBusy,
    ReauthorizationNeeded,
    RefreshUnanswered,
    SellerBusy,
    TokensUnavailable,
)
from shim.locks import LockQueueFull, LockTimeout
from shim.upstream import errors as up

if TYPE_CHECKING:
    from werkzeug.sansio.response import Response as SansioResponse

log = logging.getLogger(__name__)

NOT_FOUND_TITLE = "The requested resource could not be found"
PICKUP_JOB_NOT_FOUND_TITLE = "Could not find store or pickup job"
CONFLICT_TITLE = "the request conflicted with the current state of the resource"
PRECONDITION_TITLE = "the If-Match condition evaluated to false"
REAUTHORIZE_TITLE = "Service Unavailable: the seller must authorize the shim again"
GATEWAY_FAILURE = "An unexpected error occurred"  # Kong's own 500, for gateway-side failures
STORE_UNAVAILABLE = "the shim's storage is unavailable or busy; retry shortly"
REAUTHORIZE_DETAIL = ("the seller's authorization of the shim has lapsed; the operator has been "
                      "alerted")
REFRESH_UNANSWERED = ("the seller's tokens could not be renewed just now; the operator has been "
                      "alerted")
LOCK_BUSY = "another update of this stock lot is still in progress"
LOCK_QUEUE_FULL = "too many updates of this stock lot are waiting; retry shortly"
INSTANCE_BUSY = "the shim is serving as many requests as it can; retry shortly"
SELLER_BUSY = "the shim is serving as many requests for this seller as it can; retry shortly"
RATE_LIMITED = "API rate limit exceeded"  # Kong's rate-limiting plugin's 429
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

    def body(self) -> dict[str, str]:
        """Return the JSON body legacy clients saw for this error."""
        raise NotImplementedError


class Problem(LegacyError):
    """The legacy service's error body: ``{"title": ...}``, plus ``detail`` for bad input."""

    def __init__(self, status: int, title: str, detail: str | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status=status, headers=headers)
        self.title = title
        self.detail = detail

    def body(self) -> dict[str, str]:
        body = {"title": self.title}
        if self.detail:
            body["detail"] = self.detail
        return body

    def __str__(self) -> str:
        return f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")


class GatewayMessage(LegacyError):
    """Kong's own error body: ``{"message": ...}``."""

    def __init__(self, status: int, message: str, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status=status, headers=headers)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"message": self.message}


class OAuthError(LegacyError):
    """An OAuth2 error body as Kong's oauth2 plugin wrote it (``state`` echoed when given)."""

    def __init__(self, status: int, error: str, description: str, *,
                 state: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status=status, headers=headers)
        self.error = error
        self.description = description
        self.state = state

    def body(self) -> dict[str, str]:
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


def payload_too_large(limit: int) -> Problem:
    """Return the 413 Problem for a body over ``limit`` bytes (the app's and the front's)."""
    return Problem(413, "Payload Too Large", f"the body must not exceed {limit} bytes")


def store_unavailable() -> Problem:
    """Return the 503 for a request that needed storage while it was down or locked."""
    return Problem(503, "Service Unavailable", STORE_UNAVAILABLE, headers={"Retry-After": "1"})


def render(error: LegacyError) -> SansioResponse:
    """Return the response for ``error``: the one place legacy error bodies are written."""
    from flask import current_app

    # The app's JSON provider, so error bodies are compact like every other body (and Kong's).
    response = current_app.json.response(error.body())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


# --- failures raised below the legacy surface ---------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """How one kind of failure reaches a legacy client, and how loudly it is logged."""

    status: int
    title: str
    detail: str | None = None
    retry_after: int | None = None
    configuration: bool = False  # a shim/app misconfiguration: log loudly, page an operator
    # For an update: the platform may have applied it anyway (no answer came back, or its
    # backend failed after the gateway let the call through). Throttling, refused tokens and
    # signatures, and the service's own refusals are decided before anything is written.
    write_unknown: bool = False
    level: int | None = None  # the log level, when not the one status and configuration give
    gateway: bool = False  # answered in Kong's shape, ``{"message": title}``, not a Problem

    @property
    def log_level(self) -> int:
        """Return the level the failure is logged at."""
        if self.level is not None:
            return self.level
        if self.configuration:
            return logging.ERROR
        return logging.WARNING if self.status >= 500 else logging.INFO


_UNAVAILABLE = Outcome(503, "Service Unavailable", retry_after=1, write_unknown=True)
_CONFIGURATION = Outcome(500, "Internal Server Error", configuration=True)
_INTERNAL = Outcome(500, "Internal Server Error")
_THROTTLED = Outcome(429, "Too Many Requests", retry_after=1)

# Failure class -> legacy outcome; a failure takes the row of the nearest class in its MRO.
# Every class of shim.upstream.errors has its own row: tests/test_errors.py fails otherwise.
OUTCOMES: dict[type[Exception], Outcome] = {
    up.UpstreamError: _INTERNAL,
    # No usable answer: deadlines, resets, HTTP 5xx, garbled bodies.
    up.TransportError: _UNAVAILABLE,
    up.UpstreamTimeout: _UNAVAILABLE,
    up.UpstreamUnavailable: _UNAVAILABLE,
    up.UpstreamUnreachable: _UNAVAILABLE,
    up.MalformedResponse: _UNAVAILABLE,
    # Gateway refusals. An unknown code of no known error type is a plain GatewayError.
    up.GatewayError: _INTERNAL,
    # A seller token the platform refuses is the operator's to fix (re-import or
    # re-authorize); an access token only once a renewed one was refused too.
    up.AccessTokenRefused: _CONFIGURATION,
    up.RefreshRefused: Outcome(503, REAUTHORIZE_TITLE, configuration=True),
    up.RefreshUnsupported: _CONFIGURATION,
    up.CodeRefused: _CONFIGURATION,  # only the onboarding exchange of a code sees this one
    up.UnknownApi: _CONFIGURATION,
    up.CallRefused: _CONFIGURATION,
    up.SellerNotActive: Outcome(403, "Forbidden: the seller's store is not active"),
    up.SellerNotVerified: Outcome(403, "Forbidden: the seller's store is not verified"),
    up.Throttled: _THROTTLED,
    up.QuotaSpent: Outcome(429, "Too Many Requests", retry_after=3600),
    up.BackendFailure: _UNAVAILABLE,
    up.BackendTrouble: _UNAVAILABLE,
    up.BackendLate: _UNAVAILABLE,
    # The service's own refusals (result.success false).
    up.BusinessError: _INTERNAL,
    up.BusinessNotFound: Outcome(404, NOT_FOUND_TITLE),
    # Nothing was sent (so no write is in doubt); Retry-After is the breaker's remaining
    # cool-down (``retry_after_for``). The breaker logs its opening once, at WARNING.
    up.BreakerOpen: Outcome(503, "Service Unavailable", retry_after=1, level=logging.DEBUG),
    # The shim's own failures.
    ReauthorizationNeeded: Outcome(503, REAUTHORIZE_TITLE, REAUTHORIZE_DETAIL,
                                   level=logging.ERROR),
    TokensUnavailable: Outcome(503, "Service Unavailable", retry_after=1),
    RefreshUnanswered: Outcome(503, "Service Unavailable", REFRESH_UNANSWERED, retry_after=5),
    LockTimeout: Outcome(503, "Service Unavailable", LOCK_BUSY, retry_after=1,
                         level=logging.DEBUG),
    # Admission control (shim.legacy.admission): refused at once, never queued. A client
    # with too many calls in flight meets Kong's rate-limit answer, the one 429 legacy
    # clients knew; a full instance or seller is the service's passing 503.
    InstanceBusy: Outcome(503, "Service Unavailable", INSTANCE_BUSY, retry_after=1,
                          level=logging.DEBUG),
    SellerBusy: Outcome(503, "Service Unavailable", SELLER_BUSY, retry_after=1,
                        level=logging.DEBUG),
    ClientBusy: Outcome(429, RATE_LIMITED, retry_after=1, gateway=True, level=logging.DEBUG),
    LockQueueFull: Outcome(503, "Service Unavailable", LOCK_QUEUE_FULL, retry_after=1,
                           level=logging.DEBUG),
}

# The shim's own failures, for the app to route to ``problem_for``.
LOCAL_FAILURES: tuple[type[Exception], ...] = tuple(
    kind for kind in OUTCOMES if not issubclass(kind, up.UpstreamError))


def outcome_for(error: Exception) -> Outcome:
    """Return the legacy outcome of a failure (the table above, applied)."""
    for kind in type(error).__mro__:
        if kind in OUTCOMES:
            return OUTCOMES[kind]
    raise LookupError(f"no legacy outcome for {type(error).__name__}")


def answers(error: BaseException) -> bool:
    """Return whether ``error`` has a legacy answer (rather than being a bug: a bare 500)."""
    return isinstance(error, (LegacyError, *OUTCOMES))


def from_upstream(error: up.UpstreamError, *, not_found_title: str = NOT_FOUND_TITLE,
                  write: bool = False) -> Problem:
    """Return the legacy Problem for an upstream failure, logging it at the right level.

    For a write whose outcome the failure leaves open (``Outcome.write_unknown``), the
    Problem is ``OutcomeUnknown``, which says so.
    """
    outcome = outcome_for(error)
    if outcome.configuration:
        log.log(outcome.log_level, "upstream refused the shim's call, fix the configuration: %s",
                error)
    elif outcome.status >= 500:
        log.log(outcome.log_level, "upstream failure: %s", error)
    else:
        log.log(outcome.log_level, "upstream answer mapped to %s: %s", outcome.status, error)
    if write and outcome.write_unknown:
        # Late, whether our deadline passed or the platform's backend said so: a late write
        # can still land, so it is not sent again.
        return OutcomeUnknown(timed_out=error.late)
    title = not_found_title if outcome.status == 404 else outcome.title
    return _problem(outcome, title, retry_after_for(error, outcome))


def problem_for(error: Exception) -> LegacyError:
    """Return the legacy answer to any failure in ``OUTCOMES``, logging it at its level."""
    if isinstance(error, up.UpstreamError):
        return from_upstream(error)
    outcome = outcome_for(error)
    log.log(outcome.log_level, "request not served: %s", error)
    return _answer(outcome, outcome.title)


def retry_after_for(error: Exception, outcome: Outcome) -> int | None:
    """Return the Retry-After seconds for ``error``: its own wait when it knows one (an open
    circuit breaker's cool-down, rounded up), else its outcome's."""
    if isinstance(error, up.BreakerOpen):
        return max(1, math.ceil(error.retry_after_s))
    return outcome.retry_after


def _problem(outcome: Outcome, title: str, retry_after: int | None = None) -> Problem:
    retry_after = retry_after or outcome.retry_after
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return Problem(outcome.status, title, outcome.detail, headers=headers)


def _answer(outcome: Outcome, title: str) -> LegacyError:
    if outcome.gateway:
        headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
        return GatewayMessage(outcome.status, title, headers=headers)
    return _problem(outcome, title)
