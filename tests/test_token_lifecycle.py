"""Seller tokens over time, through real HTTP: refresh when due, refresh-and-replay once on
``IllegalAccessToken``, one refresh per expiry under concurrency, re-authorization state."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest
import requests

from shim import errors
from shim.app import create_app
from shim.record.settings import STORE_ID
from shim.services import get_services
from shim.serving import LocalServer
from shim.store import IssuedToken, open_store
from shim.store.sql import dump_rows

PRODUCT = "/v1/products/100150"


@pytest.fixture
def app(db_settings, db_store):
    return create_app(db_settings, store=db_store)


@pytest.fixture
def legacy(legacy_client, app):
    with LocalServer(app) as server:
        client = legacy_client(server.base_url)
        yield client
        client.close()


def last_seq(sandbox) -> int:
    entries = sandbox.state.ledger(0)
    return entries[-1]["seq"] if entries else 0


def calls(sandbox, after):
    return [(entry["api"], entry["code"]) for entry in sandbox.state.ledger(after)]


def make_due(store, name="main", *, seconds_left=3600):
    """Store an access expiry inside the refresh margin (the platform's token still works)."""
    seller = store.get_seller(name)
    store.update_tokens(name, lambda current: None)  # the lock path works on this row
    with store.backend.transaction(exclusive=True) as tx:
        tx.execute("UPDATE sellers SET access_expires_at = :at WHERE name = :name",
                   {"at": time.time() + seconds_left, "name": name})
    return seller


def test_a_due_token_is_refreshed_before_the_call_and_persisted(legacy, sandbox, db_store,
                                                                db_settings, test_secrets):
    make_due(db_store)
    mark = last_seq(sandbox)
    answer = legacy.get(PRODUCT)
    assert answer.status_code == 200, answer.text
    assert calls(sandbox, mark) == [("/auth/token/refresh", "0"), ("/rss/product/get", "0")]
    seller = db_store.get_seller("main")
    assert seller.generation == 2 and seller.last_refresh_result == "refreshed"
    assert seller.access_token != test_secrets.access_token
    assert seller.access_expires_at > time.time() + 800000
    # survives a restart: another store on the same file reads the new pair
    reopened = open_store(db_settings)
    assert reopened.get_seller("main").access_token == seller.access_token
    reopened.close()
    assert sandbox.state.store_for_access_token(seller.access_token) == STORE_ID
    assert sandbox.state.refresh_token_store(test_secrets.refresh_token) is None  # rotated


def test_a_refused_token_is_refreshed_once_and_the_call_replayed_once(legacy, sandbox,
                                                                      db_store):
    sandbox.state.expire(STORE_ID, access=True, refresh=False)
    mark = last_seq(sandbox)
    answer = legacy.get(PRODUCT)
    assert answer.status_code == 200, answer.text
    assert calls(sandbox, mark) == [("/rss/product/get", "IllegalAccessToken"),
                                    ("/auth/token/refresh", "0"), ("/rss/product/get", "0")]


def test_a_patch_refused_for_its_token_is_replayed_and_applied_once(ledger, legacy, sandbox,
                                                                    db_store):
    lot = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
    sandbox.state.expire(STORE_ID, access=True, refresh=False)
    answer = legacy.patch(lot, json={"quantityAtPickupLocation": 12},
                          headers={"If-Match": '"10"'})
    assert answer.status_code == 200, answer.text
    assert answer.headers["etag"] == '"12"'
    updates = [e for e in ledger(sandbox) if e["api"] == "/rss/stockLot/update"]
    assert [e["code"] for e in updates] == ["0"]


def test_a_refused_refresh_marks_reauthorization_and_later_calls_fail_fast(
        legacy, sandbox, app, db_store, caplog):
    sandbox.state.expire(STORE_ID, access=True, refresh=True)
    with caplog.at_level(logging.ERROR):
        answer = legacy.get(PRODUCT)
    assert answer.status_code == 503
    assert answer.json()["title"] == errors.REAUTHORIZE_TITLE
    assert any("must authorize the shim again" in r.getMessage() for r in caplog.records)
    seller = db_store.get_seller("main")
    assert seller.needs_reauth and seller.reauth_reason == "IllegalRefreshToken"
    metrics = app.extensions["shim"].metrics
    assert metrics.reauthorization_required.labels("main")._value.get() == 1
    mark = last_seq(sandbox)
    for _ in range(3):
        again = legacy.get(PRODUCT)
        assert again.status_code == 503
        assert again.json()["title"] == errors.REAUTHORIZE_TITLE
    assert calls(sandbox, mark) == []  # nothing loops: no upstream call at all


def test_one_refresh_per_expiry_under_concurrent_calls(legacy, sandbox, db_store):
    make_due(db_store)
    legacy.token()  # fetch the bearer token before the burst
    mark = last_seq(sandbox)
    barrier = threading.Barrier(8)
    statuses = []

    def call():
        barrier.wait()
        statuses.append(legacy.get(PRODUCT).status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    refreshes = [c for c in calls(sandbox, mark) if c[0] == "/auth/token/refresh"]
    assert refreshes == [("/auth/token/refresh", "0")]
    assert db_store.get_seller("main").generation == 2


def test_one_refresh_per_expiry_across_two_apps_on_one_database(
        legacy_client, db_settings, db_store, sandbox):
    make_due(db_store)
    apps = [create_app(db_settings, store=open_store(db_settings)) for _ in range(2)]
    with LocalServer(apps[0]) as first, LocalServer(apps[1]) as second:
        clients = [legacy_client(s.base_url) for s in (first, second)]
        for client in clients:
            client.token()
        mark = last_seq(sandbox)
        barrier = threading.Barrier(6)
        statuses = []

        def call(client):
            barrier.wait()
            statuses.append(client.get(PRODUCT).status_code)

        threads = [threading.Thread(target=call, args=(clients[i % 2],)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in clients:
            client.close()
    for app in apps:
        app.extensions["shim"].store.close()
    assert statuses == [200] * 6
    assert [c for c in calls(sandbox, mark) if c[0] == "/auth/token/refresh"] == [
        ("/auth/token/refresh", "0")]


def test_a_failed_refresh_keeps_the_working_token_and_is_not_retried_by_every_call(
        legacy, sandbox, db_store, test_secrets):
    make_due(db_store)
    requests.post(f"{sandbox.base_url}/_sandbox/faults",
                  json={"api": "/auth/token/refresh", "kind": "ServiceTimeout", "times": 5},
                  timeout=5)
    mark = last_seq(sandbox)
    for _ in range(3):
        assert legacy.get(PRODUCT).status_code == 200
    refreshes = [c for c in calls(sandbox, mark) if c[0] == "/auth/token/refresh"]
    assert refreshes == [("/auth/token/refresh", "ServiceTimeout")]
    seller = db_store.get_seller("main")
    assert seller.access_token == test_secrets.access_token and not seller.needs_reauth
    assert seller.last_refresh_result == "failed: ServiceTimeout"


def test_refresh_due_refreshes_each_due_seller_once(app, sandbox, db_store):
    make_due(db_store)
    tokens = app.extensions["shim"].tokens
    assert tokens.refresh_due() == 1
    assert tokens.refresh_due() == 0
    assert db_store.get_seller("main").generation == 2


def test_database_mode_refreshes_and_purges_in_the_background(db_settings, db_store, sandbox):
    make_due(db_store)
    now = time.time()
    db_store.save_token("expired", IssuedToken("full", frozenset(), now - 1))
    db_store.save_token("live", IssuedToken("full", frozenset(), now + 600))
    db_store.save_auth_state("old-state", "main", now - 1)
    settings = replace(db_settings, refresh_interval_s=0.05, purge_interval_s=0.05,
                       usage_flush_interval_s=0.05)
    app = create_app(settings, store=db_store)
    with get_services(app).start():  # as the runner does
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                db_store.get_seller("main").generation < 2
                or "expired" in dump_rows(db_store, ["issued_tokens"])):
            time.sleep(0.05)
    assert db_store.get_seller("main").generation == 2
    rows = dump_rows(db_store, ["issued_tokens", "auth_states"])
    assert "live" in rows and "expired" not in rows and "old-state" not in rows


def test_an_expired_refresh_token_is_a_reauthorization_without_a_call(app, sandbox,
                                                                      db_store, legacy):
    with db_store.backend.transaction(exclusive=True) as tx:
        tx.execute("UPDATE sellers SET access_expires_at = :now, refresh_expires_at = :now",
                   {"now": time.time() - 1})
    mark = last_seq(sandbox)
    answer = legacy.get(PRODUCT)
    assert answer.status_code == 503 and answer.json()["title"] == errors.REAUTHORIZE_TITLE
    assert calls(sandbox, mark) == []


def test_declarative_mode_does_not_refresh(legacy_declarative, sandbox):
    sandbox.state.expire(STORE_ID, access=True, refresh=False)
    mark = last_seq(sandbox)
    answer = legacy_declarative.get(PRODUCT)
    assert answer.status_code == 500  # the operator's file holds a dead token
    assert calls(sandbox, mark) == [("/rss/product/get", "IllegalAccessToken")]


@pytest.fixture
def legacy_declarative(legacy_client, settings):
    with LocalServer(create_app(replace(settings))) as server:
        client = legacy_client(server.base_url)
        yield client
        client.close()


def test_a_refused_refresh_keeps_serving_while_the_access_token_lasts(legacy, sandbox, app,
                                                                     db_store):
    make_due(db_store)
    sandbox.state.expire(STORE_ID, access=False, refresh=True)
    mark = last_seq(sandbox)
    for _ in range(3):
        assert legacy.get(PRODUCT).status_code == 200
    assert [c for c in calls(sandbox, mark) if c[0] == "/auth/token/refresh"] == [
        ("/auth/token/refresh", "IllegalRefreshToken")]  # alerted once, never retried
    seller = db_store.get_seller("main")
    assert seller.needs_reauth and seller.access_expires_at > time.time()
    metrics = app.extensions["shim"].metrics
    assert metrics.reauthorization_required.labels("main")._value.get() == 1


def test_a_slow_refresh_on_sqlite_leaves_the_database_to_other_writers(legacy_client,
        db_settings, db_store, sandbox):
    """The refresh call runs outside any transaction: issuing a token (a write) meanwhile
    neither waits for it nor fails with "database is locked"."""
    make_due(db_store)
    settings = replace(db_settings, store_timeout_s=0.5)
    store = open_store(settings)
    requests.post(f"{sandbox.base_url}/_sandbox/faults", timeout=5, json={
        "api": "/auth/token/refresh", "kind": "latency", "latency_ms": 1500}).raise_for_status()
    try:
        with LocalServer(create_app(settings, store=store)) as server:
            caller = legacy_client(server.base_url)
            caller.token()
            refreshing: list[int] = []
            worker = threading.Thread(
                target=lambda: refreshing.append(caller.get(PRODUCT).status_code))
            worker.start()
            time.sleep(0.5)  # the refresh call is on its way
            started = time.monotonic()
            newcomer = legacy_client(server.base_url)
            try:
                newcomer.token("reader")  # asserts the 200
            finally:
                newcomer.close()
            took = time.monotonic() - started
            worker.join()
            caller.close()
    finally:
        store.close()
    assert took < 1.0  # not held behind the 1.5 s refresh
    assert refreshing == [200]
    assert db_store.get_seller("main").generation == 2


def test_a_lost_refresh_answer_is_a_503_to_retry_then_a_reauthorization(
        legacy, sandbox, app, db_store, test_secrets, caplog):
    """The platform rotates the pair, and its answer never arrives: the rotated refresh
    token is gone with it, so nobody can recover the seller; the shim never answers 500."""
    sandbox.state.expire(STORE_ID, access=True, refresh=False)
    requests.post(f"{sandbox.base_url}/_sandbox/faults", timeout=5,
                  json={"api": "/auth/token/refresh", "kind": "lost_response"}
                  ).raise_for_status()
    with caplog.at_level(logging.ERROR):
        first = legacy.get(PRODUCT)
    assert first.status_code == 503, first.text
    assert first.headers["Retry-After"] == "5"
    assert any(r.levelname == "ERROR" and "refreshing seller main was lost" in r.getMessage()
               for r in caplog.records)
    metrics = app.extensions["shim"].metrics
    assert metrics.refresh_answers_lost.labels("main")._value.get() == 1
    assert sandbox.state.refresh_token_store(test_secrets.refresh_token) is None  # rotated
    second = legacy.get(PRODUCT)  # the next refresh finds the old refresh token refused
    assert second.status_code == 503
    assert second.json()["title"] == errors.REAUTHORIZE_TITLE
    assert db_store.get_seller("main").needs_reauth


def test_a_lost_refresh_answer_before_expiry_keeps_serving(legacy, sandbox, app, db_store):
    make_due(db_store)
    requests.post(f"{sandbox.base_url}/_sandbox/faults", timeout=5,
                  json={"api": "/auth/token/refresh", "kind": "lost_response"}
                  ).raise_for_status()
    assert legacy.get(PRODUCT).status_code == 200  # the access token lasts
    metrics = app.extensions["shim"].metrics
    assert metrics.refresh_answers_lost.labels("main")._value.get() == 1
    assert not db_store.get_seller("main").needs_reauth  # not known yet: the next refresh tells
