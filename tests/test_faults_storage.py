"""Storage faults in database mode: SQLite locked by another writer, PostgreSQL unreachable.

A request that needs storage while it is down or busy must answer a 503 with Retry-After (a
passing condition the client can wait out), never a 500, and the shim must serve again once
storage is back. PostgreSQL is cut off by a TCP relay the test owns (the shared server keeps
running); SQLite is locked by a second connection holding ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sqlite3
import threading
import time
from dataclasses import replace

import pytest
import requests

from shim import errors
from shim.app import create_app
from shim.serving import LocalServer
from shim.store import open_store
from shim.store.crypto import Sealer, new_key
from shim.store.postgres import AdvisoryLocks, PostgresBackend
from shim.store.sql import SqlStore
from shim.store.sqlite import SqliteBackend

PG_URL = os.environ.get("SHIM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
STORE_DOWN = {"title": "Service Unavailable", "detail": errors.STORE_UNAVAILABLE}
BUSY_TIMEOUT_S = 0.2
PG_TIMEOUT_S = 1.0


def db_settings(make_settings, operator_token, sandbox, database_url: str, **overrides):
    return make_settings(sandbox.api_url, sellers={}, clients={},
                         database_url=database_url, encryption_key=new_key(),
                         operator_token=operator_token,
                         rate_limit_per_second=10_000, **overrides)


def token(base_url: str, test_secrets) -> requests.Response:
    return requests.post(base_url + "/oauth2/token", timeout=30, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret})


def assert_store_down(answer: requests.Response) -> None:
    assert (answer.status_code, answer.json()) == (503, STORE_DOWN)
    assert answer.headers["retry-after"] == "1"


def inject(sandbox, **rule) -> None:
    requests.post(sandbox.base_url + "/_sandbox/faults", json=rule,
                  timeout=5).raise_for_status()


# --- SQLite locked --------------------------------------------------------------------------


@pytest.fixture
def sqlite_shim(
        make_settings, operator_token, legacy_client, seed_registry, test_secrets, client_digest,
        sandbox, tmp_path):
    """The shim on an SQLite file whose busy timeout is short, and a way to lock that file."""
    path = tmp_path / "shim.db"
    settings = db_settings(make_settings, operator_token, sandbox, f"sqlite:///{path}")
    store = SqlStore(SqliteBackend(str(path), busy_timeout_s=BUSY_TIMEOUT_S),
                     Sealer(settings.encryption_key))
    store.migrate()
    seed_registry(store)
    app = create_app(settings, store=store)
    with LocalServer(app) as server:
        legacy = legacy_client(server.base_url)
        legacy.token()
        yield server, legacy, path
        legacy.close()
    app.extensions["shim"].upstream.close()
    store.close()


@contextlib.contextmanager
def locked(path):
    """Hold SQLite's write lock on ``path`` from another connection, as a busy writer would."""
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_reads_go_on_while_another_writer_holds_sqlite(sqlite_shim):
    _, legacy, path = sqlite_shim
    with locked(path):
        assert legacy.get(LOT).status_code == 200  # WAL: readers do not wait for the writer


def test_a_refresh_that_cannot_write_is_a_503_and_works_once_free(sqlite_shim, sandbox):
    """A refused seller token must be refreshed, and the refresh written: the file is locked."""
    _, legacy, path = sqlite_shim
    inject(sandbox, api="/rss/stockLot/get", kind="IllegalAccessToken")
    with locked(path):
        started = time.monotonic()
        answer = legacy.get(LOT)
        elapsed = time.monotonic() - started
    assert_store_down(answer)
    assert elapsed < BUSY_TIMEOUT_S + 1
    inject(sandbox, api="/rss/stockLot/get", kind="IllegalAccessToken")
    assert legacy.get(LOT).status_code == 200  # refreshed and replayed


def test_issuing_a_token_while_sqlite_is_locked_is_a_503(sqlite_shim, test_secrets):
    server, _, path = sqlite_shim
    with locked(path):
        answer = token(server.base_url, test_secrets)
    assert_store_down(answer)


