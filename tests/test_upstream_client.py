"""``LazadaClient`` over real HTTP: the wire form, retries, deadlines, errors and secrecy.

Two upstreams: the sandbox (a working platform, for what it can do) and ``Recorder``, a small
WSGI app on an ephemeral port that records each request and answers from a script, for
shapes the sandbox cannot produce (504, Retry-After, stalls, JSON arrays, echoed secrets).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
import requests
from werkzeug.wrappers import Request

from shim.serving import LocalServer
from shim.upstream import signing
from shim.upstream.client import LazadaAuth, LazadaClient, SellerCredentials, to_param_text
from shim.upstream.errors import (
    BusinessError,
    GatewayError,
    MalformedResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)

APP_KEY = "100001"
STORE_ID = "414"
NOW = 1_700_000_000.0
FORM = "application/x-www-form-urlencoded"
OK = {"code": "0", "request_id": "rid-1", "result": {"success": True, "data": []}}

# The reference's made-up credentials (section 2.1): documentation values, not secrets.
REF_SECRET = "shim-test-secret-0123456789abcdef"
REF_SELLER = SellerCredentials(STORE_ID, "50000000000testAccessToken")


# --- a recording platform ------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the platform received it."""

    method: str
    path: str
    query: str
    body: str
    content_type: str | None
    remote_port: str
    at: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        """Return every parameter, from the query and (for a form) the body."""
        values = dict(parse_qsl(self.query, keep_blank_values=True))
        if self.content_type == FORM:
            values.update(parse_qsl(self.body, keep_blank_values=True))
        return values


Action = Callable[["Recorder", dict, Callable], Iterable[bytes]]


class Recorder:
    """A WSGI platform that records requests and plays ``script`` (then answers ``OK``)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: list[Action] = []
        self.release = threading.Event()  # set at teardown: stalled handlers finish at once
        self.url = ""
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            self.seen.append(Seen(
                method=request.method, path=request.path,
                query=environ.get("QUERY_STRING", ""),
                body=request.get_data(as_text=True),
                content_type=request.mimetype or None,
                remote_port=str(environ.get("REMOTE_PORT")), at=time.monotonic(),
                headers=dict(request.headers)))
            action = self.script.pop(0) if self.script else answer(OK)
        return action(self, environ, start_response)

    def wait(self, seconds: float) -> None:
        self.release.wait(seconds)


def answer(body, status: int = 200, headers=()) -> Action:
    """Answer ``body`` (JSON unless bytes) with ``status``."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind = "application/json" if not isinstance(body, bytes) else "text/html"

    def act(recorder, environ, start_response):
        start_response(f"{status} X", [("Content-Type", kind),
                                       ("Content-Length", str(len(payload))), *headers])
        return [payload]
    return act


def reset() -> Action:
    """Drop the connection without an answer (a TCP reset)."""
    def act(recorder, environ, start_response):
        sock = environ["werkzeug.socket"]
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionResetError("dropped on purpose")
    return act


def stall(seconds: float) -> Action:
    """Say nothing for ``seconds``, then answer ``OK``."""
    def act(recorder, environ, start_response):
        recorder.wait(seconds)
        return answer(OK)(recorder, environ, start_response)
    return act


def stall_body(seconds: float) -> Action:
    """Send the headers and half the body, then say nothing for ``seconds``."""
    payload = json.dumps(OK).encode()

    def act(recorder, environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(payload)))])
        yield payload[:10]
        recorder.wait(seconds)
        yield payload[10:]
    return act


def trickle(interval: float) -> Action:
    """Send a valid answer one byte every ``interval`` seconds (each read is quick)."""
    payload = json.dumps(OK).encode()

    def act(recorder, environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(payload)))])
        for index in range(len(payload)):
            if recorder.release.is_set():
                return
            yield payload[index:index + 1]
            recorder.wait(interval)
    return act


