"""``X-Content-Type-Options: nosniff`` on every kind of answer, over real HTTP."""

from __future__ import annotations

import pytest
import requests

from shim.app import create_app
from shim.serving import LocalServer

LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"


@pytest.fixture
def base_url(db_settings, db_store):
    with LocalServer(create_app(db_settings, store=db_store)) as server:
        yield server.base_url


def test_every_kind_of_answer_forbids_sniffing(base_url, legacy_client, operator_token):
    legacy = legacy_client(base_url)
    operator = {"Authorization": f"Bearer {operator_token}"}
    token_form = {"grant_type": "client_credentials", "client_id": "full",
                  "client_secret": legacy.client_secret}
    try:
        answers = {
            "legacy 200": legacy.get("/v1/products/100150"),
            "legacy 404": legacy.get("/v1/products/999999999"),
            "legacy 401": requests.get(base_url + "/v1/products", timeout=10),
            "legacy 400": legacy.get("/v1/pickup-jobs?from=yesterday"),
            "token 200": requests.post(base_url + "/oauth2/token", data=token_form, timeout=10),
            "token 400": requests.post(base_url + "/oauth2/token",
                                       data={"grant_type": "password"}, timeout=10),
            "kong 404": requests.get(base_url + "/no/such/route", timeout=10),
            "method 405": requests.delete(base_url + "/oauth2/token", timeout=10),
            "body 413": legacy.patch(LOT, data='{"a": 5' + " " * (16 * 1024) + "}",
                                     headers={"Content-Type": "application/merge-patch+json",
                                              "If-Match": '"10"'}),
            "operator page": requests.get(base_url + "/operator/status", headers=operator,
                                          timeout=10),
            "operator 401": requests.get(base_url + "/operator/status", timeout=10),
            "metrics": requests.get(base_url + "/metrics", headers=operator, timeout=10),
            "healthz": requests.get(base_url + "/healthz", timeout=10),
            "readyz": requests.get(base_url + "/readyz", timeout=10),
        }
    finally:
        legacy.close()
    statuses = {kind: answer.status_code for kind, answer in answers.items()}
    assert statuses == {
        "legacy 200": 200, "legacy 404": 404, "legacy 401": 401, "legacy 400": 400,
        "token 200": 200, "token 400": 400, "kong 404": 404, "method 405": 405,
        "body 413": 413, "operator page": 200, "operator 401": 401, "metrics": 200,
        "healthz": 200, "readyz": 200}
    sniffable = {kind for kind, answer in answers.items()
                 if answer.headers.get("X-Content-Type-Options") != "nosniff"}
    assert sniffable == set()
