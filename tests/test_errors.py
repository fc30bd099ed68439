"""Legacy error rendering, routing errors, and the upstream error table (shim.errors).

The table tests pin exhaustiveness: every gateway code the sandbox can emit and every code of
the Lazada reference (section 5.2) must have an outcome. The end-to-end tests drive the real
chain (legacy client -> shim -> sandbox with injected faults) and check that no secret ever
reaches a response body or a log record.
"""

from __future__ import annotations

import ast
import logging
import secrets
import time
from pathlib import Path

import pytest
import requests

import shim.sandbox
from shim import errors
from shim.app import create_app
from shim.failures import (
    ClientBusy,
    InstanceBusy,
    ReauthorizationNeeded,
    RefreshUnanswered,
    SellerBusy,
    TokensUnavailable,
)
from shim.locks import LockQueueFull, LockTimeout
from shim.sandbox import faults
from shim.sandbox import gateway as sandbox_gateway
from shim.sandbox import rss as sandbox_rss
from shim.serving import LocalServer
from shim.store import MemoryStore
from shim.upstream import errors as up

PRODUCT = "/v1/products/100150"
LOT_0 = "/v1/products/100150/pickup-locations/23789/stock-lots/0"

# Every error code in section 5.2 of lazada-open-platform.md ("0" is success).
REFERENCE_CODES = (
    "IllegalAccessToken", "IllegalRefreshToken", "AUTH_TYPE_UNSUPPORTED", "InvalidCode",
    "IncompleteSignature", "InvalidSignature", "MissingParameter", "InvalidParameter",
    "InvalidApiPath", "InvalidApi", "InsufficientPermission", "InvalidAppKey", "APP_KEY_INVALID",
    "AppWhiteIpLimit", "ApiCallLimit", "901", "E901", "AppCallLimit",
    "OPEN_API_CALL_EXCEED_LIMIT", "TRAFFIC_CONTROL", "ServiceTimeout", "HttpConnectError",
    "UnknownRuntimeException", "SYSTEM_ERROR", "6", "E006", "1000", "InternalError", "5",
    "E005", "30", "E030", "SellerNotActive", "SellerNotVerified",
)


