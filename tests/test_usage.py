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
from shim.store.records import Client, RouteUsage
from shim.usage import DAY_S, HOUR_S, UsageRecorder, plan

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

    def add_usage(self, counts, days=None) -> None:
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


def test_calls_per_route_and_day_keep_errors_and_first_and_last_call(db_store):
    clock = Clock()
    recorder = UsageRecorder(db_store, clock=clock)
    day = int(T0 // DAY_S)
    recorder.count("full", "GET /v1/products")
    clock.now += 60
    recorder.count("full", "GET /v1/products", error=True)
    recorder.flush()
    clock.now += DAY_S  # the next UTC day
    recorder.count("full", "GET /v1/products")
    recorder.count("reader", "GET /v1/products/<id>", error=True)
    recorder.flush()
    found = {(u.client_id, u.route): u for u in db_store.usage_by_route(day)}
    full = found[("full", "GET /v1/products")]
    assert full.days == {day: (2, 1), day + 1: (1, 0)}
    assert (full.first_at, full.last_at) == (T0, T0 + 60 + DAY_S)
    assert found[("reader", "GET /v1/products/<id>")].days == {day + 1: (1, 1)}
    assert db_store.usage_since(0) == {"full": 3, "reader": 1}  # the hourly counts too


def test_a_failed_flush_keeps_the_daily_tallies_too(db_store):
    broken = BrokenStore()
    clock = Clock()
    recorder = UsageRecorder(broken, clock=clock)
    recorder.count("full", "GET /v1/products", error=True)
    with pytest.raises(ConnectionError):
        recorder.flush()
    clock.now += 5
    recorder.count("full", "GET /v1/products")
    recorder.store = db_store
    recorder.flush()
    [usage] = db_store.usage_by_route(0)
    assert usage.days == {int(T0 // DAY_S): (2, 1)}
    assert (usage.first_at, usage.last_at) == (T0, T0 + 5)


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


def test_each_call_counts_under_its_route_with_its_outcome(shim, db_store):
    app, legacy = shim
    for _ in range(3):
        assert legacy.get(PRODUCTS, client_id="full").status_code == 200
    assert legacy.get(PRODUCTS + "/999999999", client_id="full").status_code == 404
    refused = legacy.patch(PRODUCTS + "/1/pickup-locations/1/stock-lots/1", client_id="reader",
                           json={})
    assert refused.status_code == 403
    app.extensions["shim"].usage.flush()
    found = {(u.client_id, u.route): sum(c for c, _ in u.days.values()) for u in
             db_store.usage_by_route(0)}
    errors = {(u.client_id, u.route): sum(e for _, e in u.days.values()) for u in
              db_store.usage_by_route(0)}
    assert found == {
        ("full", "GET /v1/products"): 3,
        ("full", "GET /v1/products/<product_id>"): 1,
        ("reader", "PATCH /v1/products/<product_id>/pickup-locations/<pickup_location_id>"
                   "/stock-lots/<stock_lot_id>"): 1}
    assert errors[("full", "GET /v1/products")] == 0
    assert errors[("full", "GET /v1/products/<product_id>")] == 1


# --- the retirement plan ------------------------------------------------------------------------

def client(client_id: str, created_at: float | None = None) -> Client:
    return Client(client_id=client_id, secret_digest="x", scopes=frozenset({"read"}),
                  seller="main", created_at=created_at)


def test_the_plan_marks_clients_idle_for_long_enough_ready_to_retire():
    now = T0
    today = int(now // DAY_S)
    routes = [
        RouteUsage("busy", "GET /v1/products", now - 40 * DAY_S, now - 60,
                   {today: (10, 1), today - 29: (5, 0), today - 30: (99, 99)}),
        RouteUsage("busy", "PATCH /v1/x", now - DAY_S, now - DAY_S, {today - 1: (1, 1)}),
        RouteUsage("quiet", "GET /v1/products", now - 50 * DAY_S, now - 14 * DAY_S,
                   {today - 14: (2, 0)}),
        RouteUsage("gone", "GET /v1/products", now - 3 * DAY_S, now - 3 * DAY_S,
                   {today - 3: (1, 0)}),
    ]
    clients = [client("busy"), client("quiet"), client("new", created_at=now - 2 * DAY_S),
               client("never", created_at=now - 20 * DAY_S)]
    result = plan(routes, clients, now=now, days=30, retire_after_days=14)
    by_id = {c.client_id: c for c in result.clients}
    assert list(by_id) == ["busy", "gone", "never", "new", "quiet"]
    busy = by_id["busy"]
    assert (busy.calls, busy.errors, busy.ready_to_retire) == (16, 2, False)
    assert busy.error_share == 2 / 16
    assert [r.route for r in busy.routes] == ["GET /v1/products", "PATCH /v1/x"]
    assert busy.routes[0].daily_calls[0] == 5 and busy.routes[0].daily_calls[-1] == 10
    assert len(busy.daily_calls) == 30 and sum(busy.daily_calls) == 16
    assert busy.first_at == now - 40 * DAY_S and busy.last_at == now - 60
    assert by_id["quiet"].idle_days == 14 and by_id["quiet"].ready_to_retire
    assert by_id["gone"].seller is None and not by_id["gone"].ready_to_retire
    assert by_id["new"].calls == 0 and not by_id["new"].ready_to_retire
    assert by_id["never"].ready_to_retire and by_id["never"].last_at is None
    assert result.day_dates()[-1] == time.strftime("%Y-%m-%d", time.gmtime(now))
    assert len(result.day_dates()) == 30