def test_a_locked_sqlite_file_holds_a_request_no_longer_than_the_lock_timeout(
        make_settings, operator_token, test_secrets, client_digest, sandbox, tmp_path):
    settings = db_settings(make_settings, operator_token, sandbox,
                           f"sqlite:///{tmp_path / 'shim.db'}")
    store = open_store(settings)
    try:
        assert store.backend._busy_timeout_s <= settings.lock_timeout_s
    finally:
        store.close()


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sqlite_connections_do_not_pile_up_per_request(sqlite_shim):
    _, legacy, _ = sqlite_shim
    legacy.get(LOT)
    before = open_files()
    for _ in range(50):
        assert legacy.get(LOT).status_code == 200
    assert open_files() - before < 20


# --- PostgreSQL unreachable -----------------------------------------------------------------


class Relay:
    """A TCP relay to PostgreSQL that the test can cut (refuse and reset) and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listen (again, on the same port) and relay every connection."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and reset every relayed connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def url(self, schema: str) -> str:
        return PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}") + (
            f"?options=-c%20search_path%3D{schema}")


def pg_target() -> tuple[str, int]:
    return "127.0.0.1", int(PG_URL.split("@127.0.0.1:")[1].split("/")[0])


@pytest.fixture
def relays():
    made: list[Relay] = []

    def make() -> Relay:
        made.append(Relay(pg_target()))
        return made[-1]

    yield make
    for relay in made:
        relay.cut()


def pg_store(relay: Relay, schema: str, key: str) -> SqlStore:
    backend = PostgresBackend(relay.url(schema).split("?")[0], schema=schema, max_size=4,
                              timeout_s=PG_TIMEOUT_S)
    return SqlStore(backend, Sealer(key))


@pytest.fixture
def pg_shim(
        make_settings, operator_token, seed_registry, test_secrets, client_digest, sandbox,
        pg_schema, relays):
    """The shim on PostgreSQL through a relay; yields (server, legacy client, relay, store)."""
    relay = relays()
    settings = db_settings(make_settings, operator_token, sandbox, relay.url(pg_schema.name),
                           lock_timeout_s=PG_TIMEOUT_S)
    store = pg_store(relay, pg_schema.name, settings.encryption_key)
    store.migrate()
    seed_registry(store)
    apps = []

    def serve(store_for_app=store, **overrides):
        app = create_app(replace(settings, **overrides), store=store_for_app)
        apps.append(app)
        return LocalServer(app)

    yield serve, relay, settings
    for app in apps:
        app.extensions["shim"].upstream.close()
    store.close()


def test_postgresql_unreachable_is_a_503_and_the_shim_serves_once_it_is_back(legacy_client,
        pg_shim, test_secrets, capsys):
    serve, relay, _ = pg_shim
    with serve() as server:
        legacy = legacy_client(server.base_url)
        try:
            assert legacy.get(LOT).status_code == 200
            relay.cut()
            worst = 0.0
            for _ in range(3):
                started = time.monotonic()
                assert_store_down(legacy.get(LOT))
                assert_store_down(token(server.base_url, test_secrets))
                worst = max(worst, time.monotonic() - started)
            relay.restore()
            back = time.monotonic()
            while legacy.get(LOT).status_code != 200:
                time.sleep(0.05)
            recovery = time.monotonic() - back
        finally:
            legacy.close()
    with capsys.disabled():
        print(f"\n[faults] PostgreSQL cut off: worst 503 pair in {worst:.2f} s "
              f"(pool timeout {PG_TIMEOUT_S} s); serving again {recovery:.2f} s after its return")
    assert worst < 2 * PG_TIMEOUT_S + 1


class SeparateLocks:
    """The store, with its PATCH locks taken through another pool (another relay)."""

    def __init__(self, store: SqlStore, locks: AdvisoryLocks) -> None:
        self._store, self._locks = store, locks

    def locks(self) -> AdvisoryLocks:
        return self._locks

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_patch_whose_lock_cannot_be_taken_is_a_503(legacy_client, pg_shim, relays,
                                                    pg_schema):
    """Production takes locks from the store's own pool; a second relay cuts only the locks'
    way to PostgreSQL, so the request gets past authentication to the lock."""
    serve, _, settings = pg_shim
    lock_relay = relays()
    lock_store = pg_store(lock_relay, pg_schema.name, settings.encryption_key)
    store = pg_store(relays(), pg_schema.name, settings.encryption_key)
    try:
        with serve(SeparateLocks(store, lock_store.locks())) as server:
            legacy = legacy_client(server.base_url)
            try:
                lock_relay.cut()
                answer = legacy.patch(LOT, json={"quantityAtPickupLocation": 20},
                                      headers={"If-Match": '"10"'})
            finally:
                legacy.close()
    finally:
        lock_store.close()
        store.close()
    assert (answer.status_code, answer.headers.get("retry-after")) == (503, "1")


def test_patches_waiting_on_locks_leave_the_store_to_other_requests(
        legacy_client, pg_shim, sandbox):
    """A PATCH holds a lock connection for its whole read-check-write. Ten at once on one
    lot must neither hold nor wait for the connections every request needs for its token
    (the store's pool has 4 here): they queue in the process, on a pool of their own."""
    serve, _, _ = pg_shim
    lock_timeout_s = 4 * PG_TIMEOUT_S  # waiters outlast a lookup's wait for a connection
    requests.post(sandbox.base_url + "/_sandbox/latency", json={"ms": 300},
                  timeout=5).raise_for_status()
    statuses: list[int] = []
    try:
        with serve(lock_timeout_s=lock_timeout_s, lot_queue=10) as server:
            legacy = legacy_client(server.base_url)
            bearer = {"Authorization": f"Bearer {legacy.token()}", "If-Match": "*"}

            def patch(quantity: int) -> None:
                with requests.Session() as session:
                    statuses.append(session.patch(
                        server.base_url + LOT, headers=bearer, timeout=30,
                        json={"quantityAtPickupLocation": quantity}).status_code)

            storm = [threading.Thread(target=patch, args=(20 + n,)) for n in range(10)]
            for thread in storm:
                thread.start()
            time.sleep(0.5)  # the first PATCH holds the lock; the others queue behind it
            started = time.monotonic()
            product = legacy.get("/v1/products/100150")
            newcomer = legacy_client(server.base_url)
            try:
                newcomer.token("reader")
            finally:
                newcomer.close()
            took = time.monotonic() - started
            for thread in storm:
                thread.join()
            legacy.close()
    finally:
        requests.post(sandbox.base_url + "/_sandbox/latency", json={"ms": 0}, timeout=5)
    assert product.status_code == 200
    assert took < 2 * PG_TIMEOUT_S + 1  # served, not left waiting for a connection
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1


def test_new_tokens_that_cannot_be_stored_are_an_alert(sqlite_shim, sandbox, caplog):
    """The file is free when the refresh starts (so the platform is asked) and held by another
    writer when the answer comes back: an honest 503, and an ERROR line for the operator,
    since a platform that rotated the refresh token leaves the seller to authorize again."""
    _, legacy, path = sqlite_shim
    inject(sandbox, api="/rss/stockLot/get", kind="IllegalAccessToken")
    inject(sandbox, api="/auth/token/refresh", kind="latency", latency_ms=1000)
    holding = threading.Event()

    def hold() -> None:
        # Wait for the refresh to take the seller lock (then it reads, and calls the
        # platform for a second), and hold the file until well after the answer.
        descriptor = os.open(f"{path}-tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(descriptor, fcntl.LOCK_UN)
                    time.sleep(0.005)
                except BlockingIOError:
                    break
        finally:
            os.close(descriptor)
        time.sleep(0.2)
        with locked(path):
            holding.set()
            time.sleep(1.5)

    holder = threading.Thread(target=hold)
    holder.start()
    with caplog.at_level(logging.ERROR, logger="shim.store.sql"):
        answer = legacy.get(LOT)
    holder.join()
    assert holding.is_set()
    assert_store_down(answer)
    assert any("new tokens of seller main could not be stored" in record.getMessage()
               for record in caplog.records)