def sandbox_codes() -> set[str]:
    """Return every gateway code the sandbox can emit: its tables and each literal refusal."""
    codes = set(sandbox_gateway.ERRORS) | set(faults.GATEWAY_ERRORS)
    for source in Path(shim.sandbox.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "GatewayRefusal"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                codes.add(node.args[0].value)
    return codes


def subclasses(root: type[up.UpstreamError]) -> list[type[up.UpstreamError]]:
    found, pending = [], [root]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


def all_transport_errors() -> list[type[up.TransportError]]:
    return subclasses(up.TransportError)


def outcome_of_code(code: str) -> errors.Outcome:
    return errors.outcome_for(up.GatewayError("refused", code=code))


# The table


def test_sandbox_codes_are_found():
    """The scan itself works: it sees refusals raised in code, not only the tables."""
    codes = sandbox_codes()
    assert {"IncompleteSignature", "InvalidApiPath", "MissingParameter", "InvalidCode",
            "ApiCallLimit"} <= codes


def test_every_gateway_code_is_classified():
    missing = sorted((sandbox_codes() | set(REFERENCE_CODES)) - set(up.CODES))
    assert not missing, f"add these codes to shim.upstream.errors.CODES: {missing}"
    for code, kind in up.CODES.items():
        assert type(up.GatewayError("refused", code=code, error_type="ISV")) is kind, code


@pytest.mark.parametrize("kind", subclasses(up.UpstreamError), ids=lambda kind: kind.__name__)
def test_every_platform_class_has_its_own_outcome(kind):
    """A new class is a decision to take in shim.errors.OUTCOMES, not an inherited default."""
    assert kind in errors.OUTCOMES


LOCAL_ANSWERS = {
    ReauthorizationNeeded("main", "IllegalRefreshToken"): (
        {"title": errors.REAUTHORIZE_TITLE, "detail": errors.REAUTHORIZE_DETAIL}, None),
    TokensUnavailable("seller 'main': the access token has expired"): (
        {"title": "Service Unavailable"}, "1"),
    RefreshUnanswered("seller 'main': the refresh failed (failed: Unavailable)"): (
        {"title": "Service Unavailable", "detail": errors.REFRESH_UNANSWERED}, "5"),
    LockTimeout("lock ('stock-lot',) busy for 15 s"): (
        {"title": "Service Unavailable", "detail": errors.LOCK_BUSY}, "1"),
    LockQueueFull("lock ('stock-lot',) already has 2 waiters"): (
        {"title": "Service Unavailable", "detail": errors.LOCK_QUEUE_FULL}, "1"),
    InstanceBusy(56): ({"title": "Service Unavailable", "detail": errors.INSTANCE_BUSY}, "1"),
    SellerBusy(28): ({"title": "Service Unavailable", "detail": errors.SELLER_BUSY}, "1"),
}
# Kong's rate-limit body, the one 429 legacy clients knew.
GATEWAY_ANSWERS = {ClientBusy(14): ({"message": "API rate limit exceeded"}, "1")}


def test_every_local_failure_has_its_answer():
    answers = {**LOCAL_ANSWERS, **GATEWAY_ANSWERS}
    assert {type(failure) for failure in answers} == set(errors.LOCAL_FAILURES)
    for failure, (body, retry_after) in answers.items():
        answer = errors.problem_for(failure)
        status = 429 if failure in GATEWAY_ANSWERS else 503
        assert (answer.status, answer.body()) == (status, body)
        assert answer.headers.get("Retry-After") == retry_after


@pytest.mark.parametrize("kind", all_transport_errors(), ids=lambda kind: kind.__name__)
def test_every_transport_error_has_an_outcome(kind):
    assert kind in errors.OUTCOMES
    outcome = errors.outcome_for(kind("no answer", api="/rss/product/get"))
    assert outcome.status == 503
    assert outcome.retry_after == 1


@pytest.mark.parametrize("message", ["Stock lot not found", "Product not found",
                                     "Pickup job NOT FOUND", "store does not exist",
                                     "no such pickup location"])
def test_business_not_found_is_404(message):
    outcome = errors.outcome_for(up.BusinessError(message))
    assert (outcome.status, outcome.title) == (404, errors.NOT_FOUND_TITLE)
    problem = errors.from_upstream(up.BusinessError(message),
                                   not_found_title=errors.PICKUP_JOB_NOT_FOUND_TITLE)
    assert (problem.status, problem.body()) == (404, {"title": errors.PICKUP_JOB_NOT_FOUND_TITLE})


@pytest.mark.parametrize("message", [
    sandbox_rss.BELOW_SCHEDULED,
    sandbox_rss.NOT_ACCESSIBLE,
    "An unexpected error occurred. If the error persists, please contact "
    "rm_partnersupport@care.lazada.com",
])
def test_other_business_failures_are_500(message):
    problem = errors.from_upstream(up.BusinessError(message))
    assert (problem.status, problem.body()) == (500, {"title": "Internal Server Error"})


@pytest.mark.parametrize("code", sorted(
    code for code in up.CODES if outcome_of_code(code).configuration))
def test_configuration_failures_log_at_error(code, caplog):
    with caplog.at_level(logging.INFO, logger="shim.errors"):
        problem = errors.from_upstream(up.GatewayError("refused", code=code, error_type="ISV"))
    assert problem.status >= 500
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert code in caplog.records[0].getMessage()


def test_other_failures_log_below_error(caplog):
    with caplog.at_level(logging.INFO, logger="shim.errors"):
        errors.from_upstream(up.GatewayError("slow", code="ServiceTimeout", error_type="ISP"))
        errors.from_upstream(up.BusinessError("Product not found"))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


@pytest.mark.parametrize("code", sorted(
    code for code in up.CODES if outcome_of_code(code).status == 429))
def test_throttling_outcomes_carry_retry_after(code):
    problem = errors.from_upstream(up.GatewayError("too many", code=code))
    assert problem.status == 429
    assert int(problem.headers["Retry-After"]) >= 1


def test_unknown_codes_go_by_error_type():
    def status(error_type):
        return errors.outcome_for(up.GatewayError("?", code="NeverSeen", error_type=error_type))

    assert status("ISP").status == 503
    assert status("SYSTEM").status == 503
    assert (status("ISV").status, status("ISV").configuration) == (500, True)
    assert status(None).status == 500
    assert status("SOMETHING").status == 500


def test_a_write_without_answer_says_the_outcome_is_unknown():
    problem = errors.from_upstream(up.UpstreamTimeout("late"), write=True)
    assert problem.status == 503
    assert problem.detail == errors.UNKNOWN_OUTCOME
    assert errors.from_upstream(up.UpstreamTimeout("late")).detail is None


# Routing and service errors through HTTP


@pytest.fixture
def http():
    session = requests.Session()
    yield session
    session.close()


def exact(answer: requests.Response, status: int, body: bytes) -> None:
    """Assert the status and the exact (compact) JSON body."""
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.content.rstrip(b"\n") == body


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/nowhere"), ("GET", "/v2/products"), ("POST", "/oauth2/token/x"),
    ("GET", "/products"), ("DELETE", "/oauth2"),
])
def test_unknown_path_outside_v1_is_kongs_404(http, shim_server, method, path):
    """No route: Kong's own 404, without asking for a token."""
    answer = http.request(method, shim_server.base_url + path, timeout=10)
    exact(answer, 404, b'{"message":"no Route matched with those values"}')


