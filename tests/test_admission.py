"""Admission control (shim.legacy.admission): bulkheads that refuse at once, never queue.

Requests are held in flight by a slow sandbox (its latency applies to every platform call),
through a real shim on a local socket; the test waits until the bulkhead shows them before it
sends the one that must be refused. Nothing here is timed: speed goals live in bench/.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shim import errors
from shim.app import create_app
from shim.legacy.admission import EXTENSION, Admission, Bulkhead
from shim.services import get_services
from shim.serving import LocalServer

LOCATIONS = "/v1/pickup-locations"
LOT_0 = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
WAIT_S = 10.0  # only reached when the code under test is broken
SLOW_MS = 1500  # how long the sandbox holds each platform call while a test fills a bulkhead


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


class Shim:
    """A shim on a local socket with its own settings, its legacy client and its bulkheads."""

    def __init__(self, app, server: LocalServer, legacy, sandbox) -> None:
        self.app, self.server, self.legacy, self.sandbox = app, server, legacy, sandbox
        self.admission: Admission = app.extensions[EXTENSION]
        self.pool = ThreadPoolExecutor(max_workers=16)

    def slow_platform(self, ms: int = SLOW_MS) -> None:
        """Make every platform call take ``ms`` first (0: back to normal)."""
        answer = requests.post(self.sandbox.base_url + "/_sandbox/latency", json={"ms": ms},
                               timeout=5)
        assert answer.status_code == 200, answer.text

    def start(self, method: str, path: str, client_id: str = "full", **kwargs):
        """Send a request from the pool; return its future."""
        self.legacy.token(client_id)  # fetched here, not in the measured request
        return self.pool.submit(self.legacy.request, method, path, client_id=client_id,
                                **kwargs)

    def fill(self, count: int, bulkhead: Bulkhead, key=None, **kwargs) -> list:
        """Start ``count`` slow GETs and wait until ``bulkhead`` holds them."""
        started = [self.start("GET", LOCATIONS, **kwargs) for _ in range(count)]
        wait_until(lambda: bulkhead.held(key) == count)
        return started

    def idle(self) -> bool:
        """Return whether every place of every bulkhead is back."""
        admission = self.admission
        return (admission.instance.held() == 0 and admission.tokens.held() == 0
                and len(admission.sellers) == 0 and len(admission.clients) == 0)

    def metrics(self, operator_token: str) -> str:
        answer = requests.get(self.server.base_url + "/metrics", timeout=5,
                              headers={"Authorization": f"Bearer {operator_token}"})
        assert answer.status_code == 200
        return answer.text


@pytest.fixture
def make_shim(make_settings, sandbox, operator_token, legacy_client) -> Iterator[
        Callable[..., Shim]]:
    """Return ``make_shim(**settings)``: a running shim on the test sandbox."""
    made: list[Shim] = []

    def make(**overrides) -> Shim:
        overrides = {"operator_token": operator_token, "read_timeout_s": 10.0, **overrides}
        app = create_app(make_settings(sandbox.api_url, **overrides))
        server = LocalServer(app).start()
        made.append(Shim(app, server, legacy_client(server.base_url), sandbox))
        return made[-1]

    yield make
    for shim in made:
        shim.slow_platform(0)
        shim.pool.shutdown(wait=True)
        shim.server.stop()
        get_services(shim.app).close()


def assert_refused(answer: requests.Response, status: int, body: dict) -> None:
    """The legacy refusal: status, exact body, and Retry-After."""
    assert answer.status_code == status, answer.text
    assert answer.json() == body
    assert answer.headers["Retry-After"] == "1"


def test_the_default_limits_leave_threads_for_health_and_metrics(make_settings, sandbox):
    settings = make_settings(sandbox.api_url)
    assert settings.worker_threads == 64
    assert settings.in_flight_limits == (56, 28, 14)
    assert make_settings(sandbox.api_url, threads=16).in_flight_limits == (14, 7, 3)
    assert make_settings(sandbox.api_url, threads=1, max_in_flight_per_client=1,
                         ).in_flight_limits == (1, 1, 1)
    assert make_settings(sandbox.api_url, max_in_flight=10, max_in_flight_per_seller=9,
                         ).in_flight_limits == (10, 9, 2)


def test_a_full_instance_answers_503_at_once_and_health_and_metrics_still_answer(
        make_shim, operator_token):
    shim = make_shim(max_in_flight=2, max_in_flight_per_seller=2, max_in_flight_per_client=2)
    shim.legacy.token("other")
    shim.slow_platform()
    slow = shim.fill(2, shim.admission.instance)
    refused = shim.legacy.get(LOCATIONS, client_id="other")  # another seller, another client
    assert_refused(refused, 503, {"title": "Service Unavailable",
                                  "detail": errors.INSTANCE_BUSY})
    assert refused.headers["X-Request-Id"]  # rendered by the app like every other answer
    # Not counted, so not refused: what an orchestrator and a scraper need.
    assert requests.get(shim.server.base_url + "/healthz", timeout=5).status_code == 200
    assert requests.get(shim.server.base_url + "/readyz", timeout=5).status_code == 200
    exposition = shim.metrics(operator_token)
    assert 'shim_admission_refused_total{scope="instance"} 1.0' in exposition
    assert "shim_requests_in_flight 2.0" in exposition
    # The token endpoint is counted too, and keeps its OAuth2 shape.
    token = requests.post(shim.server.base_url + "/oauth2/token", timeout=5, data={
        "grant_type": "client_credentials", "client_id": "full", "client_secret": "x"})
    assert_refused(token, 503, {"error": "temporarily_unavailable", "error_description":
                                "The service is serving as many requests as it can: retry "
                                "in 1 s"})
    assert [future.result().status_code for future in slow] == [200, 200]
    wait_until(shim.idle)
    assert "shim_requests_in_flight 0.0" in shim.metrics(operator_token)


def test_token_calls_hold_at_most_a_quarter_of_the_places_and_never_starve_the_api(make_shim):
    """Token calls whose bodies are still arriving hold their places (a flood's calls do while
    they wait for a hashing slot); past a quarter of the process's places the next token call
    is refused at once, and an API call still finds a place."""
    shim = make_shim(max_in_flight=8, max_in_flight_per_seller=8, max_in_flight_per_client=8)
    assert shim.admission.tokens.limit == 2
    shim.legacy.token("full")
    pending = (b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n")
    host, port = shim.server.base_url.removeprefix("http://").rsplit(":", 1)
    with contextlib.ExitStack() as held:
        for _ in range(2):
            held.enter_context(socket.create_connection((host, int(port)), timeout=10)
                               ).sendall(pending)
        wait_until(lambda: shim.admission.tokens.held() == 2)
        refused = requests.post(shim.server.base_url + "/oauth2/token", timeout=5, data={
            "grant_type": "client_credentials", "client_id": "full", "client_secret": "x"})
        assert_refused(refused, 503, {"error": "temporarily_unavailable", "error_description":
                                      "The service is serving as many requests as it can: "
                                      "retry in 1 s"})
        assert shim.legacy.get(LOCATIONS).status_code == 200
        assert shim.admission.instance.held() == 2  # the two token calls, still waiting
    wait_until(shim.idle)


def test_a_full_seller_answers_503_to_its_clients_and_others_are_served(make_shim):
    shim = make_shim(max_in_flight_per_seller=2)
    for client_id in ("reader", "other"):
        shim.legacy.token(client_id)
    shim.slow_platform()
    slow = shim.fill(2, shim.admission.sellers, "main")
    # "reader" is another client of the same seller: its own limit is far, the seller's not.
    assert_refused(shim.legacy.get(LOCATIONS, client_id="reader"), 503,
                   {"title": "Service Unavailable", "detail": errors.SELLER_BUSY})
    other = shim.start("GET", LOCATIONS, client_id="other")  # another seller: served
    assert other.result().status_code == 200
    assert [future.result().status_code for future in slow] == [200, 200]
    wait_until(shim.idle)


def test_a_client_past_its_limit_gets_kongs_429_and_others_are_served(make_shim):
    shim = make_shim(max_in_flight_per_client=2)
    shim.legacy.token("reader")
    shim.slow_platform()
    slow = shim.fill(2, shim.admission.clients, "full")
    refused = shim.legacy.get(LOCATIONS)
    assert_refused(refused, 429, {"message": "API rate limit exceeded"})
    # It passed the rate limiter, whose figures it carries as every limited answer does.
    assert refused.headers["X-RateLimit-Limit-second"] == "10"
    assert "X-RateLimit-Remaining-second" in refused.headers
    assert refused.reason == "Too Many Requests"
    reader = shim.start("GET", LOCATIONS, client_id="reader")  # same seller, other client
    assert reader.result().status_code == 200
    assert [future.result().status_code for future in slow] == [200, 200]
    wait_until(shim.idle)


def test_past_its_waiters_a_stock_lot_answers_503_at_once(make_shim, operator_token):
    shim = make_shim(lot_queue=1)
    etag = shim.legacy.get(LOT_0).headers["ETag"]
    shim.slow_platform()
    locks = get_services(shim.app).locks
    key = ("stock-lot", "414", 100150, 23789)
    patch = {"headers": {"If-Match": etag}, "json": {"quantityAtPickupLocation": 20}}
    first = shim.start("PATCH", LOT_0, **patch)
    wait_until(lambda: locks.queued(key) == 1)
    second = shim.start("PATCH", LOT_0, **patch)  # waits behind the first
    wait_until(lambda: locks.queued(key) == 2)
    refused = shim.legacy.patch(LOT_0, **patch)
    assert_refused(refused, 503, {"title": "Service Unavailable",
                                  "detail": errors.LOCK_QUEUE_FULL})
    assert first.result().status_code == 200
    assert second.result().status_code == 412  # the first one changed the ETag
    assert 'shim_admission_refused_total{scope="lot"} 1.0' in shim.metrics(operator_token)
    wait_until(shim.idle)
    assert len(locks) == 0


def test_every_place_is_given_back_whatever_the_answer(make_shim, sandbox):
    shim = make_shim(max_in_flight=4, max_in_flight_per_seller=3, max_in_flight_per_client=2)
    base = shim.server.base_url
    answers = [
        shim.legacy.get(LOCATIONS).status_code,  # 200
        requests.get(base + LOCATIONS, timeout=5).status_code,  # no token: 401
        requests.get(base + "/v1/nothing", timeout=5).status_code,  # no route: 404
        shim.legacy.get("/v1/pickup-jobs", client_id="reader",
                        params={"from": "x"}).status_code,  # bad input: 400
        shim.legacy.patch(LOT_0, headers={"If-Match": '"999"'},
                          json={"quantityAtPickupLocation": 1}).status_code,  # stale: 412
    ]
    requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5,
                  json={"api": "*", "kind": "http502", "times": 1})
    answers.append(shim.legacy.get(LOCATIONS).status_code)  # the platform failed: 503
    for _ in range(40):  # past the rate limit (10/s) within one second, however they fall
        answers.append(shim.legacy.get(LOCATIONS).status_code)
        if answers[-1] == 429:
            break
    assert answers[:6] == [200, 401, 404, 400, 412, 503]
    assert answers[-1] == 429
    assert shim.idle()
    # A client that goes away while its call waits for the platform gives its places back
    # once the call ends.
    shim.slow_platform()
    wait_until(lambda: shim.legacy.get(LOCATIONS).status_code == 200)  # the second is over
    with socket.create_connection(("127.0.0.1", shim.server.port), timeout=5) as gone:
        gone.sendall(f"GET {LOCATIONS} HTTP/1.1\r\nHost: shim\r\nAuthorization: Bearer "
                     f"{shim.legacy.token()}\r\n\r\n".encode())
        wait_until(lambda: shim.admission.instance.held() == 1)
    wait_until(shim.idle)  # the call ended, with nobody to answer
    # And after all of it the bulkheads admit their full count again.
    shim.slow_platform(0)
    results = [shim.start("GET", LOCATIONS, client_id=client) for client in
               ("full", "full", "reader", "other")]
    assert sorted(future.result().status_code for future in results) == [200] * 4
    assert shim.idle()


def test_many_threads_never_exceed_a_bulkhead_and_leave_it_empty():
    bulkhead, inside, most, guard = Bulkhead(3), [0], [0], threading.Lock()
    start = threading.Barrier(12)

    def work() -> None:
        start.wait()
        for _ in range(200):
            if bulkhead.enter("seller"):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with guard:
                    inside[0] -= 1
                bulkhead.leave("seller")

    threads = [threading.Thread(target=work) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] <= 3
    assert bulkhead.held("seller") == 0 and len(bulkhead) == 0


# --- a real ``redmart-shim serve`` (gunicorn, one worker) under a slow platform -------------

class Served:
    """A running ``serve`` on the test database, with tokens for its clients."""

    def __init__(self, base_url: str, operator_token: str, secret: str) -> None:
        self.base_url, self.operator_token = base_url, operator_token
        self.tokens = {client_id: requests.post(base_url + "/oauth2/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret}).json()["access_token"] for client_id in ("full", "reader")}

    def call(self, method: str, path: str, client_id: str = "full", **kwargs
             ) -> tuple[requests.Response, float]:
        """Send one API call on its own connection; return its answer and when it came."""
        headers = {"Authorization": f"Bearer {self.tokens[client_id]}",
                   **kwargs.pop("headers", {})}
        answer = requests.request(method, self.base_url + path, headers=headers, timeout=30,
                                  **kwargs)
        return answer, time.monotonic()

    def metric(self, line_start: str) -> float:
        """Return the value of the exposition line starting with ``line_start`` (0 if none)."""
        text = requests.get(self.base_url + "/metrics", timeout=10, headers={
            "Authorization": f"Bearer {self.operator_token}"}).text
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(line_start + " ")]
        return sum(values)


@pytest.fixture
def serve_shim(serve_environment, db_store, sandbox, operator_token, test_secrets, tmp_path):
    """Return ``serve_shim(**SHIM_variables)``: a context manager running ``serve``."""
    from served import free_port, running

    @contextlib.contextmanager
    def serve(**variables: str) -> Iterator[Served]:
        port = free_port()
        env = serve_environment(SHIM_BIND=f"127.0.0.1:{port}", SHIM_LOG_LEVEL="warning",
                                SHIM_OPERATOR_TOKEN=operator_token, SHIM_READ_TIMEOUT_S="10",
                                **variables)
        with running(["serve"], env, port, tmp_path / "serve.log") as base_url:
            served = Served(base_url, operator_token, test_secrets.client_secret)
            try:
                yield served
            finally:
                set_latency(sandbox, 0)

    return serve


def set_latency(sandbox, ms: int) -> None:
    """Make every platform call of the sandbox take ``ms`` first."""
    answer = requests.post(sandbox.base_url + "/_sandbox/latency", json={"ms": ms}, timeout=5)
    assert answer.status_code == 200


@pytest.mark.slow
def test_served_health_answers_and_excess_calls_are_refused_while_the_platform_is_slow(
        serve_shim, sandbox):
    """12 threads, 6 of them for the API: with 6 calls waiting for a slow platform, /healthz
    and /metrics answer and 14 more calls are refused, all before the first slow call ends."""
    with serve_shim(SHIM_THREADS="12", SHIM_MAX_IN_FLIGHT="6",
                    SHIM_MAX_IN_FLIGHT_PER_SELLER="6", SHIM_MAX_IN_FLIGHT_PER_CLIENT="6") as shim:
        set_latency(sandbox, 4000)
        with ThreadPoolExecutor(max_workers=20) as pool:
            calls = [pool.submit(shim.call, "GET", LOCATIONS) for _ in range(20)]
            wait_until(lambda: shim.metric("shim_requests_in_flight") == 6)
            health = requests.get(shim.base_url + "/healthz", timeout=10)
            health_at = time.monotonic()
            in_flight = shim.metric("shim_requests_in_flight")
            answers = [future.result() for future in calls]
        served = [at for answer, at in answers if answer.status_code == 200]
        refused = [(answer, at) for answer, at in answers if answer.status_code == 503]
        assert (len(served), len(refused)) == (6, 14)
        assert health.status_code == 200 and health_at < min(served)
        assert in_flight == 6
        for answer, at in refused:
            assert answer.json() == {"title": "Service Unavailable",
                                     "detail": errors.INSTANCE_BUSY}
            assert answer.headers["Retry-After"] == "1"
            assert at < min(served)  # refused at once, not queued behind the slow calls
        assert shim.metric('shim_admission_refused_total{scope="instance"}') == 14
        assert shim.metric("shim_requests_in_flight") == 0


@pytest.mark.slow
def test_served_a_noisy_tenant_patching_one_lot_leaves_another_clients_reads_alone(
        serve_shim, sandbox):
    """Issue 11's noisy tenant: client A PATCHes one lot at 10/s while the platform takes 1 s
    per call; the lot's short queue refuses A's excess at once, and client B's GETs all
    succeed (their speed is bench/'s to measure)."""
    with serve_shim() as shim:  # the defaults: 64 threads, a queue of 2 per lot
        set_latency(sandbox, 1000)
        patches, reads = [], []
        with ThreadPoolExecutor(max_workers=40) as pool:
            started = time.monotonic()
            for tick in range(60):  # 6 s at 10/s, B reading every 0.5 s
                time.sleep(max(0.0, started + tick / 10 - time.monotonic()))
                patches.append(pool.submit(
                    shim.call, "PATCH", LOT_0, headers={"If-Match": "*"},
                    json={"quantityAtPickupLocation": 20 + tick % 2}))
                if tick % 5 == 0:
                    reads.append(pool.submit(shim.call, "GET", LOT_0, client_id="reader"))
            statuses = [future.result()[0].status_code for future in patches]
            read_statuses = [future.result()[0].status_code for future in reads]
        assert read_statuses == [200] * 12
        assert statuses.count(200) >= 2 and set(statuses) <= {200, 429, 503}
        lot_refusals = [future.result()[0] for future in patches
                        if future.result()[0].status_code == 503]
        assert lot_refusals
        for answer in lot_refusals:
            assert answer.json()["detail"] == errors.LOCK_QUEUE_FULL
            assert answer.headers["Retry-After"] == "1"
        assert shim.metric('shim_admission_refused_total{scope="lot"}') == len(lot_refusals)


def test_a_request_that_raises_gives_its_places_back(make_settings, sandbox):
    """However the request ends: a view's bug (rendered as the bare 500), or something no
    handler catches and that leaves the app (as a worker's SystemExit would)."""
    app = create_app(make_settings(sandbox.api_url, max_in_flight=1))

    class Escapes(BaseException):
        """Not an Exception: no error handler of the app catches it."""

    def boom(kind: str) -> None:
        raise RuntimeError("a bug in a view") if kind == "bug" else Escapes()

    app.add_url_rule("/boom/<kind>", "boom", boom)
    admission: Admission = app.extensions[EXTENSION]
    try:
        client = app.test_client()
        assert client.get("/boom/bug").status_code == 500
        assert admission.instance.held() == 0
        with pytest.raises(Escapes):
            client.get("/boom/escape")
        assert admission.instance.held() == 0
        assert client.get("/boom/bug").status_code == 500  # not 503: the place is free
    finally:
        get_services(app).close()
