"""What a legacy client reads off the socket from each real entry point: status lines with
nginx's RFC reason phrases, and the gateway's 404 for a path that matches no route.

Each entry point runs as operators run it: ``redmart-shim serve`` (gunicorn with the
production settings), ``serve --dev`` (Werkzeug's server) and ``demo``. Every answer is read
as raw bytes from a fresh connection, so the status line is the one the server wrote.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import requests
from served import RawAnswer, clean_env, exchange, free_port, running

from shim.sandbox import SandboxServer

PRODUCT = "/v1/products/100150"
LOT_0 = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
NO_ROUTE = {"message": "no Route matched with those values"}
NOT_FOUND = {"title": "The requested resource could not be found"}
DAY_MS = 86_400_000


@dataclass(frozen=True)
class EntryPoint:
    """A running shim: where it listens, its client's credentials and its sandbox."""

    name: str
    base_url: str
    client_id: str
    client_secret: str
    sandbox_url: str


@pytest.fixture(scope="module")
def sandbox(sandbox_config) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox_config()) as server:
        yield server


@pytest.fixture(scope="module", params=["serve", "serve --dev", "demo"])
def entry_point(write_declarative_config, request, sandbox, test_secrets,
                tmp_path_factory) -> Iterator[EntryPoint]:
    """The shim started by one of its commands, on a real port."""
    where = tmp_path_factory.mktemp(request.param.replace(" ", "").replace("-", ""))
    port = free_port()
    if request.param == "demo":
        sandbox_port = free_port()
        args = ["demo", "--port", str(port), "--sandbox-port", str(sandbox_port)]
        with running(args, clean_env(), port, where / "demo.log") as base_url:
            yield EntryPoint("demo", base_url, "demo-client", "demo-secret",
                             f"http://127.0.0.1:{sandbox_port}")
        return
    config = where / "shim.toml"
    write_declarative_config(config, sandbox.api_url)
    env = clean_env(SHIM_APP_SECRET=test_secrets.app_secret,
                    SHIM_MAIN_ACCESS_TOKEN=test_secrets.access_token, SHIM_READ_RETRIES="0")
    args = ["serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"]
    if request.param == "serve --dev":
        args.append("--dev")
    with running(args, env, port, where / "shim.log") as base_url:
        yield EntryPoint(request.param, base_url, "full", test_secrets.client_secret,
                         sandbox.base_url)


@pytest.fixture(scope="module")
def token(entry_point) -> str:
    answer = token_call(entry_point)
    assert answer.status_line == "200 OK", answer
    return str(answer.json()["access_token"])


def token_call(entry_point: EntryPoint) -> RawAnswer:
    form = urlencode({"grant_type": "client_credentials", "client_id": entry_point.client_id,
                      "client_secret": entry_point.client_secret}).encode()
    return exchange(entry_point.base_url, "POST", "/oauth2/token", body=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})


def call(entry_point: EntryPoint, method: str, path: str, token: str | None = None,
         headers: dict[str, str] | None = None, body: bytes = b"") -> RawAnswer:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return exchange(entry_point.base_url, method, path, headers=sent, body=body)


def patch(entry_point: EntryPoint, token: str, if_match: str, quantity: int) -> RawAnswer:
    return call(entry_point, "PATCH", LOT_0, token, body=b'{"quantityAtPickupLocation": %d}'
                % quantity, headers={"If-Match": if_match,
                                     "Content-Type": "application/merge-patch+json"})


def test_the_token_call_says_200_ok(entry_point):
    answer = token_call(entry_point)
    assert answer.status_line == "200 OK"
    assert answer.json()["token_type"] == "bearer"


def test_status_lines_carry_the_rfc_reason_phrases(entry_point, token):
    """Each status a legacy client meets, provoked for real, as the line the server wrote."""
    now_ms = int(time.time() * 1000)
    seen = {
        "200 OK": call(entry_point, "GET", PRODUCT, token),
        "400 Bad Request": call(entry_point, "GET", "/v1/products?pageSize=0", token),
        "401 Unauthorized": call(entry_point, "GET", PRODUCT),
        "404 Not Found": call(entry_point, "GET", "/v1/products/999999", token),
        "405 Method Not Allowed": call(entry_point, "DELETE", "/v1/products", token),
        # The documented lot holds 10 with 2 scheduled for pickup: 1 is a conflict.
        "409 Conflict": patch(entry_point, token, '"10"', 1),
        "412 Precondition Failed": patch(entry_point, token, '"999"', 5),
        "422 Unprocessable Entity": call(
            entry_point, "GET", f"/v1/pickup-jobs?from={now_ms}&till={now_ms - DAY_MS}", token),
    }
    for expected, answer in seen.items():
        assert answer.status_line == expected, (expected, answer)


def test_a_refused_platform_call_says_503_service_unavailable(entry_point, token):
    faults = entry_point.sandbox_url + "/_sandbox/faults"
    requests.post(faults, json={"api": "/rss/product/get", "kind": "SYSTEM_ERROR", "times": 5},
                  timeout=5).raise_for_status()
    try:
        answer = call(entry_point, "GET", PRODUCT, token)
    finally:
        requests.delete(faults, timeout=5).raise_for_status()
    assert answer.status_line == "503 Service Unavailable"


def test_a_burst_past_the_limit_says_429_too_many_requests(entry_point, token):
    """The pickup-jobs list allows 1 call a second; five in a row cannot all pass."""
    path = f"/v1/pickup-jobs?from={int(time.time() * 1000) - DAY_MS}"
    lines = [call(entry_point, "GET", path, token).status_line for _ in range(5)]
    assert "429 Too Many Requests" in lines
    assert set(lines) <= {"200 OK", "429 Too Many Requests"}


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_an_unknown_v1_path_is_the_gateways_404_before_any_token_check(entry_point, token,
                                                                       method):
    for bearer in (None, "not-a-token", token):
        answer = call(entry_point, method, "/v1/nothing/here", bearer)
        assert answer.status_line == "404 Not Found"
        assert answer.json() == NO_ROUTE
        assert "www-authenticate" not in answer.headers


def test_a_known_route_whose_resource_is_missing_is_the_services_404(entry_point, token):
    answer = call(entry_point, "GET", "/v1/products/999999", token)
    assert answer.status_line == "404 Not Found"
    assert answer.json() == NOT_FOUND
    assert call(entry_point, "GET", "/v1/products/999999").status_line == "401 Unauthorized"
