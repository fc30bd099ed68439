"""The services' lifetime: complete when built, nothing running until the runner starts it,
one ``close`` for everything, under ``create_app`` and under ``serve``."""

from __future__ import annotations

import dataclasses
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from shim.app import create_app
from shim.services import Services, get_services
from shim.store import IssuedToken
from shim.store.records import DayTally

BACKGROUND = {"token-refresher", "token-purger", "usage-flusher"}


def background_threads() -> set[str]:
    return {thread.name for thread in threading.enumerate()} & BACKGROUND


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_services_are_frozen_and_complete(db_settings, db_store):
    services = Services.open(db_settings, store=db_store)
    with services:
        assert services.tokens is not None and services.usage is not None
        with pytest.raises(dataclasses.FrozenInstanceError):
            services.store = db_store  # type: ignore[misc]


def test_create_app_starts_nothing(db_settings, db_store):
    assert db_settings.background_tasks  # the default: a runner would start the tasks
    before = background_threads()
    app = create_app(db_settings, store=db_store)
    assert background_threads() == before
    assert not get_services(app).running
    get_services(app).close()


def test_start_runs_the_background_work_and_close_ends_it(db_settings, db_store):
    settings = dataclasses.replace(db_settings, refresh_interval_s=3600, purge_interval_s=0.05,
                                   usage_flush_interval_s=3600)
    db_store.save_token("expired", IssuedToken("full", frozenset(), time.time() - 1))
    old_day = int(time.time() // 86400) - settings.usage_retention_days - 1
    db_store.add_usage({}, {("full", "GET /v1/products", old_day): DayTally(
        1, 0, old_day * 86400, old_day * 86400)})
    services = Services.open(settings, store=db_store)
    with services.start() as started:
        assert started is services and services.running
        assert background_threads() == BACKGROUND
        assert services.start() is services  # a second start starts nothing more
        # Found at time 0 until the purger deletes it (expired now).
        assert wait_for(lambda: db_store.find_caller("expired", 0) is None)
        # And the usage past its retention.
        assert wait_for(lambda: db_store.usage_by_route(0) == [])
        services.usage.count("full")
    # Closed: the threads are gone, and the count made after the last flush is written.
    assert not services.running and background_threads() == set()
    assert db_store.usage_since(0) == {"full": 1}
    services.close()  # twice is harmless
    assert db_store.get_seller("main") is not None  # a store passed in stays open
    assert not services.start().running  # nothing starts again once closed


class Worker:
    """What gunicorn's worker hooks read of a worker: the app it serves."""

    def __init__(self, wsgi: object) -> None:
        self.wsgi = wsgi


def test_gunicorn_hooks_start_and_close_a_shim_and_leave_other_apps_alone(db_settings,
                                                                         db_store):
    from shim import gunicorn_conf

    def other_app(environ, start_response):  # the bench serves its passthrough this way
        return []

    for wsgi in (other_app, None):
        gunicorn_conf.post_worker_init(Worker(wsgi))
        gunicorn_conf.worker_exit(None, Worker(wsgi))
    app = create_app(db_settings, store=db_store)
    gunicorn_conf.post_worker_init(Worker(app))
    assert get_services(app).running and background_threads() == BACKGROUND
    gunicorn_conf.worker_exit(None, Worker(app))
    assert not get_services(app).running and background_threads() == set()


def test_declarative_mode_has_no_background_work(settings):
    with Services.open(settings).start() as services:
        assert not services.running and background_threads() == set()


@pytest.mark.slow
def test_serve_runs_the_background_work_and_writes_usage_on_stop(
        db_settings, serve_environment, db_store, sandbox, test_secrets, processes, tmp_path):
    """gunicorn's worker hooks: started after the app loads, closed when the worker exits."""
    db_store.save_token("expired", IssuedToken("full", frozenset(), time.time() - 1))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = serve_environment(SHIM_PURGE_INTERVAL_S="0.1", SHIM_USAGE_FLUSH_INTERVAL_S="3600",
                            SHIM_BIND=f"127.0.0.1:{port}", SHIM_LOG_LEVEL="warning")
    output = tmp_path / "serve.out"
    with output.open("wb") as sink:
        serve = processes.start([sys.executable, "-m", "shim", "serve"], env=env, stdout=sink,
                                stderr=sink)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert serve.poll() is None, output.read_text()
        try:
            return requests.get(base + "/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    assert wait_for(answers, timeout=60), output.read_text()
    # Found at time 0 until the worker's purger deletes it (expired now).
    assert wait_for(lambda: db_store.find_caller("expired", 0) is None), "no purge ran"
    token = requests.post(base + "/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret}).json()["access_token"]
    assert requests.get(base + "/v1/pickup-locations", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert db_store.usage_since(0) == {}  # counted in the worker's memory only
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=60) == 0, output.read_text()
    assert db_store.usage_since(0) == {"full": 1}, Path(output).read_text()
