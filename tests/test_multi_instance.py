"""Two shim processes (gunicorn) on one PostgreSQL and one Redis behave as one shim.

Shown with real servers: a client's per-second limit holds across both instances; two
PATCHes holding the same ETag through different instances cannot both succeed; one seller
refresh per expiry; no token answers once its revocation returned, though each worker caches
tokens. And what happens when Redis is unreachable: the limiter fails open.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from contextlib import redirect_stdout
from dataclasses import replace

import pytest
import requests
from served import GUNICORN, Server, free_port, running, running_all

from shim import cli, credentials, scopes
from shim.app import create_app
from shim.record.settings import APP_KEY, STORE_ID
from shim.serving import LocalServer
from shim.store import open_store
from shim.store.crypto import new_key
from shim.store.records import Client

REDIS_URL = os.environ.get("SHIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"


@pytest.fixture
def environment(pg_schema, sandbox, test_secrets):
    return {
        **os.environ,
        "SHIM_APP_KEY": APP_KEY,
        "SHIM_APP_SECRET": test_secrets.app_secret,
        "SHIM_API_URL": sandbox.api_url,
        "SHIM_AUTH_URL": sandbox.api_url,
        "SHIM_DATABASE_URL": pg_schema.url,
        "SHIM_ENCRYPTION_KEY": new_key(),
        "SHIM_RATE_LIMIT_STORAGE": REDIS_URL,
        "SHIM_RATE_LIMIT_KEY_PREFIX": "shim-test-" + secrets.token_hex(4),
        "SHIM_BACKGROUND_TASKS": "false",
        "SHIM_READ_RETRIES": "0",
        "SHIM_WORKERS": "2",
        "SHIM_LOG_LEVEL": "warning",
    }


@pytest.fixture
def instance_env() -> dict[str, str]:
    """Settings the instances get on top of ``environment`` (a test parametrizes it)."""
    return {}


@pytest.fixture
def instances(legacy_client, seed_registry, environment, instance_env, tmp_path):
    """Two gunicorn instances (two workers each) on one PostgreSQL and Redis; yield the
    test's store and a legacy client of each."""
    from shim import config

    store = open_store(config.load(env=environment))  # migrates, as the first start would
    seed_registry(store)
    servers = [Server(GUNICORN, {**environment, **instance_env,
                                 "SHIM_BIND": f"127.0.0.1:{port}"},
                      port, tmp_path / f"gunicorn-{port}.log", module="gunicorn")
               for port in (free_port(), free_port())]
    try:
        with running_all(servers) as urls:
            yield store, [legacy_client(url) for url in urls]
    finally:
        store.close()


