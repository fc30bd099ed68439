"""Health, readiness, metrics and request ids, through real HTTP."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
import requests

from shim.app import create_app
from shim.record.settings import STORE_ID
from shim.serving import LocalServer

PRODUCT = "/v1/products/100150"


@pytest.fixture
def db_app(db_settings, db_store):
    return create_app(db_settings, store=db_store)


@pytest.fixture
def db_server(db_app):
    with LocalServer(db_app) as server:
        yield server


def metric(text: str, name: str, **labels) -> float:
    """Return the value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def scrape(base_url: str, operator_token: str) -> str:
    answer = requests.get(base_url + "/metrics", timeout=5,
                          headers={"Authorization": f"Bearer {operator_token}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def test_healthz_needs_nothing(shim_server):
    answer = requests.get(shim_server.base_url + "/healthz", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_readyz_is_ready_with_a_healthy_store(db_server):
    answer = requests.get(db_server.base_url + "/readyz", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"storage": "ok"}}


def test_readyz_stays_ready_when_a_seller_must_authorize_again(
        db_server, db_store, operator_token):
    # One seller's lapsed consent must not take every tenant off a load balancer.
    with db_store.backend.transaction(exclusive=True) as tx:
        tx.execute("UPDATE sellers SET access_expires_at = :past, needs_reauth = :yes",
                   {"past": time.time() - 1, "yes": True})
    answer = requests.get(db_server.base_url + "/readyz", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"storage": "ok"}}
    assert "main" not in answer.text and "seller" not in answer.text
    page = requests.get(db_server.base_url + "/operator/status", timeout=5,
                        headers={"Authorization": f"Bearer {operator_token}"})
    assert page.status_code == 200 and "needed" in page.text  # seller health lives here


def test_readyz_is_unready_when_storage_is_unavailable(db_server, db_store):
    db_store.close()
    db_store.backend.path = "/nonexistent/dir/shim.db"  # cannot be reopened
    answer = requests.get(db_server.base_url + "/readyz", timeout=5)
    assert answer.status_code == 503
    assert answer.json() == {"status": "unready", "checks": {"storage": "unavailable"}}


def test_metrics_need_the_operator_credential_not_a_legacy_token(legacy_client, db_server):
    legacy = legacy_client(db_server.base_url)
    assert requests.get(db_server.base_url + "/metrics", timeout=5).status_code == 401
    answer = requests.get(db_server.base_url + "/metrics", timeout=5,
                          headers={"Authorization": f"Bearer {legacy.token()}"})
    assert answer.status_code == 401
    legacy.close()


def test_metrics_count_requests_upstream_calls_limits_refreshes_and_usage(
        legacy_client, operator_token, db_server, db_store, sandbox, test_secrets):
    legacy = legacy_client(db_server.base_url)
    for _ in range(3):
        assert legacy.get(PRODUCT).status_code == 200
    assert legacy.get("/v1/products/999999999").status_code == 404
    sandbox.state.expire(STORE_ID, access=True, refresh=False)
    assert legacy.get(PRODUCT).status_code == 200  # refreshed and replayed
    statuses = [legacy.get("/v1/pickup-jobs?from=" + str(int(time.time() * 1000)))
                .status_code for _ in range(3)]
    assert 429 in statuses
    text = scrape(db_server.base_url, operator_token)
    legacy.close()
    route = "/v1/products/<product_id>"
    assert metric(text, "shim_legacy_requests_total", route=route, method="GET",
                  status="200") == 4
    assert metric(text, "shim_legacy_requests_total", route=route, method="GET",
                  status="404") == 1
    assert metric(text, "shim_legacy_request_duration_seconds_count", route=route) == 5
    assert metric(text, "shim_upstream_calls_total", api="/rss/product/get", code="0") == 4
    assert metric(text, "shim_upstream_calls_total", api="/rss/product/get",
                  code="IllegalAccessToken") == 1
    assert metric(text, "shim_upstream_calls_total", api="/rss/product/get",
                  code="BusinessFailure") == 1
    assert metric(text, "shim_upstream_calls_total", api="/auth/token/refresh", code="0") == 1
    assert metric(text, "shim_seller_token_refreshes_total", seller="main",
                  result="refreshed") == 1
    assert metric(text, "shim_rate_limited_total", route="/v1/pickup-jobs",
                  client="full") == statuses.count(429)
    assert metric(text, "shim_client_requests_total", client="full") == 5 + 3
    for secret in (test_secrets.app_secret, test_secrets.access_token, operator_token):
        assert secret not in text


def test_request_methods_outside_http_do_not_grow_the_metrics(operator_token, db_server):
    """Any token is a method to the server; a label per invented method would let anyone
    grow /metrics without bound."""
    for index in range(5):
        requests.request(f"XQ{index:03d}", db_server.base_url + "/v1/products", timeout=5)
    requests.request("PATCH", db_server.base_url + "/v1/products", timeout=5)
    text = scrape(db_server.base_url, operator_token)
    assert "XQ0" not in text
    # No rule has these methods: the route label is "unmatched", bounded as well.
    assert metric(text, "shim_legacy_requests_total", route="unmatched", method="other",
                  status="401") == 5
    assert metric(text, "shim_legacy_requests_total", route="unmatched", method="PATCH",
                  status="401") == 1


def test_metrics_count_transport_retries(legacy_client, settings, sandbox):
    from dataclasses import replace

    app = create_app(replace(settings, read_retries=2))
    with LocalServer(app) as server:
        legacy = legacy_client(server.base_url)
        requests.post(f"{sandbox.base_url}/_sandbox/faults", timeout=5,
                      json={"api": "/rss/product/get", "kind": "http503", "times": 1})
        assert legacy.get(PRODUCT).status_code == 200
        legacy.close()
    body, _ = app.extensions["shim"].metrics.exposition()
    assert metric(body.decode(), "shim_upstream_retries_total", api="/rss/product/get") == 1


def test_request_ids_tie_the_legacy_request_to_the_upstream_ones(legacy, sandbox, caplog):
    with caplog.at_level(logging.INFO, logger="shim.requests"):
        answer = legacy.get(PRODUCT, headers={"X-Request-Id": "client-chosen-42"})
    assert answer.headers["x-request-id"] == "client-chosen-42"
    line = [r for r in caplog.records if r.name == "shim.requests"][-1]
    upstream_ids = [e["request_id"] for e in sandbox.state.ledger()
                    if e["api"] == "/rss/product/get"]
    assert line.request_id == "client-chosen-42"
    assert line.upstream_request_ids == upstream_ids and upstream_ids
    assert line.status == 200 and line.client == "full"
    assert line.route == "/v1/products/<product_id>"


def test_an_unsafe_request_id_is_replaced(legacy):
    answer = legacy.get(PRODUCT, headers={"X-Request-Id": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])


def test_log_lines_are_json_with_the_request_id(legacy, sandbox):
    from shim.logs import JsonFormatter, RequestContextFilter

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    logging.getLogger("shim.requests").addHandler(handler)
    try:
        legacy.get("/v1/products?access_token=should-not-be-logged",
                   headers={"X-Request-Id": "req-7"})
    finally:
        logging.getLogger("shim.requests").removeHandler(handler)
    record = json.loads(lines[-1])
    assert record["request_id"] == "req-7" and record["path"] == "/v1/products"
    assert "should-not-be-logged" not in lines[-1]


def test_a_seller_needing_reauthorization_is_a_state_read_from_the_store(
        db_server, db_store, operator_token):
    """An alert needs the state, also for a seller marked before this process started, and
    it must clear once the seller authorized again (through any instance)."""
    assert metric(scrape(db_server.base_url, operator_token),
                  "shim_seller_needs_reauthorization", seller="main") == 0
    with db_store.backend.transaction(exclusive=True) as tx:
        tx.execute("UPDATE sellers SET needs_reauth = :yes", {"yes": True})
    assert metric(scrape(db_server.base_url, operator_token),
                  "shim_seller_needs_reauthorization", seller="main") == 1
    with db_store.backend.transaction(exclusive=True) as tx:
        tx.execute("UPDATE sellers SET needs_reauth = :no", {"no": False})
    assert metric(scrape(db_server.base_url, operator_token),
                  "shim_seller_needs_reauthorization", seller="main") == 0
