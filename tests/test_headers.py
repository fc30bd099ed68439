"""Header-name case on the wire (shim.legacy.headers), read from raw response bytes.

``requests`` folds header names, so these tests read the socket themselves. The server's own
headers (``Server``, ``Date``, ``Connection``, ``Transfer-Encoding``) are written by the HTTP
server after the app, outside its reach, and are left out of the checks.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from shim.app import create_app
from shim.serving import LocalServer

LOT_0 = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
SERVER_HEADERS = {"server", "date", "connection", "transfer-encoding"}


def raw_exchange(server, request_head: str, body: bytes = b"") -> tuple[int, list[str], str]:
    """Send one request; return the status, the header names exactly as sent, and the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head.encode("latin-1") + b"\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):  # the server closes after each answer
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    names = [line.split(":", 1)[0] for line in lines[1:]]
    return int(lines[0].split()[1]), names, payload.decode()


def request_head(method: str, path: str, *headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: shim.test", "Connection: close", *headers]
    return "\r\n".join(lines) + "\r\n"


def app_headers(names: list[str]) -> list[str]:
    return [name for name in names if name.lower() not in SERVER_HEADERS]


@pytest.fixture
def token(legacy):
    return legacy.token()


@pytest.fixture
def serve(make_settings, sandbox):
    """Start a shim with settings overrides and a clock; stopped after the test."""
    started = []

    def start(*, clock=time.time, **overrides):
        app = create_app(make_settings(sandbox.api_url,
                                       **overrides), clock=clock)
        started.append(LocalServer(app).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()
        server.app.extensions["shim"].upstream.session.close()


def fetch_token(server, secret: str) -> tuple[list[str], str]:
    """Return the token answer's header names and the token, over a raw socket."""
    form = f"grant_type=client_credentials&client_id=full&client_secret={secret}".encode()
    status, names, body = raw_exchange(server, request_head(
        "POST", "/oauth2/token", "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(form)}"), form)
    assert status == 200
    return names, json.loads(body)["access_token"]


def test_default_names_are_lower_case(shim_server, token):
    status, names, _ = raw_exchange(
        shim_server, request_head("GET", LOT_0, f"Authorization: Bearer {token}"))
    assert status == 200
    emitted = app_headers(names)
    assert {"etag", "content-type", "content-length", "x-ratelimit-limit-second",
            "x-ratelimit-remaining-second"} <= set(emitted)
    assert emitted == [name.lower() for name in emitted]


@pytest.mark.parametrize(("head", "expected"), [
    (request_head("GET", "/v1/pickup-locations"), {"www-authenticate"}),  # 401
    (request_head("DELETE", "/v1/pickup-locations", "Authorization: Bearer {token}"),
     {"allow", "x-ratelimit-limit-second"}),  # 405
    (request_head("GET", "/v1/products/abc", "Authorization: Bearer {token}"),
     {"content-type", "x-ratelimit-remaining-second"}),  # the service's 400
    (request_head("GET", "/nowhere"), {"content-type"}),  # Kong's 404
])
def test_error_answers_are_lower_case_too(shim_server, token, head, expected):
    status, names, _ = raw_exchange(shim_server, head.format(token=token))
    assert status >= 400
    emitted = app_headers(names)
    assert expected <= set(emitted)
    assert emitted == [name.lower() for name in emitted]


def test_token_answer_is_lower_case(shim_server, test_secrets):
    names, _ = fetch_token(shim_server, test_secrets.client_secret)
    emitted = app_headers(names)
    assert {"cache-control", "pragma", "content-type"} <= set(emitted)
    assert emitted == [name.lower() for name in emitted]


def test_rate_limited_answer_is_lower_case(serve, test_secrets):
    now = time.time()
    server = serve(clock=lambda: now)  # frozen: both calls fall in one second
    _, token = fetch_token(server, test_secrets.client_secret)
    since = int((now - 86400) * 1000)
    head = request_head("GET", f"/v1/pickup-jobs?from={since}", f"Authorization: Bearer {token}")
    assert raw_exchange(server, head)[0] == 200  # the list allows one call a second
    status, names, _ = raw_exchange(server, head)
    assert status == 429
    emitted = app_headers(names)
    assert {"retry-after", "x-ratelimit-limit-second"} <= set(emitted)
    assert emitted == [name.lower() for name in emitted]


def test_canonical_case_keeps_names_as_set(serve, test_secrets):
    server = serve(header_case="canonical")
    names, token = fetch_token(server, test_secrets.client_secret)
    assert {"Cache-Control", "Pragma", "Content-Type"} <= set(names)
    status, names, _ = raw_exchange(server,
                                    request_head("GET", LOT_0, f"Authorization: Bearer {token}"))
    assert status == 200
    assert {"ETag", "Content-Type", "X-RateLimit-Limit-second",
            "X-RateLimit-Remaining-second"} <= set(names)