def burst(calls):
    """Run the calls together, released at once; return their results in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index, call):
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_clients_limit_holds_across_both_instances(instances, sandbox):
    _store, clients = instances
    for client in clients:
        client.token()
    for _attempt in range(5):
        # Start just after a second begins, so the burst fits one window.
        time.sleep(1.02 - time.time() % 1)
        seen = len(sandbox.state.ledger())
        started = time.time()
        answers = burst([lambda c=clients[i % 2]: c.get("/v1/products/100150")
                         for i in range(24)])
        if int(time.time()) == int(started):
            break
    else:  # pragma: no cover - a machine this slow would show it in the message
        pytest.fail("no burst fitted in one second in five attempts")
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 10 + [429] * 14
    remaining = sorted(int(a.headers["x-ratelimit-remaining-second"]) for a in answers
                       if a.status_code == 200)
    assert remaining == list(range(10))  # one shared counter: every place taken once
    assert all(a.headers["retry-after"] for a in answers if a.status_code == 429)
    # A read's count is read back before its platform call: the refused never reached it.
    assert len(sandbox.state.ledger(after=seen)) == 10


def test_two_patches_with_one_etag_through_two_instances_cannot_both_succeed(
        instances, sandbox):
    _store, clients = instances
    for client in clients:
        client.token()
    requests.post(f"{sandbox.base_url}/_sandbox/latency", json={"ms": 150}, timeout=5)
    answers = burst([
        lambda: clients[0].patch(LOT, json={"quantityAtPickupLocation": 30},
                                 headers={"If-Match": '"10"'}),
        lambda: clients[1].patch(LOT, json={"quantityAtPickupLocation": 40},
                                 headers={"If-Match": '"10"'}),
    ])
    assert sorted(a.status_code for a in answers) == [200, 412]
    winner = next(a for a in answers if a.status_code == 200)
    updates = [e for e in sandbox.state.ledger() if e["api"] == "/rss/stockLot/update"]
    assert len(updates) == 1
    assert sandbox.state.get_lot(STORE_ID, 100150, "23789")["quantityAtPickupLocation"] == \
        winner.json()["quantityAtPickupLocation"]


def test_one_refresh_per_expiry_across_both_instances(instances, sandbox):
    store, clients = instances
    for client in clients:
        client.token()
    with store.backend.transaction() as tx:
        tx.execute("UPDATE sellers SET access_expires_at = :soon", {"soon": time.time() + 60})
    answers = burst([lambda c=clients[i % 2]: c.get("/v1/products/100150") for i in range(8)])
    assert [a.status_code for a in answers] == [200] * 8
    refreshes = [e for e in sandbox.state.ledger() if e["api"] == "/auth/token/refresh"]
    assert [e["code"] for e in refreshes] == ["0"]
    assert store.get_seller("main").generation == 2


@pytest.mark.parametrize("instance_env", [{
    "SHIM_BACKGROUND_TASKS": "true", "SHIM_USAGE_FLUSH_INTERVAL_S": "0.2",
    "SHIM_REFRESH_INTERVAL_S": "3600"}])
def test_the_daily_usage_counts_of_both_instances_add_up(instances):
    store, clients = instances
    first, second = clients
    for _ in range(3):
        assert first.get("/v1/products").status_code == 200
    for _ in range(2):
        assert second.get("/v1/products").status_code == 200
    assert second.get("/v1/products/999999999").status_code == 404

    def totals():
        return {usage.route: tuple(map(sum, zip(*usage.days.values(), strict=True)))
                for usage in store.usage_by_route(0) if usage.client_id == "full"}

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and totals() != {
            "GET /v1/products": (5, 0), "GET /v1/products/<product_id>": (1, 1)}:
        time.sleep(0.1)  # each worker of each instance flushes on its own
    assert totals() == {"GET /v1/products": (5, 0), "GET /v1/products/<product_id>": (1, 1)}
    assert store.usage_since(0) == {"full": 6}


def test_an_unreachable_redis_fails_open_fast_and_says_so(legacy_client, settings, caplog):
    closed = free_port()  # nothing listens there
    app = create_app(replace(settings, rate_limit_storage=f"redis://127.0.0.1:{closed}/0"))
    with LocalServer(app) as server, caplog.at_level(logging.ERROR):
        client = legacy_client(server.base_url)
        started = time.monotonic()
        answers = [client.get("/v1/products/100150") for _ in range(15)]
        elapsed = time.monotonic() - started
        client.close()
    assert [a.status_code for a in answers] == [200] * 15  # over the limit of 10: open
    assert all("x-ratelimit-limit-second" not in a.headers for a in answers)
    assert elapsed < 5  # no Redis timeout paid on every call
    assert any("rate-limit storage failed" in r.getMessage() for r in caplog.records)


def test_serve_adds_up_the_metrics_of_its_workers(environment, tmp_path):
    """`redmart-shim serve` runs two workers here; a scrape answered by either one shows
    what both counted (without a shared directory each showed its own, and Prometheus read
    every switch between them as a counter reset)."""
    from shim import config

    open_store(config.load(env=environment)).close()  # migrates, as the first start would
    port = free_port()
    operator = "operator-" + secrets.token_hex(16)
    env = {**environment, "SHIM_OPERATOR_TOKEN": operator}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running(["serve", "--bind", f"127.0.0.1:{port}"], env, port,
                 tmp_path / "serve.log") as url:
        # No token: a 401, counted by whichever worker took the (new) connection; sent
        # side by side so that both workers take some.
        answers = burst([lambda: requests.get(url + "/v1/products", timeout=5).status_code
                         for _ in range(20)])
        assert answers == [401] * 20
        counts = set()
        for _ in range(8):
            with requests.Session() as fresh:  # a new connection, so either worker answers
                text = fresh.get(url + "/metrics", timeout=5,
                                 headers={"Authorization": f"Bearer {operator}"}).text
            counts.update(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("shim_legacy_requests_total{")
                          and 'status="401"' in line and 'route="/v1/products"' in line)
    assert counts == {20.0}


@pytest.fixture
def served(seed_registry, environment, tmp_path):
    """Two ``redmart-shim serve`` instances (two workers each) on one PostgreSQL and Redis,
    with a limit no test client reaches; yield the test's store and the two base URLs."""
    from shim import config

    store = open_store(config.load(env=environment))  # migrates, as the first start would
    seed_registry(store)
    env = {**environment, "SHIM_RATE_LIMIT_PER_SECOND": "1000000"}
    servers = [Server(["serve", "--bind", f"127.0.0.1:{port}"], env, port,
                      tmp_path / f"serve-{port}.log") for port in (free_port(), free_port())]
    try:
        with running_all(servers) as urls:
            yield store, urls
    finally:
        store.close()