def chunked(pieces: list[bytes]) -> Action:
    """Stream ``pieces`` with chunked transfer (no length announced)."""
    def act(recorder, environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return iter(pieces)
    return act


@pytest.fixture
def platform():
    recorder = Recorder()
    with LocalServer(recorder) as server:
        recorder.url = server.base_url + "/rest"
        try:
            yield recorder
        finally:
            recorder.release.set()


@pytest.fixture
def make_client(test_secrets):
    """Build clients (closed at teardown); defaults: fixed clock, no retries, short timeouts."""
    made: list[LazadaClient] = []

    def make(url: str, **options) -> LazadaClient:
        values = dict(app_key=APP_KEY, app_secret=test_secrets.app_secret, api_url=url,
                      auth_url=url, read_retries=0, backoff_factor=0.01, connect_timeout=1.0,
                      read_timeout=2.0, clock=lambda: NOW)
        values.update(options)
        client = LazadaClient(**values)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def seller(test_secrets):
    return SellerCredentials(STORE_ID, test_secrets.access_token)


@pytest.fixture
def closed_port():
    """A local port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unaccepting_port():
    """A listening port whose backlog is full, so a connect times out (Linux behaviour)."""
    with socket.socket() as server, socket.socket() as filler, socket.socket() as probe:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler.settimeout(1)
        filler.connect(("127.0.0.1", port))
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            yield port
            return
        except OSError:
            pass
        pytest.skip("this kernel answers connects beyond a full backlog")


def elapsed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    """Return how long ``call`` ran and what it raised."""
    started = time.perf_counter()
    try:
        call()
    except Exception as error:
        return time.perf_counter() - started, error
    return time.perf_counter() - started, None


# --- wire form: the reference's known answers, sent by the client ---------------------------


def test_get_sends_every_parameter_in_the_query_with_the_documented_sign(platform, make_client):
    client = make_client(platform.url, app_secret=REF_SECRET)
    client.rss("/rss/products/get", REF_SELLER,
               {"page": 1, "pageSize": 10, "pickupLocationIds": [1837, 1838]})
    (seen,) = platform.seen
    assert (seen.method, seen.path, seen.body, seen.content_type) == (
        "GET", "/rest/rss/products/get", "", None)
    assert seen.params == {
        "storeId": "414", "page": "1", "pageSize": "10", "pickupLocationIds": "[1837,1838]",
        "app_key": APP_KEY, "timestamp": "1700000000000", "sign_method": "sha256",
        "access_token": REF_SELLER.access_token,
        "sign": "391437A17BDABE1C5D61BA349642532B50FECFC9CFA1F6B42144C57333CE02CC"}


def test_post_sends_every_parameter_in_a_form_body_with_the_documented_sign(platform,
                                                                           make_client):
    client = make_client(platform.url, app_secret=REF_SECRET)
    client.rss("/rss/stockLot/update", REF_SELLER,
               {"pickupLocationId": 1837, "productId": 1000152, "stockLotId": 0,
                "stockLotUpdateDTO": {"quantityAtPickupLocation": 10}}, method="POST")
    (seen,) = platform.seen
    assert (seen.method, seen.path, seen.query, seen.content_type) == (
        "POST", "/rest/rss/stockLot/update", "", FORM)
    assert seen.params == {
        "storeId": "414", "pickupLocationId": "1837", "productId": "1000152",
        "stockLotId": "0", "stockLotUpdateDTO": '{"quantityAtPickupLocation":10}',
        "app_key": APP_KEY, "timestamp": "1700000000000", "sign_method": "sha256",
        "access_token": REF_SELLER.access_token,
        "sign": "2DD4AF25DE65B340DFDF75E57B536C8532B5D239F35C984A1DD97766177BE5F7"}


@pytest.mark.parametrize(("call", "api_path", "name", "value", "expected"), [
    ("create_token", "/auth/token/create", "code", "0_100001_testAuthCode",
     "3686D5079EC746882B1B7B0936343CA1D4B1A5C4F248C907E9AA1DE96A708E18"),
    ("refresh_token", "/auth/token/refresh", "refresh_token", "50001000000testRefreshToken",
     "4790647FCD6E472C07B573019DD1279DE2A1835B474B217B047F548A135F5329"),
])
def test_token_calls_post_without_access_token_and_nothing_in_the_url(
        platform, make_client, call, api_path, name, value, expected):
    client = make_client(platform.url, app_secret=REF_SECRET)
    document = getattr(client, call)(value)
    assert document["code"] == "0"
    (seen,) = platform.seen
    assert (seen.method, seen.path, seen.query, seen.content_type) == (
        "POST", "/rest" + api_path, "", FORM)
    assert seen.params == {name: value, "app_key": APP_KEY, "timestamp": "1700000000000",
                           "sign_method": "sha256", "sign": expected}


def test_empty_values_are_dropped_before_signing(platform, make_client):
    """Only storeId is left, so the sign is the reference's "dropped" value."""
    client = make_client(platform.url, app_secret=REF_SECRET)
    client.rss("/rss/pickup-jobs/get", REF_SELLER,
               {"statuses": "", "from": None, "pickupLocationIds": [], "filter": {}, "ids": ()})
    (seen,) = platform.seen
    assert sorted(seen.params) == ["access_token", "app_key", "sign", "sign_method", "storeId",
                                   "timestamp"]
    assert seen.params["sign"] == (
        "06C7D9760F06E78BD470DD9D78A70B36372106BD926FAA954AF72DC41E23EF04")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_received_parameters_verify_with_the_app_secret(platform, make_client, seller,
                                                        test_secrets, method):
    client = make_client(platform.url)
    params = {"title": "Sữa tươi 1L", "odd": "a b+c&d=e%20;", "on": True, "off": False,
              "dto": {"name": "Sữa", "n": [1, 2]}, "zero": 0}
    client.rss("/rss/x/get", seller, params, method=method)
    received = platform.seen[0].params
    assert signing.verify("/rss/x/get", received, test_secrets.app_secret)
    assert not signing.verify("/rss/x/get", received, "another-secret")
    assert received["storeId"] == STORE_ID
    assert received["access_token"] == test_secrets.access_token
    assert (received["on"], received["off"], received["zero"]) == ("true", "false", "0")
    assert received["dto"] == '{"name":"Sữa","n":[1,2]}'
    assert (received["title"], received["odd"]) == (params["title"], params["odd"])


def test_timestamp_is_whole_milliseconds_from_the_injected_clock(platform, make_client,
                                                                 seller):
    make_client(platform.url, clock=lambda: 1_700_000_000.9999).rss("/rss/x/get", seller)
    assert platform.seen[0].params["timestamp"] == "1700000000999"


def test_method_is_case_insensitive(platform, make_client, seller):
    make_client(platform.url).rss("/rss/x/get", seller, {"a": 1}, method="post")
    (seen,) = platform.seen
    assert (seen.method, seen.query, seen.params["a"], seen.params["storeId"]) == (
        "POST", "", "1", STORE_ID)


@pytest.mark.parametrize(("params", "method"), [
    ({}, "PUT"),
    ({"storeId": "415"}, "GET"),
    ({"access_token": "x"}, "GET"),
    ({"sign": "x"}, "POST"),
    ({"timestamp": "1"}, "GET"),
])
def test_refuses_calls_it_cannot_sign_honestly_without_sending(platform, make_client, seller,
                                                              params, method):
    with pytest.raises(ValueError, match=r"method|storeId|system"):
        make_client(platform.url).rss("/rss/x/get", seller, params, method=method)
    assert platform.seen == []


@pytest.mark.parametrize(("method", "carrier"), [
    ("GET", {"params": {"extra": "1"}}),
    ("POST", {"data": {"extra": "1"}}),
    ("POST", {"params": {"extra": "1"}}),
])
def test_the_signer_refuses_a_request_carrying_parameters_it_did_not_sign(method, carrier):
    auth = LazadaAuth("/rss/x/get", {"a": "1"}, app_key=APP_KEY, app_secret=REF_SECRET,
                      access_token=None, clock=lambda: 1_700_000_000.0)
    request = requests.Request(method, "http://127.0.0.1:9/rest/rss/x/get", auth=auth,
                               **carrier)
    with pytest.raises(ValueError, match="signature would not cover"):
        request.prepare()


def test_the_sessions_headers_and_cookies_go_with_every_call(platform, make_client, seller):
    """Calls skip Session.request's merges, yet carry what Session.prepare_request would."""
    platform.script.append(answer(OK, headers=[("Set-Cookie", "lb=node-2; Path=/")]))
    client = make_client(platform.url)
    client.session.headers["X-Team"] = "redmart"
    client.rss("/rss/x/get", seller)
    client.rss("/rss/x/get", seller, method="POST")
    first, second = platform.seen
    assert "Cookie" not in first.headers and second.headers["Cookie"] == "lb=node-2"
    for seen in (first, second):
        assert seen.headers["X-Team"] == "redmart"
        assert seen.headers["User-Agent"] == requests.utils.default_user_agent()


def test_to_param_text():
    assert [to_param_text(v) for v in (None, "", [], {}, (), True, False, 0, 7, "x")] == [
        None, None, None, None, None, "true", "false", "0", "7", "x"]
    assert to_param_text({"quantityAtPickupLocation": 10}) == '{"quantityAtPickupLocation":10}'
    assert to_param_text((1837, 1838)) == "[1837,1838]"


class KeepAliveHandler(BaseHTTPRequestHandler):
    """Answers OK on one kept-alive connection (werkzeug's server closes every connection)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.ports.append(self.client_address[1])
        body = json.dumps(OK).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        """Stay quiet: the request line holds the query string."""


@pytest.fixture
def keep_alive_platform():
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveHandler)
    server.ports = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_connections_are_pooled(keep_alive_platform, make_client, seller):
    """The body is read by the client itself: the connection must still go back to the pool."""
    client = make_client(f"http://127.0.0.1:{keep_alive_platform.server_port}/rest")
    for _ in range(3):
        assert client.rss("/rss/x/get", seller).request_id == "rid-1"
    assert len(keep_alive_platform.ports) == 3
    assert len(set(keep_alive_platform.ports)) == 1


PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                   "all_proxy", "NO_PROXY", "no_proxy")


def test_a_proxy_in_the_environment_carries_the_calls(platform, make_client, seller,
                                                      monkeypatch):
    # The client reads the environment once, when it is made (not on every call).
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", platform.url.removesuffix("/rest"))
    client = make_client("http://platform.invalid/rest")
    monkeypatch.delenv("HTTP_PROXY")
    client.rss("/rss/x/get", seller, {"page": 1})
    (seen,) = platform.seen  # platform.invalid does not resolve: only the proxy could answer
    assert (seen.path, seen.params["page"]) == ("/rest/rss/x/get", "1")


def test_no_proxy_in_the_environment_is_honoured(platform, make_client, seller, monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = make_client(platform.url)
    assert client.rss("/rss/x/get", seller).request_id == "rid-1"
    assert len(platform.seen) == 1


def test_chunked_and_gzipped_answers_are_read(platform, make_client, seller):
    payload = json.dumps({**OK, "result": {"success": True, "data": ["x" * 50] * 2000}})
    pieces = [payload[i:i + 1000].encode() for i in range(0, len(payload), 1000)]
    platform.script = [
        chunked(pieces),
        answer(gzip.compress(payload.encode()), 200, [("Content-Encoding", "gzip")])]
    client = make_client(platform.url)
    assert len(client.rss("/rss/x/get", seller).data) == 2000
    assert len(client.rss("/rss/x/get", seller).data) == 2000


def test_the_sandbox_accepts_the_clients_signatures(sandbox, make_client, seller,
                                                    test_secrets):
    client = make_client(sandbox.api_url, clock=time.time)
    page = client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 2})
    assert len(page.data) == 2
    assert page.request_id
    tokens = client.refresh_token(test_secrets.refresh_token)
    assert tokens["code"] == "0"
    assert tokens["access_token"] != test_secrets.access_token


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_is_retried_on_a_gateway_status(platform, make_client, seller, status):
    platform.script = [answer(b"<html>busy</html>", status)] * 2
    result = make_client(platform.url, read_retries=2).rss("/rss/x/get", seller)
    assert result.request_id == "rid-1"
    assert len(platform.seen) == 3


def test_get_is_retried_on_a_reset(platform, make_client, seller):
    platform.script = [reset(), reset()]
    make_client(platform.url, read_retries=2).rss("/rss/x/get", seller)
    assert len(platform.seen) == 3


def test_get_gives_up_after_read_retries_with_the_last_status(platform, make_client, seller):
    platform.script = [answer(b"<html>busy</html>", 504)] * 5
    with pytest.raises(UpstreamUnavailable) as caught:
        make_client(platform.url, read_retries=2).rss("/rss/x/get", seller)
    assert caught.value.http_status == 504
    assert len(platform.seen) == 3


def test_get_gives_up_after_read_retries_of_resets(platform, make_client, seller):
    platform.script = [reset()] * 5
    with pytest.raises(UpstreamUnavailable):
        make_client(platform.url, read_retries=2).rss("/rss/x/get", seller)
    assert len(platform.seen) == 3


def test_get_backs_off_between_retries(platform, make_client, seller):
    """urllib3 retries the first failure at once, then waits backoff_factor * 2."""
    platform.script = [answer(b"busy", 503)] * 2
    make_client(platform.url, read_retries=2, backoff_factor=0.1).rss("/rss/x/get", seller)
    first, second, third = (seen.at for seen in platform.seen)
    assert third - second >= 0.2
    assert third - first < 1.5


def test_a_500_is_the_backends_answer_and_not_retried(platform, make_client, seller):
    platform.script = [answer(b"<html>oops</html>", 500)] * 3
    with pytest.raises(UpstreamUnavailable) as caught:
        make_client(platform.url, read_retries=2).rss("/rss/x/get", seller)
    assert caught.value.http_status == 500
    assert len(platform.seen) == 1


def test_retry_after_does_not_stretch_the_wait(platform, make_client, seller):
    platform.script = [answer(b"busy", 503, [("Retry-After", "30")])] * 2
    duration, error = elapsed(
        lambda: make_client(platform.url, read_retries=2).rss("/rss/x/get", seller))
    assert error is None
    assert duration < 2
    assert len(platform.seen) == 3


@pytest.mark.parametrize("failure", [lambda: answer(b"busy", 503), reset],
                         ids=["503", "reset"])
def test_post_is_attempted_exactly_once(platform, make_client, seller, failure):
    platform.script = [failure()] * 3
    with pytest.raises(UpstreamUnavailable):
        make_client(platform.url, read_retries=2).rss("/rss/x/update", seller, {"q": 1},
                                                      method="POST")
    assert len(platform.seen) == 1


def test_a_call_that_never_connected_is_sent_again(closed_port, make_client, seller):
    """Nothing reached the platform, so trying a write again cannot apply it twice."""
    slept = []
    records = []
    client = make_client(f"http://127.0.0.1:{closed_port}/rest", read_retries=2,
                         sleep=slept.append, observers=[records.append])
    with pytest.raises(UpstreamUnreachable):
        client.rss("/rss/x/update", seller, {"q": 1}, method="POST")
    assert [record.retries for record in records] == [2]
    assert len(slept) == 2


def test_token_calls_are_never_retried(platform, make_client):
    platform.script = [answer(b"busy", 503)] * 3
    with pytest.raises(UpstreamUnavailable):
        make_client(platform.url, read_retries=2).refresh_token("rt-value")
    assert len(platform.seen) == 1


def sandbox_fault(sandbox, **rule) -> None:
    requests.post(sandbox.base_url + "/_sandbox/faults", json=rule, timeout=5).raise_for_status()


def sandbox_calls(sandbox, api: str) -> list[dict]:
    response = requests.get(sandbox.base_url + "/_sandbox/ledger", timeout=5)
    return [entry for entry in response.json()["entries"] if entry["api"] == api]


def test_sandbox_get_recovers_from_503_and_reset(sandbox, make_client, seller):
    sandbox_fault(sandbox, api="/rss/products/get", kind="http503", times=1)
    sandbox_fault(sandbox, api="/rss/products/get", kind="reset", times=1)
    client = make_client(sandbox.api_url, clock=time.time, read_retries=2)
    assert client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 1}).data
    assert [entry.get("fault") for entry in sandbox_calls(sandbox, "/rss/products/get")] == [
        "http503", "reset", None]


def test_sandbox_lost_answer_to_an_update_is_not_replayed(sandbox, make_client, seller):
    """The write happened; replaying it blindly is the caller's decision, not the client's."""
    sandbox_fault(sandbox, api="/rss/stockLot/update", kind="lost_response", times=1)
    client = make_client(sandbox.api_url, clock=time.time, read_retries=2)
    with pytest.raises(UpstreamUnavailable):
        client.rss("/rss/stockLot/update", seller,
                   {"productId": 100150, "pickupLocationId": 23789, "stockLotId": 0,
                    "stockLotUpdateDTO": {"quantityAtPickupLocation": 42}}, method="POST")
    (entry,) = sandbox_calls(sandbox, "/rss/stockLot/update")
    assert entry["fault"] == "lost_response"


# --- deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_silent_platform_is_a_timeout_within_the_deadline_and_not_retried(
        platform, make_client, seller, method):
    platform.script = [stall(5)] * 3
    client = make_client(platform.url, read_timeout=0.3, read_retries=2)
    duration, error = elapsed(lambda: client.rss("/rss/x/get", seller, method=method))
    assert isinstance(error, UpstreamTimeout)
    assert duration < 0.9
    assert len(platform.seen) == 1


def test_a_body_that_stops_is_a_timeout(platform, make_client, seller):
    platform.script = [stall_body(5)]
    duration, error = elapsed(
        lambda: make_client(platform.url, read_timeout=0.3).rss("/rss/x/get", seller))
    assert isinstance(error, UpstreamTimeout)
    assert duration < 0.9


def test_a_trickling_body_is_a_timeout_within_about_the_deadline(platform, make_client,
                                                                 seller):
    """Each byte arrives well within the read timeout; the whole answer does not."""
    platform.script = [trickle(0.05)]  # ~80 bytes: ~4 s in all
    duration, error = elapsed(
        lambda: make_client(platform.url, read_timeout=0.4).rss("/rss/x/get", seller))
    assert isinstance(error, UpstreamTimeout)
    assert duration < 1.2


def test_sandbox_sleeping_platform_is_a_timeout(sandbox, make_client, seller):
    sandbox_fault(sandbox, api="/rss/products/get", kind="sleep", latency_ms=3000, times=3)
    client = make_client(sandbox.api_url, clock=time.time, read_timeout=0.3, read_retries=2)
    duration, error = elapsed(
        lambda: client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 1}))
    assert isinstance(error, UpstreamTimeout)
    assert duration < 0.9
    assert len(sandbox_calls(sandbox, "/rss/products/get")) == 1


def test_a_connect_timeout_is_a_timeout_and_not_retried(unaccepting_port, make_client,
                                                        seller):
    client = make_client(f"http://127.0.0.1:{unaccepting_port}/rest", connect_timeout=0.3,
                         read_retries=2)
    duration, error = elapsed(lambda: client.rss("/rss/x/get", seller))
    assert isinstance(error, UpstreamTimeout)
    assert duration < 0.9


def test_a_refused_connection_is_unavailable(closed_port, make_client, seller):
    client = make_client(f"http://127.0.0.1:{closed_port}/rest", read_retries=2)
    duration, error = elapsed(lambda: client.rss("/rss/x/get", seller))
    assert isinstance(error, UpstreamUnavailable)
    assert error.http_status is None
    assert duration < 1


# --- answers that are not envelopes ---------------------------------------------------------


@pytest.mark.parametrize(("action", "status"), [
    (answer(b"<html><body>punish</body></html>"), 200),
    (answer(b'{"code": "0", "result": {"succ'), 200),
    (answer([{"code": "0"}]), 200),
    (answer(b""), 200),
    (answer(b"<html>forbidden</html>", 403), 403),
    (answer({"error": "no envelope"}, 404), 404),
    (answer(b"", 302, [("Location", "http://elsewhere/")]), 302),
], ids=["html", "truncated", "json-array", "empty", "html-403", "json-404", "redirect"])
def test_non_envelopes_are_malformed(platform, make_client, seller, action, status):
    platform.script = [action]
    with pytest.raises(MalformedResponse) as caught:
        make_client(platform.url).rss("/rss/x/get", seller)
    assert caught.value.http_status == status
    assert caught.value.api == "/rss/x/get"


def test_a_4xx_with_an_envelope_is_read_as_one(platform, make_client, seller):
    platform.script = [answer({"type": "ISV", "code": "ApiCallLimit", "message": "slow down",
                               "request_id": "rid-9"}, 429)]
    with pytest.raises(GatewayError) as caught:
        make_client(platform.url).rss("/rss/x/get", seller)
    assert (caught.value.code, caught.value.error_type, caught.value.request_id) == (
        "ApiCallLimit", "ISV", "rid-9")


def test_an_oversized_answer_is_malformed(platform, make_client, seller):
    platform.script = [chunked([b" " * 65536] * 17 * 16)]  # 17 MiB of whitespace
    with pytest.raises(MalformedResponse, match="too large"):
        make_client(platform.url).rss("/rss/x/get", seller)


@pytest.mark.parametrize("kind", ["html", "truncated"])
def test_sandbox_garbled_answers_are_malformed(sandbox, make_client, seller, kind):
    sandbox_fault(sandbox, api="/rss/products/get", kind=kind, times=1)
    with pytest.raises(MalformedResponse):
        make_client(sandbox.api_url, clock=time.time).rss("/rss/products/get", seller,
                                                          {"page": 1, "pageSize": 1})


def test_sandbox_5xx_after_retries_is_unavailable_with_its_status(sandbox, make_client,
                                                                  seller):
    sandbox_fault(sandbox, api="/rss/products/get", kind="http503", times=5)
    client = make_client(sandbox.api_url, clock=time.time, read_retries=1)
    with pytest.raises(UpstreamUnavailable) as caught:
        client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 1})
    assert caught.value.http_status == 503
    assert len(sandbox_calls(sandbox, "/rss/products/get")) == 2


def test_sandbox_gateway_and_business_failures(sandbox, make_client, seller):
    sandbox_fault(sandbox, api="/rss/products/get", kind="ApiCallLimit", times=1)
    client = make_client(sandbox.api_url, clock=time.time)
    with pytest.raises(GatewayError) as caught:
        client.rss("/rss/products/get", seller, {"page": 1, "pageSize": 1})
    assert (caught.value.code, caught.value.error_type) == ("ApiCallLimit", "ISV")
    assert caught.value.request_id
    with pytest.raises(BusinessError):
        client.rss("/rss/product/get", seller, {"productId": 999999999})


# --- secrets stay out of errors and logs ----------------------------------------------------


def echo_query_as_gateway_error(recorder, environ, start_response):
    """A platform that repeats the request's secrets back in its error."""
    seen = recorder.seen[-1]
    text = f"bad call {seen.query} {seen.body} token {seen.params.get('access_token')}"
    return answer({"type": "ISV", "code": "IncompleteSignature", "message": text,
                   "request_id": seen.params.get("sign")})(recorder, environ, start_response)


def echo_as_business_error(recorder, environ, start_response):
    seen = recorder.seen[-1]
    text = f"no such thing for {seen.params.get('access_token')} ({seen.params.get('sign')})"
    return answer({"code": "0", "result": {"success": False, "errorMessage": text},
                   "request_id": "rid"})(recorder, environ, start_response)


FAILURES = {
    "timeout": (stall(5), UpstreamTimeout),
    "http-503": (answer(b"busy", 503), UpstreamUnavailable),
    "reset": (reset(), UpstreamUnavailable),
    "html": (answer(b"<html>no</html>"), MalformedResponse),
    "truncated": (answer(b'{"code":"0","res'), MalformedResponse),
    "json-array": (answer([1]), MalformedResponse),
    "gateway-echo": (echo_query_as_gateway_error, GatewayError),
    "business-echo": (echo_as_business_error, BusinessError),
}


def assert_secret_free(error: BaseException, caplog, forbidden: list[str]) -> None:
    logging.getLogger("tests.upstream").error("upstream call failed: %s", error,
                                              exc_info=error)
    texts = {"str": str(error), "repr": repr(error),
             "traceback": "".join(traceback.format_exception(error)),
             "log": caplog.text}
    for where, text in texts.items():
        for value in forbidden:
            assert value not in text, f"{where} leaks a secret"
        assert "access_token=" not in text.replace("access_token=[REDACTED]", ""), where
        assert "?" not in str(error), "a URL query in the message"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_failures_never_show_secrets(platform, make_client, seller, test_secrets, caplog,
                                     failure, method):
    caplog.set_level(logging.DEBUG)
    action, expected = FAILURES[failure]
    platform.script = [action] * 3
    client = make_client(platform.url, read_timeout=0.3, read_retries=1)
    with pytest.raises(expected) as caught:
        client.rss("/rss/x/get", seller, {"productId": 1}, method=method)
    sent = platform.seen[0].params
    assert sent["sign"] and sent["access_token"] == test_secrets.access_token
    forbidden = [test_secrets.access_token, test_secrets.app_secret, sent["sign"]]
    assert_secret_free(caught.value, caplog, forbidden + [platform.seen[0].query] * (
        method == "GET"))


def test_refused_connection_never_shows_secrets(closed_port, make_client, seller,
                                                test_secrets, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(f"http://127.0.0.1:{closed_port}/rest", read_retries=1)
    with pytest.raises(UpstreamUnavailable) as caught:
        client.rss("/rss/x/get", seller)
    business = {"storeId": STORE_ID, "app_key": APP_KEY, "timestamp": "1700000000000",
                "sign_method": "sha256", "access_token": test_secrets.access_token}
    sign = signing.sign("/rss/x/get", business, test_secrets.app_secret)
    assert any("Retrying" in record.getMessage() for record in caplog.records)
    assert_secret_free(caught.value, caplog,
                       [test_secrets.access_token, test_secrets.app_secret, sign])


def test_token_call_failures_never_show_the_refresh_token(platform, make_client, test_secrets,
                                                          caplog):
    caplog.set_level(logging.DEBUG)
    platform.script = [echo_query_as_gateway_error]
    with pytest.raises(GatewayError) as caught:
        make_client(platform.url).refresh_token(test_secrets.refresh_token)
    assert platform.seen[0].params["refresh_token"] == test_secrets.refresh_token
    assert_secret_free(caught.value, caplog,
                       [test_secrets.refresh_token, test_secrets.app_secret,
                        platform.seen[0].params["sign"]])


def test_scrubbing_keeps_an_honest_message(platform, make_client, seller):
    platform.script = [answer({"type": "ISV", "code": "InvalidParameter",
                               "message": "The specified parameter productId is not valid",
                               "request_id": "0ba2887315178178017221014"})]
    with pytest.raises(GatewayError) as caught:
        make_client(platform.url).rss("/rss/x/get", seller, {"productId": 1})
    assert caught.value.message == "The specified parameter productId is not valid"
    assert caught.value.request_id == "0ba2887315178178017221014"


def test_seller_credentials_hide_the_token(test_secrets):
    credentials = SellerCredentials(STORE_ID, test_secrets.access_token)
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert test_secrets.access_token not in text
        assert STORE_ID in text