UNKNOWN_V1_PATHS = ["/v1", "/v1/", "/v1/nothing", "/v1/products/", PRODUCT + "/extra",
                    LOT_0 + "/1/2", "/v1/pickup-jobs/123/items", "/v1/stock-lots"]


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", UNKNOWN_V1_PATHS)
def test_unknown_v1_path_is_kongs_404_before_any_token_check(ledger, http, shim_server, legacy,
                                                             sandbox, method, path):
    """Kong had one route per endpoint: an unknown path never reached the token check or
    the service, with a good token, a bad one or none; nothing is counted or sent."""
    start = len(ledger(sandbox))
    for headers in ({}, {"Authorization": "Bearer not-a-token"},
                    {"Authorization": f"Bearer {legacy.token()}"}):
        answer = http.request(method, shim_server.base_url + path, headers=headers, timeout=10)
        exact(answer, 404, b'{"message":"no Route matched with those values"}')
        assert "www-authenticate" not in answer.headers
        assert "x-ratelimit-limit-second" not in answer.headers
    assert ledger(sandbox, start) == []


def test_a_known_route_whose_resource_is_missing_keeps_the_services_404(legacy):
    """The route matched, so the service answered: its Problem, not the gateway's message."""
    answer = legacy.get("/v1/products/999999")
    exact(answer, 404, b'{"title":"The requested resource could not be found"}')
    assert answer.headers["x-ratelimit-limit-second"] == "10"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/v1/pickup-locations", {"GET"}),
    ("POST", "/v1/pickup-jobs", {"GET"}),
    ("PUT", LOT_0, {"GET", "PATCH"}),
])
def test_wrong_method_is_405_with_allow(legacy, method, path, allowed):
    answer = legacy.request(method, path)
    exact(answer, 405, b'{"title":"Method Not Allowed"}')
    assert allowed <= {m.strip() for m in answer.headers["allow"].split(",")}