REVOCATIONS = 40
HAMMERS = 6


def test_no_request_sent_after_a_revocation_returned_is_answered(served, environment,
                                                                 monkeypatch):
    """Each worker caches token lookups; ``clients disable`` and ``clients rotate`` return
    only when no worker of either instance answers the client's tokens any more.

    Every request's send time is compared with the command's return, in one clock: any
    answer but 401 to a request sent after the return is a stale one.
    """
    store, urls = served
    key = environment["SHIM_ENCRYPTION_KEY"]
    # The commands below read their settings from the environment. It is set once, before
    # any hammer starts: requests reads os.environ on every call, and a key removed while
    # another thread iterates it raises KeyError there.
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    stale, checked, warm_statuses = [], 0, set()
    for round_ in range(REVOCATIONS):
        client_id = f"revoked{round_:02d}"
        secret = credentials.new_token()
        store.add_client(Client(client_id=client_id, scopes=frozenset(scopes.ALL),
                                secret_digest=credentials.hash_generated_secret(secret, key),
                                seller="main"))
        answer = requests.post(urls[round_ % 2] + "/oauth2/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret})
        assert answer.status_code == 200, answer.text
        bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        answers: list[tuple[str, float, int]] = []
        stop = threading.Event()

        def hammer(url, bearer=bearer, answers=answers, stop=stop):
            with requests.Session() as http:
                while not stop.is_set():
                    sent = time.monotonic()
                    status = http.get(url + "/v1/products/100150", headers=bearer,
                                      timeout=10).status_code
                    answers.append((url, sent, status))

        threads = [threading.Thread(target=hammer, args=(urls[i % 2],)) for i in range(HAMMERS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while {url for url, _sent, status in answers if status == 200} != set(urls):
            assert time.monotonic() < deadline, "the token never worked on both instances"
            time.sleep(0.01)
        time.sleep(0.1)  # every worker has answered with it by now, most of them from cache
        command = ("clients", "disable" if round_ % 2 else "rotate", client_id)
        with redirect_stdout(None):
            assert cli.main(list(command)) == 0
        returned = time.monotonic()
        time.sleep(0.15)
        stop.set()
        for thread in threads:
            thread.join()
        warm_statuses.update(status for _url, sent, status in answers if sent < returned)
        late = [(url, status) for url, sent, status in answers if sent > returned]
        checked += len(late)
        stale += [(round_, command[1], url, status) for url, status in late if status != 401]
    assert stale == []
    assert 200 in warm_statuses
    assert checked >= REVOCATIONS * HAMMERS  # every revocation was followed by requests
    # A worker registers its cache at its first token lookup, and both instances answered
    # 200: at least one caching worker each. Which of an instance's two workers nginx hands
    # its pooled connections to is nginx's choice, so not all four need to have served.
    with store.backend.transaction() as tx:
        assert len(tx.all("SELECT instance FROM token_cache_instances")) >= len(urls)
