"""Fault rules: what can go wrong on a call, and what each failure looks like on the wire.

A rule names an API path (or "*"), a kind, and fires either on the next ``times`` matching
calls or with probability ``rate`` (drawn from the sandbox's seeded RNG), after letting the
first ``skip`` matching calls through (to hit, say, the second read of a sequence). Kinds:

    latency          sleep latency_ms, then answer normally
    sleep            run the call, then sleep latency_ms before answering (outlive deadlines)
    http500/502/503  that HTTP status with a small HTML body; the call is not run
    html             HTTP 200 with an HTML block page; the call is not run
    truncated        run the call, answer HTTP 200 with the JSON body cut in half
    reset            drop the connection without an answer; the call is not run
    lost_response    run the call (the write happens), then drop the connection
    outside_write    an outside writer (the warehouse) changes the lot the call names by
                     at_delta / scheduled_delta first; then the call runs normally
    <any code>       a flat gateway error envelope with that code; the call is not run

With ``run: true``, a kind that does not run the call (http5xx, html, reset, a code) runs it
first and then fails anyway: a backend that did the work behind a gateway that timed out or
a proxy that lost the answer (a ServiceTimeout on a write that was applied). With
``land_after_ms``, such a kind answers at once and runs the call that much later instead:
a backend finishing what its gateway gave up on (a 504 whose write lands late).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

LATENCY, SLEEP, HTML, TRUNCATED, RESET, LOST, OUTSIDE_WRITE = (
    "latency", "sleep", "html", "truncated", "reset", "lost_response", "outside_write")
HTTP_STATUS = {"http500": 500, "http502": 502, "http503": 503, "http504": 504}
TRANSPORT_KINDS = {LATENCY, SLEEP, HTML, TRUNCATED, RESET, LOST, OUTSIDE_WRITE, *HTTP_STATUS}
RUN_FIRST = {SLEEP, TRUNCATED, LOST}  # kinds that let the call happen before failing
ANSWER_NORMALLY = {LATENCY, OUTSIDE_WRITE}  # kinds after which the call runs and answers
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Gateway error codes with the type and message the platform uses (reference 5.2).
GATEWAY_ERRORS: dict[str, tuple[str, str]] = {
    "ApiCallLimit": ("ISV", "Api access frequency exceeds the limit. this ban will last 1 seconds"),
    "AppCallLimit": ("ISV", "The app call limit for the current period has been exceeded"),
    "901": ("ISP", "request is too frequent, or the requested functionality is temporarily "
                   "disabled"),
    "ServiceTimeout": ("ISP", "The request has failed due to service timeout"),
    "HttpConnectError": ("ISP", "The request has failed due to a backend connection error"),
    "UnknownRuntimeException": ("ISP", "The request has failed due to an unknown error"),
    "SYSTEM_ERROR": ("SYSTEM", "The request has failed due to a system error"),
    "IllegalAccessToken": ("ISV", "The specified access token is invalid or expired"),
    "IllegalRefreshToken": ("ISV", "The specified refresh token is invalid or expired"),
    "AppWhiteIpLimit": ("ISV", "The request IP is not in the app's IP whitelist"),
    "InsufficientPermission": ("ISV", "The app has no permission to call this API"),
}

HTML_ERROR = ("<html><head><title>{status}</title></head><body><center><h1>{status}</h1>"
              "</center><hr><center>Tengine</center></body></html>")
HTML_BLOCK_PAGE = (
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Access denied</title></head>"
    "<body><div class=\"punish\"><h2>Sorry, we have detected unusual traffic from your "
    "network.</h2><p>Please slide to verify that you are a human.</p></div></body></html>")


@dataclass
class FaultRule:
    """One fault: where, what, and how often (``times`` left, or a probability ``rate``)."""

    api: str
    kind: str
    times: int | None = None
    rate: float | None = None
    latency_ms: int = 0
    type: str | None = None
    message: str | None = None
    run: bool = False
    skip: int = 0
    at_delta: int = 0
    scheduled_delta: int = 0
    land_after_ms: int = 0
    id: int = 0

    @property
    def runs_call(self) -> bool:
        """Return whether the call runs (and is recorded as run) before the fault's answer."""
        return self.kind in RUN_FIRST or self.run

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as the control API shows it."""
        return asdict(self)

    def gateway_error(self) -> tuple[str, str]:
        """Return the (type, message) of a gateway-code fault."""
        error_type, message = GATEWAY_ERRORS.get(
            self.kind, ("ISP", f"The request has failed ({self.kind})"))
        return self.type or error_type, self.message or message


def parse_rule(body: Any) -> FaultRule:
    """Build a rule from the control API's JSON, raising ``ValueError`` on bad input."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    api = str(body.get("api", "*"))
    api = api.removeprefix("/rest") if api.startswith("/rest/") else api
    if api != "*" and not api.startswith("/"):
        raise ValueError("api must be '*' or a path such as /rss/products/get")
    kind = body.get("kind")
    if not isinstance(kind, str) or not (kind in TRANSPORT_KINDS or _CODE.match(kind)):
        raise ValueError("kind must be a fault kind or a gateway error code")
    times, rate = body.get("times"), body.get("rate")
    if times is not None and rate is not None:
        raise ValueError("give either times or rate, not both")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError("rate must be a number in (0, 1]")
        rate = float(rate)
    else:
        times = 1 if times is None else times
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("times must be a positive integer")
    latency_ms = body.get("latency_ms", 0)
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) or latency_ms < 0:
        raise ValueError("latency_ms must be a non-negative integer")
    if kind in (LATENCY, SLEEP) and latency_ms == 0:
        raise ValueError(f"a {kind} fault needs latency_ms")
    for name in ("type", "message"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ValueError(f"{name} must be a string")
    skip = body.get("skip", 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError("skip must be a non-negative integer")
    run = body.get("run", False)
    if not isinstance(run, bool):
        raise ValueError("run must be true or false")
    if run and kind in RUN_FIRST | ANSWER_NORMALLY:
        raise ValueError(f"a {kind} fault runs the call anyway; run applies to the others")
    land_after_ms = body.get("land_after_ms", 0)
    if isinstance(land_after_ms, bool) or not isinstance(land_after_ms, int) \
            or not 0 <= land_after_ms <= 60_000:
        raise ValueError("land_after_ms must be an integer from 0 to 60000")
    if land_after_ms and (run or kind in RUN_FIRST | ANSWER_NORMALLY):
        raise ValueError("land_after_ms applies to a fault that does not run the call")
    deltas = {name: body.get(name, 0) for name in ("at_delta", "scheduled_delta")}
    for name, value in deltas.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
    if kind == OUTSIDE_WRITE and not any(deltas.values()):
        raise ValueError("an outside_write fault needs at_delta and/or scheduled_delta")
    if kind != OUTSIDE_WRITE and any(deltas.values()):
        raise ValueError("at_delta and scheduled_delta belong to outside_write faults")
    return FaultRule(api=api, kind=kind, times=times, rate=rate, latency_ms=latency_ms,
                     type=body.get("type"), message=body.get("message"), run=run, skip=skip,
                     land_after_ms=land_after_ms, **deltas)
