"""The token cache on PostgreSQL (shim/store/tokencache.py): what it serves, when it must not.

The whole path under load (two served instances, 40 revocations) is in test_multi_instance.py;
here each rule of the design on one store: a leased cache answers without the database, a
revocation waits for every live instance's ack, evicts a silent one and waits out its lease,
ignores a dead one, and an instance that was evicted or lost its connection starts empty.
"""

from __future__ import annotations

import time

import pytest

from shim.store.crypto import Sealer, new_key
from shim.store.postgres import PostgresBackend
from shim.store.records import Client, IssuedToken, Seller
from shim.store.sql import SqlStore
from shim.store.sqlite import SqliteBackend
from shim.store.tokencache import LEASE_S, MARGIN_S

NOW_SQL = "SELECT extract(epoch from clock_timestamp())::double precision AS now"


def registered(store: SqlStore) -> SqlStore:
    """Migrate ``store`` and register a seller "main" and an enabled client "erp"."""
    store.migrate()
    store.add_seller(Seller(name="main", store_id="414"))
    store.add_client(Client(client_id="erp", secret_digest="x", scopes=frozenset({"read"}),
                            seller="main"))
    return store


@pytest.fixture
def store(pg_schema):
    store = registered(SqlStore(PostgresBackend(pg_schema.server_url, schema=pg_schema.name,
                                                max_size=4),
                                Sealer(new_key())))
    yield store
    store.close()


def issue(store: SqlStore, digest: str, ttl: float = 600) -> float:
    """Store a token of "erp" under ``digest``; return its expiry."""
    expires_at = time.time() + ttl
    store.save_token(digest, IssuedToken(client_id="erp", scopes=frozenset({"read"}),
                                         expires_at=expires_at))
    return expires_at


def warm(store: SqlStore, digest: str) -> None:
    """Look ``digest`` up until the cache holds it (the listener registers first)."""
    cache = store.backend.token_cache
    assert cache is not None
    deadline = time.monotonic() + 10
    while not cache.reading():
        assert time.monotonic() < deadline, "the listener never took a lease"
        store.find_caller("nothing", time.time())  # starts the listener
        time.sleep(0.01)
    assert store.find_caller(digest, time.time()) is not None


def behind_its_back(store: SqlStore, sql: str, **params: object) -> None:
    """Change the database without a notification, as nothing in the shim ever does."""
    with store.backend.transaction() as tx:
        tx.execute(sql, params)


def fake_instance(store: SqlStore, name: str, heartbeat_age: float) -> None:
    """Register an instance that never acks, its last heartbeat ``heartbeat_age`` s ago."""
    with store.backend.transaction() as tx:
        now = tx.one(NOW_SQL)["now"]
        tx.execute("INSERT INTO token_cache_instances (instance, registered_at, heartbeat_at, "
                   "evicted) VALUES (:name, :then, :beat, FALSE)",
                   {"name": name, "then": now - 60, "beat": now - heartbeat_age})


def test_a_leased_cache_answers_until_a_revocation_and_never_after_expiry(store):
    expires_at = issue(store, "live")
    warm(store, "live")
    behind_its_back(store, "DELETE FROM issued_tokens")
    token, client = store.find_caller("live", time.time())  # from the cache
    assert (token.client_id, client.seller) == ("erp", "main")
    assert store.find_caller("live", expires_at + 1) is None  # expired, cache or not
    revocation = store.set_client_enabled("erp", False)
    assert revocation is not None
    assert revocation.acked == [store.backend.token_cache.instance]
    assert revocation.evicted == []
    assert store.find_caller("live", time.time()) is None


def test_a_silent_instance_is_evicted_and_its_lease_waited_out(store):
    issue(store, "live")
    warm(store, "live")
    fake_instance(store, "stuck", heartbeat_age=0)
    revocation = store.set_client_secret("erp", "new-digest")
    assert revocation is not None
    assert revocation.evicted == ["stuck"]
    assert revocation.acked == [store.backend.token_cache.instance]
    with store.backend.transaction() as tx:
        row = tx.one("SELECT evicted, heartbeat_at FROM token_cache_instances "
                     "WHERE instance = 'stuck'")
        now = tx.one(NOW_SQL)["now"]
    assert row["evicted"]
    assert now >= row["heartbeat_at"] + LEASE_S + MARGIN_S  # its lease is over
    assert store.find_caller("live", time.time()) is None


def test_a_dead_instance_is_not_waited_for(store):
    fake_instance(store, "crashed", heartbeat_age=LEASE_S + MARGIN_S + 1)
    revocation = store.set_client_enabled("erp", False)
    assert revocation is not None
    assert (revocation.acked, revocation.evicted) == ([], [])


def test_an_evicted_instance_empties_its_cache_before_reading_it_again(store):
    issue(store, "live")
    warm(store, "live")
    instance = store.backend.token_cache.instance
    behind_its_back(store, "DELETE FROM issued_tokens")
    behind_its_back(store, "UPDATE token_cache_instances SET evicted = TRUE "
                           "WHERE instance = :name", name=instance)
    deadline = time.monotonic() + 10
    while store.find_caller("live", time.time()) is not None:
        assert time.monotonic() < deadline, "the evicted instance kept serving its cache"
        time.sleep(0.05)
    while not store.backend.token_cache.reading():  # it registers again, empty
        assert time.monotonic() < deadline, "the evicted instance never registered again"
        time.sleep(0.05)
    with store.backend.transaction() as tx:
        assert tx.one("SELECT evicted FROM token_cache_instances WHERE instance = :name",
                      {"name": instance})["evicted"] is False
    assert store.find_caller("live", time.time()) is None


def test_a_lost_listening_connection_empties_the_cache(store):
    issue(store, "live")
    warm(store, "live")
    cache = store.backend.token_cache
    behind_its_back(store, "DELETE FROM issued_tokens")
    with store.backend.transaction() as tx:
        assert tx.one("SELECT pg_terminate_backend(:pid) AS done",
                      {"pid": cache.listener_pid})["done"]
    deadline = time.monotonic() + 10
    while store.find_caller("live", time.time()) is not None:
        assert time.monotonic() < deadline, "a lost listener's cache was still read"
        time.sleep(0.05)
    while not cache.reading():  # it listens again, with nothing stale
        assert time.monotonic() < deadline, "the listener never came back"
        time.sleep(0.05)
    assert store.find_caller("live", time.time()) is None


def test_sqlite_caches_nothing(tmp_path):
    store = registered(SqlStore(SqliteBackend(str(tmp_path / "shim.db")), Sealer(new_key())))
    try:
        issue(store, "live")
        assert store.find_caller("live", time.time()) is not None
        behind_its_back(store, "DELETE FROM issued_tokens")
        assert store.find_caller("live", time.time()) is None
        assert store.set_client_enabled("erp", False) is None  # nothing to wait for
    finally:
        store.close()
