"""The token endpoint's throttle on failed client authentication (real HTTP).

Per (client id, caller address) and calendar minute of the app's clock: ten failures, then
every attempt, right secret or not, is refused with a 429 until the minute ends. The shims
run on a frozen clock, so every burst falls in one window and the next is one ``advance``
away.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import math
import os
import secrets
import threading
import time
from urllib.parse import urlencode

import pytest
import redis
from limits.storage import MemoryStorage

from shim.app import create_app
from shim.legacy import auth, ratelimit
from shim.legacy.ratelimit import (
    FAILED_AUTH_ADDRESS_LIMIT,
    FAILED_AUTH_LIMIT,
    FAILED_AUTH_WINDOW_S,
    RouteLimiter,
)
from shim.serving import LocalServer

REDIS_URL = os.environ.get("SHIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN_PATH = "/oauth2/token"
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Invalid client authentication"}
OTHER_ADDRESS = "127.0.0.2"  # the whole of 127/8 is loopback on Linux: a second caller


@pytest.fixture
def clock(frozen_clock):
    # 15 s into a minute: the lockout then has 45 s to run.
    return frozen_clock(math.floor(time.time() / 60) * 60 + 15.25)


@pytest.fixture
def serve(make_settings, sandbox, clock):
    """Start shims (on the shared frozen clock) with settings overrides; stopped after."""
    started = []

    def start(**overrides):
        app = create_app(make_settings(sandbox.api_url,
                                       **overrides), clock=clock)
        server = LocalServer(app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.app.extensions["shim"].upstream.session.close()


@pytest.fixture
def server(serve):
    return serve()


class Answer:
    """Status, headers (lower-case names) and JSON body of one token call."""

    def __init__(self, status: int, headers: dict[str, str], body: dict) -> None:
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body})"


def post_token(server, form: dict[str, str], *, source: str = "127.0.0.1",
               headers: dict[str, str] | None = None) -> Answer:
    """POST a token request from ``source`` (a loopback address) over a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                            source_address=(source, 0))
    try:
        connection.request("POST", TOKEN_PATH, body=urlencode(form), headers={
            "Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
        response = connection.getresponse()
        body = json.loads(response.read())
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


def form(client_id: str, secret: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret, **extra}


def fail(server, client_id: str = "full", times: int = FAILED_AUTH_LIMIT, **kwargs) -> None:
    """Fail ``times`` authentications of ``client_id``; each is an ordinary refusal."""
    for _ in range(times):
        answer = post_token(server, form(client_id, "wrong-" + secrets.token_hex(4)), **kwargs)
        assert (answer.status, answer.body) == (400, INVALID_CLIENT)


def assert_throttled(answer: Answer, retry_after: int, state: str | None = None) -> None:
    expected = {"error": "temporarily_unavailable",
                "error_description": f"Too many failed client authentications: "
                                     f"retry in {retry_after} s"}
    if state is not None:
        expected["state"] = state
    assert (answer.status, answer.body) == (429, expected)
    assert answer.headers["retry-after"] == str(retry_after)
    assert answer.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in answer.headers


def test_ten_failures_then_even_the_right_secret_waits_for_the_next_minute(
        server, clock, test_secrets):
    """After the limit the secret is not checked at all, so the answer cannot be an oracle."""
    fail(server)
    right = post_token(server, form("full", test_secrets.client_secret, state="s1"))
    assert_throttled(right, 45, state="s1")
    wrong = post_token(server, form("full", "wrong"))
    assert_throttled(wrong, 45)  # the same answer as for the right secret
    clock.advance(44.7)  # still this minute
    assert post_token(server, form("full", test_secrets.client_secret)).status == 429
    clock.advance(0.1)
    assert post_token(server, form("full", test_secrets.client_secret)).status == 200


def test_other_clients_and_other_addresses_are_unaffected(server, test_secrets):
    """Spamming a client's id elsewhere must not lock the real client out."""
    fail(server, source=OTHER_ADDRESS)  # the attacker
    assert post_token(server, form("full", "x"), source=OTHER_ADDRESS).status == 429
    assert post_token(server, form("full", test_secrets.client_secret)).status == 200
    assert post_token(server, form("reader", test_secrets.client_secret),
                      source=OTHER_ADDRESS).status == 200


def test_unknown_client_ids_count_and_are_answered_like_known_ones(server):
    fail(server, client_id="nobody")
    unknown = post_token(server, form("nobody", "x"))
    fail(server, client_id="full")
    known = post_token(server, form("full", "x"))
    assert_throttled(unknown, 45)
    assert (unknown.status, unknown.body) == (known.status, known.body)


def test_only_failures_count(server, test_secrets):
    for _ in range(FAILED_AUTH_LIMIT + 5):
        assert post_token(server, form("full", test_secrets.client_secret)).status == 200
    fail(server)
    assert post_token(server, form("full", test_secrets.client_secret)).status == 429


def test_basic_header_credentials_share_the_count(server, test_secrets):
    """A header client is the same client: its refusals (401) count, then it is throttled."""
    def basic(secret):
        raw = base64.b64encode(f"full:{secret}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    fail(server, times=FAILED_AUTH_LIMIT - 1)
    refused = post_token(server, {"grant_type": "client_credentials"}, headers=basic("no"))
    assert refused.status == 401
    throttled = post_token(server, {"grant_type": "client_credentials", "state": "z"},
                           headers=basic(test_secrets.client_secret))
    assert_throttled(throttled, 45, state="z")


def test_a_throttled_attempt_costs_no_secret_check(server, monkeypatch):
    """Refused before the scrypt verification: the throttle also caps the CPU a guesser burns."""
    fail(server)
    calls = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    assert post_token(server, form("full", "x")).status == 429
    assert calls == []
    assert post_token(server, form("reader", "x")).status == 400
    assert calls == [1]


def test_concurrent_guesses_cannot_slip_in_before_the_count(serve):
    """Each attempt takes its place before the check: 30 at once give exactly 10 checks."""
    attempts = 3 * FAILED_AUTH_LIMIT
    # Every guess may hash at once and hold a place at once (token calls get a quarter of
    # max_in_flight): only the count limits, never admission control's 503.
    server = serve(secret_checks=attempts, max_in_flight=4 * attempts)
    barrier, statuses = threading.Barrier(attempts), []

    def guess(index):
        barrier.wait()
        statuses.append(post_token(server, form("full", f"guess-{index}")).status)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [400] * FAILED_AUTH_LIMIT + [429] * (attempts - FAILED_AUTH_LIMIT)


def test_the_lockout_is_logged_once_per_window_without_the_secret(server, caplog):
    with caplog.at_level(logging.WARNING, logger="shim.legacy.ratelimit"):
        fail(server)
        for _ in range(3):
            post_token(server, form("full", "not-logged-secret"))
    lines = [r.getMessage() for r in caplog.records if "throttled" in r.getMessage()]
    assert len(lines) == 1
    assert ratelimit.client_ref("full") in lines[0] and "127.0.0.1" in lines[0]
    assert "not-logged-secret" not in caplog.text


def test_a_throttled_client_id_is_logged_as_a_short_hash_never_verbatim(server, caplog):
    """A secret sent by mistake as client_id must not reach the log."""
    mistaken = "Sx" + secrets.token_hex(15)
    with caplog.at_level(logging.DEBUG):
        fail(server, client_id=mistaken)
        assert post_token(server, form(mistaken, "x")).status == 429
    assert "throttled" in caplog.text
    assert ratelimit.client_ref(mistaken) in caplog.text
    assert mistaken not in caplog.text and mistaken[:12] not in caplog.text


class BrokenStorage(MemoryStorage):
    """A storage whose backend is down."""

    def incr(self, key, expiry, amount=1):
        raise ConnectionError("storage unreachable")


def test_a_storage_failure_falls_back_to_a_limit_in_this_process(server, test_secrets,
                                                                caplog):
    """Not fail open: without the shared counters the throttle still counts, here."""
    server.app.extensions[ratelimit.EXTENSION] = RouteLimiter(BrokenStorage(), 10, {})
    with caplog.at_level(logging.ERROR, logger="shim.counters"):
        assert post_token(server, form("full", test_secrets.client_secret)).status == 200
        fail(server)
        assert_throttled(post_token(server, form("full", test_secrets.client_secret)), 45)
        assert post_token(server, form("reader", test_secrets.client_secret)).status == 200
    assert any("rate-limit storage failed" in r.getMessage() for r in caplog.records)


# A cap on secret checks in flight


def hold_secret_checks(server) -> threading.BoundedSemaphore:
    """Take every secret-check slot of ``server``'s app, as checks in flight would."""
    with server.app.app_context():
        slots = auth._secret_checks()
    for _ in range(server.app.extensions["shim"].settings.secret_checks):
        assert slots.acquire(blocking=False)
    return slots


def test_past_the_cap_on_secret_checks_a_fast_503_and_no_failure_counted(serve, test_secrets):
    server = serve(secret_checks=2)
    slots = hold_secret_checks(server)
    try:
        for _ in range(FAILED_AUTH_LIMIT + 2):
            busy = post_token(server, form("full", test_secrets.client_secret, state="b"))
            assert (busy.status, busy.body) == (503, {
                "error": "temporarily_unavailable",
                "error_description": "Too many client authentications in progress: "
                                     "retry in 1 s",
                "state": "b"})
            assert busy.headers["retry-after"] == "1"
            assert busy.headers["cache-control"] == "no-store"
    finally:
        for _ in range(2):
            slots.release()
    # Nothing was checked, so nothing counted as a failure: the client gets its token.
    assert post_token(server, form("full", test_secrets.client_secret)).status == 200


def test_the_cap_lets_checks_through_up_to_its_size(serve, test_secrets):
    server = serve(secret_checks=2)
    slots = hold_secret_checks(server)
    slots.release()  # one slot free
    try:
        assert post_token(server, form("full", test_secrets.client_secret)).status == 200
        assert post_token(server, form("full", "wrong")).status == 400
    finally:
        slots.release()


# Per address, whatever the client id


def fail_random_ids(server, times: int, **kwargs) -> None:
    """Fail ``times`` authentications, each with a fresh random client id."""
    for _ in range(times):
        answer = post_token(server, form(secrets.token_hex(16), "x"), **kwargs)
        assert (answer.status, answer.body) == (400, INVALID_CLIENT)


def test_fresh_client_ids_from_one_address_are_throttled_by_address(server, clock,
                                                                   test_secrets):
    fail_random_ids(server, FAILED_AUTH_ADDRESS_LIMIT)
    assert_throttled(post_token(server, form(secrets.token_hex(16), "x")), 45)
    # The address is refused whatever the id, a right secret included, without a check.
    assert_throttled(post_token(server, form("full", test_secrets.client_secret)), 45)
    # Another address is not.
    assert post_token(server, form("full", test_secrets.client_secret),
                      source=OTHER_ADDRESS).status == 200
    clock.advance(FAILED_AUTH_WINDOW_S)
    assert post_token(server, form("full", test_secrets.client_secret)).status == 200


def test_successes_do_not_count_against_the_address(server, test_secrets):
    for _ in range(FAILED_AUTH_ADDRESS_LIMIT + 5):
        assert post_token(server, form("full", test_secrets.client_secret)).status == 200
    fail_random_ids(server, FAILED_AUTH_ADDRESS_LIMIT)
    assert post_token(server, form("full", test_secrets.client_secret)).status == 429


DOWN_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: Redis is down


def test_with_redis_down_the_address_throttle_holds_in_process(serve, test_secrets, caplog):
    server = serve(rate_limit_storage=DOWN_REDIS_URL)
    with caplog.at_level(logging.ERROR, logger="shim.counters"):
        assert post_token(server, form("full", test_secrets.client_secret)).status == 200
        fail_random_ids(server, FAILED_AUTH_ADDRESS_LIMIT)
        assert_throttled(post_token(server, form(secrets.token_hex(16), "x")), 45)
    assert any("rate-limit storage failed" in r.getMessage() for r in caplog.records)


# Several instances: one count


@pytest.fixture
def redis_prefix():
    prefix = "shim-test-" + secrets.token_hex(4)
    yield prefix
    connection = redis.Redis.from_url(REDIS_URL)
    for key in connection.scan_iter(f"*{prefix}*"):
        connection.delete(key)
    connection.close()


def test_two_instances_on_one_redis_share_the_count(serve, clock, test_secrets, redis_prefix):
    first, second = (serve(rate_limit_storage=REDIS_URL, rate_limit_key_prefix=redis_prefix)
                     for _ in range(2))
    half = FAILED_AUTH_LIMIT // 2
    fail(first, times=half)
    fail(second, times=FAILED_AUTH_LIMIT - half)
    for server in (first, second):
        assert_throttled(post_token(server, form("full", test_secrets.client_secret)), 45)
        assert post_token(server, form("reader", test_secrets.client_secret)).status == 200
    clock.advance(FAILED_AUTH_WINDOW_S)
    for server in (first, second):
        assert post_token(server, form("full", test_secrets.client_secret)).status == 200


def test_two_instances_on_one_redis_share_the_address_count(serve, clock, test_secrets,
                                                            redis_prefix):
    first, second = (serve(rate_limit_storage=REDIS_URL, rate_limit_key_prefix=redis_prefix)
                     for _ in range(2))
    half = FAILED_AUTH_ADDRESS_LIMIT // 2
    fail_random_ids(first, half)
    fail_random_ids(second, FAILED_AUTH_ADDRESS_LIMIT - half)
    for server in (first, second):
        assert_throttled(post_token(server, form(secrets.token_hex(16), "x")), 45)
        assert post_token(server, form("full", test_secrets.client_secret),
                          source=OTHER_ADDRESS).status == 200
