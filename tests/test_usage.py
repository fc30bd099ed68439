"""Per-client call counts: in memory on the request path, written in batches, none lost on a
graceful stop; and which legacy calls count, through real HTTP."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest

from shim.app import create_app
from shim.serving import LocalServer
from shim.usage import HOUR_S, UsageRecorder

PRODUCTS = "/v1/products"
T0 = 1_700_000_000.0  # mid-hour: 472222 h + 1600 s


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class BrokenStore:
    """A store whose database is down: every write fails."""

    def __init__(self) -> None:
        self.attempts = 0

    def add_usage(self, counts) -> None:
        self.attempts += 1
        raise ConnectionError("database unreachable")


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- the recorder -------------------------------------------------------------------------------

def test_counts_stay_in_memory_until_a_flush(db_store):
    recorder = UsageRecorder(db_store, clock=Clock())
    for _ in range(3):
        recorder.count("full")
    recorder.count("reader")
    assert db_store.usage_since(0) == {}
    assert recorder.pending() == 4
    recorder.flush()
    assert db_store.usage_since(0) == {"full": 3, "reader": 1}
    assert recorder.pending() == 0
    recorder.flush()  # nothing pending: nothing added twice
    assert db_store.usage_since(0) == {"full": 3, "reader": 1}


def test_calls_are_filed_under_their_hour_and_the_window_is_24_hours(db_store):
    clock = Clock()
    recorder = UsageRecorder(db_store, clock=clock)
    recorder.count("full")  # 24 hours before the read below: outside the window
    clock.now += HOUR_S
    recorder.count("full")  # 23 hours before: inside
    clock.now += 23 * HOUR_S
    recorder.count("full")
    recorder.count("reader")
    assert recorder.last_24h() == {"full": 2, "reader": 1}
    hour = int(clock.now // HOUR_S)
    assert db_store.usage_since(hour - 24) == {"full": 3, "reader": 1}


def test_a_failed_flush_keeps_the_counts_for_the_next_one(db_store):
    broken = BrokenStore()
    recorder = UsageRecorder(broken, clock=Clock())
    recorder.count("full")
    recorder.count("full")
    with pytest.raises(ConnectionError):
        recorder.flush()
    assert recorder.pending() == 2
    recorder.count("full")
    recorder.store = db_store  # the database is back
    recorder.flush()
    assert db_store.usage_since(0) == {"full": 3}


def test_counts_from_many_threads_add_up_exactly_while_flushing(db_store):
    recorder = UsageRecorder(db_store, clock=Clock())
    threads_n, calls_n = 8, 500
    start = threading.Barrier(threads_n + 1)

    def caller(client_id):
        start.wait()
        for _ in range(calls_n):
            recorder.count(client_id)

    threads = [threading.Thread(target=caller, args=(f"c{i % 2}",)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    start.wait()
    while any(thread.is_alive() for thread in threads):
        recorder.flush()  # flushes racing the counting must neither lose nor double a call
    recorder.flush()
    half = threads_n // 2 * calls_n
    assert db_store.usage_since(0) == {"c0": half, "c1": half}


def test_the_flusher_thread_writes_without_a_page_being_shown(db_store):
    recorder = UsageRecorder(db_store, clock=Clock()).start(0.05)
    try:
        recorder.count("full")
        assert wait_for(lambda: db_store.usage_since(0) == {"full": 1})
        assert recorder.pending() == 0
    finally:
        recorder.stop()


def test_stop_writes_what_is_pending_and_ends_the_thread(db_store):
    recorder = UsageRecorder(db_store, clock=Clock()).start(3600)  # no periodic flush here
    recorder.count("full")
    recorder.count("reader")
    assert db_store.usage_since(0) == {}
    assert recorder.running
    recorder.stop()
    assert db_store.usage_since(0) == {"full": 1, "reader": 1}
    assert not recorder.running
    recorder.stop()  # twice is harmless
    assert db_store.usage_since(0) == {"full": 1, "reader": 1}


def test_the_flusher_survives_a_storage_outage(db_store, caplog):
    broken = BrokenStore()
    recorder = UsageRecorder(broken, clock=Clock())
    recorder.count("full")
    with caplog.at_level(logging.ERROR, logger="shim.periodic"):
        recorder.start(0.02)
        try:
            assert wait_for(lambda: broken.attempts >= 2)  # it kept trying
            recorder.store = db_store
            assert wait_for(lambda: db_store.usage_since(0) == {"full": 1})
        finally:
            recorder.stop()
    assert any("usage-flusher failed; the counts are kept for the next flush"
               in record.getMessage() for record in caplog.records)


def test_stop_with_the_database_down_says_how_many_calls_are_lost(caplog):
    recorder = UsageRecorder(BrokenStore(), clock=Clock())
    for _ in range(3):
        recorder.count("full")
    with caplog.at_level(logging.ERROR, logger="shim.usage"):
        recorder.stop()  # on shutdown: logged, not raised
    assert any("could not write 3 counted calls" in record.getMessage()
               for record in caplog.records)


def test_the_flush_interval_must_be_positive(db_store):
    with pytest.raises(ValueError, match="positive"):
        UsageRecorder(db_store).start(0)


# --- which legacy calls count (real HTTP) -------------------------------------------------------

@pytest.fixture
def shim(legacy_client, db_settings, db_store):
    """The shim in database mode on a socket, with a legacy client; the clock stands still
    so the rate limiter's one-second window cannot roll over mid-test."""
    frozen = time.time()
    app = create_app(db_settings, store=db_store, clock=lambda: frozen)
    with LocalServer(app) as server:
        client = legacy_client(server.base_url)
        yield app, client
        client.close()


def usage_of(app) -> dict[str, int]:
    return app.extensions["shim"].usage.last_24h()


def test_each_admitted_legacy_call_counts_once_for_its_client(shim, db_store):
    app, legacy = shim
    for _ in range(4):
        assert legacy.get(PRODUCTS, client_id="full").status_code == 200
    for _ in range(2):
        assert legacy.get(PRODUCTS, client_id="reader").status_code == 200
    # Counted in memory only: the request path wrote nothing to the database.
    assert db_store.usage_since(0) == {}
    assert usage_of(app) == {"full": 4, "reader": 2}


def test_a_scope_refusal_counts_but_an_unauthenticated_call_does_not(shim):
    app, legacy = shim
    refused = legacy.patch(PRODUCTS + "/1/pickup-locations/1/stock-lots/1", client_id="reader",
                           json={})
    assert refused.status_code == 403  # past the gateway: the client did make the call
    anonymous = legacy.session.get(legacy.base_url + PRODUCTS, timeout=10)
    assert anonymous.status_code == 401
    bad = legacy.session.get(legacy.base_url + PRODUCTS, timeout=10,
                             headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    token = legacy.session.post(legacy.base_url + "/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": legacy.client_secret})
    assert token.status_code == 200
    assert usage_of(app) == {"reader": 1}


def test_a_rate_limited_call_does_not_count(legacy_client, db_settings, db_store):
    frozen = time.time()
    app = create_app(replace(db_settings, rate_limit_per_second=2), store=db_store,
                     clock=lambda: frozen)
    with LocalServer(app) as server:
        legacy = legacy_client(server.base_url)
        try:
            statuses = [legacy.get(PRODUCTS).status_code for _ in range(4)]
        finally:
            legacy.close()
    assert statuses == [200, 200, 429, 429]
    assert usage_of(app) == {"full": 2}
