"""Secret query parameters stay out of urllib3's log records, whatever the log level."""

from __future__ import annotations

import logging
import time

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from shim.upstream import redact
from shim.upstream.client import LazadaClient, SellerCredentials
from shim.upstream.signing import sign

STORE_ID = "414"
API = "/rss/products/get"


def test_redact_replaces_secret_values_and_keeps_the_rest():
    url = ("/rest/rss/x?storeId=414&access_token=at-1%2B2&sign_method=sha256&sign=ABC123"
           "&refresh_token=rt&code=0_1_x&client_secret=cs&app_secret=s&timestamp=1")
    assert redact.redact(url) == (
        "/rest/rss/x?storeId=414&access_token=[REDACTED]&sign_method=sha256&sign=[REDACTED]"
        "&refresh_token=[REDACTED]&code=[REDACTED]&client_secret=[REDACTED]"
        "&app_secret=[REDACTED]&timestamp=1")


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /x?sign=ABC HTTP/1.1", "GET /x?sign=[REDACTED] HTTP/1.1"),
    ("url='/x?access_token=T'", "url='/x?access_token=[REDACTED]'"),
    ('"/x?access_token=T"', '"/x?access_token=[REDACTED]"'),
    ("(url=/x?sign=S)", "(url=/x?sign=[REDACTED])"),
    ("productCode=P1&auth_code=c&designation=x", "productCode=P1&auth_code=c&designation=x"),
])
def test_redact_finds_values_wherever_a_log_line_ends_them(text, expected):
    assert redact.redact(text) == expected


# Text made of the pieces a secret parameter is made of, and of what ends its value.
_PIECES = st.sampled_from([*redact.SECRET_PARAMS, "=", "&", "?", " ", "'", '"', ")", ",", "x",
                           "_", "\n", "\u00e9"])


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_redact_answers_as_the_pattern_does_on_any_text(text):
    """The shortcut for text without "=" changes no answer (the scan needs name=value)."""
    assert redact.redact(text) == redact._PATTERN.sub(r"\1=" + redact.REDACTED, text)


@pytest.mark.parametrize("name", redact.SECRET_PARAMS)
def test_every_secret_parameter_is_redacted(name):
    assert redact.redact(f"GET /x?a=1&{name}=v4lue HTTP/1.1") == (
        f"GET /x?a=1&{name}=[REDACTED] HTTP/1.1")


def _record(msg, *args, name="urllib3.connectionpool"):
    return logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, None)


def test_filter_rewrites_the_formatted_message():
    record = _record('%s "%s %s"', "http://h:1", "GET", "/x?access_token=T&sign=S")
    assert redact.RedactSecretsFilter().filter(record) is True
    assert record.getMessage() == 'http://h:1 "GET /x?access_token=[REDACTED]&sign=[REDACTED]"'
    assert record.args == ()


def test_filter_leaves_clean_records_alone():
    record = _record("Starting new HTTP connection (%d): %s", 1, "h")
    redact.RedactSecretsFilter().filter(record)
    assert (record.msg, record.args) == ("Starting new HTTP connection (%d): %s", (1, "h"))


def _installed(name: str) -> list[logging.Filter]:
    return [f for f in logging.getLogger(name).filters
            if isinstance(f, redact.RedactSecretsFilter)]


def test_install_is_idempotent(test_secrets):
    redact.install()
    redact.install()
    for _ in range(2):
        LazadaClient(app_key="1", app_secret=test_secrets.app_secret).close()
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection",
                 "urllib3.poolmanager"):
        assert len(_installed(name)) == 1, name


def test_a_retried_get_logs_no_secret_at_debug(sandbox, test_secrets, caplog):
    """urllib3 logs each URL at DEBUG and a retry at WARNING; the filter cleans both."""
    requests.post(sandbox.base_url + "/_sandbox/faults", timeout=5,
                  json={"api": API, "kind": "reset", "times": 1}).raise_for_status()
    now = time.time()
    app_key = sandbox.state.config.app_key
    caplog.set_level(logging.DEBUG)
    with LazadaClient(app_key=app_key, app_secret=test_secrets.app_secret,
                      api_url=sandbox.api_url, read_retries=1, backoff_factor=0.01,
                      clock=lambda: now) as client:
        seller = SellerCredentials(STORE_ID, test_secrets.access_token)
        assert client.rss(API, seller, {"page": 1, "pageSize": 1}).data
    sent = {"storeId": STORE_ID, "page": "1", "pageSize": "1", "app_key": app_key,
            "timestamp": str(int(now * 1000)), "sign_method": "sha256",
            "access_token": test_secrets.access_token}
    signature = sign(API, sent, test_secrets.app_secret)

    messages = [record.getMessage() for record in caplog.records]
    retry = [m for m in messages if m.startswith("Retrying")]
    urls = [m for m in messages if "/rest" + API in m]
    # Not vacuous: the retry warning and the request lines were logged, redacted.
    assert len(retry) == 1
    assert any(r.levelno == logging.WARNING and r.getMessage() == retry[0]
               for r in caplog.records)
    assert len(urls) >= 3
    assert all("access_token=[REDACTED]" in m and "sign=[REDACTED]" in m
               for m in [*retry, *urls] if "?" in m)
    for text in [*messages, caplog.text]:
        for secret in (test_secrets.access_token, test_secrets.app_secret, signature):
            assert secret not in text