def test_body_over_the_limit_is_413(legacy):
    answer = legacy.patch(LOT_0, data=b'{"quantityAtPickupLocation":' + b" " * 20000 + b"1}",
                          headers={"If-Match": '"10"', "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json() == {"title": "Payload Too Large",
                             "detail": "the body must not exceed 16384 bytes"}


def test_body_at_the_limit_is_read(legacy):
    head = b'{"quantityAtPickupLocation":'
    body = head + b" " * (16384 - len(head) - 3) + b"10}"
    assert len(body) == 16384
    answer = legacy.patch(LOT_0, data=body,
                          headers={"If-Match": '"10"', "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text


@pytest.fixture
def boom_server(settings):
    """The shim plus one view that fails unexpectedly."""
    app = create_app(settings)

    def explode():
        raise RuntimeError("boom: internal detail 0xdeadbeef")

    app.add_url_rule("/v1/_boom", "boom", explode)
    with LocalServer(app) as running:
        yield running
    app.extensions["shim"].upstream.session.close()


def test_unexpected_view_failure_is_a_bare_500(http, boom_server, test_secrets, caplog):
    token = http.post(boom_server.base_url + "/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret}).json()["access_token"]
    with caplog.at_level(logging.ERROR):
        answer = http.get(boom_server.base_url + "/v1/_boom", timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
    exact(answer, 500, b'{"title":"Internal Server Error"}')
    for leak in ("Traceback", "RuntimeError", "deadbeef", "explode"):
        assert leak not in answer.text
    logged = [r for r in caplog.records if r.exc_info and r.name == "shim.legacy"]
    assert logged and logged[0].exc_info[0] is RuntimeError
    assert "deadbeef" in caplog.text  # the trace went to the log instead


class FailingStore(MemoryStore):
    """A store whose backend fails on token reads and writes."""

    def save_token(self, digest, token):
        raise OSError("store down")

    def find_caller(self, digest, now):
        raise OSError("store down")


def test_gateway_failures_are_kongs_500(make_settings, http, test_secrets, sandbox, caplog):
    settings = make_settings(sandbox.api_url)
    app = create_app(settings, store=FailingStore(settings))
    with LocalServer(app) as server, caplog.at_level(logging.ERROR):
        token = http.post(server.base_url + "/oauth2/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": "full",
            "client_secret": test_secrets.client_secret})
        read = http.get(server.base_url + PRODUCT, timeout=10,
                        headers={"Authorization": "Bearer some-token"})
    app.extensions["shim"].upstream.session.close()
    for answer in (token, read):
        exact(answer, 500, b'{"message":"An unexpected error occurred"}')
        assert "store down" not in answer.text
    assert sum(1 for r in caplog.records if r.exc_info and r.name == "shim.legacy") == 2


# Upstream failures end to end, through the sandbox's fault injection


@pytest.fixture
def leaks(test_secrets, caplog):
    """Collect response texts and extra secrets; fail the test if any secret shows up."""
    caplog.set_level(logging.DEBUG)
    seen = {"texts": [], "secrets": list(test_secrets.all())}
    yield seen
    texts = seen["texts"] + [caplog.text] + [r.getMessage() for r in caplog.records]
    for secret in seen["secrets"]:
        assert not any(secret in text for text in texts), "a secret leaked"


def inject(sandbox, kind: str, **rule) -> None:
    answer = requests.post(sandbox.base_url + "/_sandbox/faults",
                           json={"api": "*", "kind": kind, **rule}, timeout=10)
    assert answer.status_code == 201, answer.text


def read_product(legacy, leaks) -> requests.Response:
    answer = legacy.get(PRODUCT)
    leaks["texts"].append(answer.text)
    leaks["texts"].append(repr(dict(answer.headers)))
    leaks["secrets"].extend(legacy._tokens.values())
    return answer


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and r.name == "shim.errors"]


def test_the_chain_works_without_faults(legacy, leaks, caplog):
    assert read_product(legacy, leaks).json()["rpc"] == 100150
    # The scanned log holds the signed upstream URLs, redacted: the leak check has material.
    assert "access_token=[REDACTED]" in caplog.text


def test_wrong_app_secret_is_a_500_and_an_error_log(legacy_client, make_settings, sandbox,
                                                    leaks, caplog):
    wrong = "app-" + secrets.token_hex(16)
    leaks["secrets"].append(wrong)
    app = create_app(make_settings(sandbox.api_url,
                                   app_secret=wrong))
    with LocalServer(app) as server:
        legacy = legacy_client(server.base_url)
        try:
            answer = read_product(legacy, leaks)
        finally:
            legacy.close()
    app.extensions["shim"].upstream.session.close()
    assert (answer.status_code, answer.json()) == (500, {"title": "Internal Server Error"})
    assert any("IncompleteSignature" in line for line in error_lines(caplog))


def test_api_call_limit_is_429_with_retry_after(legacy, sandbox, leaks):
    inject(sandbox, "ApiCallLimit")
    answer = read_product(legacy, leaks)
    assert (answer.status_code, answer.json()) == (429, {"title": "Too Many Requests"})
    assert answer.headers["retry-after"] == "1"


@pytest.mark.parametrize("kind", ["ServiceTimeout", "http500", "http503", "html", "truncated",
                                  "reset"])
def test_platform_trouble_is_503(legacy, sandbox, leaks, kind):
    inject(sandbox, kind)
    answer = read_product(legacy, leaks)
    assert (answer.status_code, answer.json()) == (503, {"title": "Service Unavailable"})
    assert answer.headers["retry-after"] == "1"


def test_read_slower_than_the_timeout_is_503(legacy_client, make_settings, sandbox, leaks):
    app = create_app(make_settings(sandbox.api_url,
                                   read_timeout_s=0.3))
    inject(sandbox, "sleep", latency_ms=5000)  # the sandbox wakes early when it stops
    with LocalServer(app) as server:
        legacy = legacy_client(server.base_url)
        try:
            started = time.monotonic()
            answer = read_product(legacy, leaks)
            elapsed = time.monotonic() - started
        finally:
            legacy.close()
    app.extensions["shim"].upstream.session.close()
    assert (answer.status_code, answer.json()) == (503, {"title": "Service Unavailable"})
    assert elapsed < 4


def test_refused_seller_token_is_a_configuration_500(legacy, sandbox, leaks, caplog):
    """Today IllegalAccessToken is the operator's to fix; a later issue adds refresh-and-replay."""
    inject(sandbox, "IllegalAccessToken")
    answer = read_product(legacy, leaks)
    assert (answer.status_code, answer.json()) == (500, {"title": "Internal Server Error"})
    assert any("IllegalAccessToken" in line for line in error_lines(caplog))
