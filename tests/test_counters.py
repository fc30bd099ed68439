"""The shared counters' storages (shim.counters), against the real Redis of the test machine.

The limiter's and the throttle's behaviour on top of them is in test_ratelimit.py and
test_auth_throttle.py; several instances sharing one Redis in test_multi_instance.py.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

import pytest
import redis
from limits.storage import MemoryStorage, RedisStorage
from redis._parsers import _HiredisParser

from shim.counters import (
    REDIS_TIMEOUT_S,
    ProcessCounters,
    RedisCounters,
    SharedCounters,
    open_storage,
)

REDIS_URL = os.environ.get("SHIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def connection():
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(connection):
    prefix = "shim-test-" + secrets.token_hex(4)
    yield prefix
    for key in connection.scan_iter(f"{prefix}:*"):
        connection.delete(key)


@pytest.fixture
def counters(prefix):
    opened = RedisCounters.from_url(REDIS_URL, key_prefix=prefix)
    yield opened
    opened.close()


def test_counts_under_the_prefix_and_expires_from_the_first_count(counters, connection,
                                                                  prefix):
    assert [counters.incr("a", 5) for _ in range(3)] == [1, 2, 3]
    assert counters.incr("a", 5, amount=-1) == 2  # a failed-auth place given back
    assert int(connection.get(f"{prefix}:a")) == 2
    assert 0 < connection.ttl(f"{prefix}:a") <= 5
    connection.expire(f"{prefix}:a", 100)
    counters.incr("a", 5)
    assert connection.ttl(f"{prefix}:a") > 5  # later counts leave the window's expiry alone


def test_a_redis_that_forgot_the_script_still_counts(counters, connection):
    counters.incr("a", 5)
    connection.script_flush()  # as a restarted Redis: the next EVALSHA gets NOSCRIPT
    assert counters.incr("a", 5) == 2
    assert counters.incr("a", 5) == 3


def test_limits_redis_storage_shares_the_counts(counters, prefix):
    """Same keys and script as ``limits``' Redis storage, which counted before: instances of
    either version on one Redis count together during a rolling upgrade."""
    before = RedisStorage(REDIS_URL, key_prefix=prefix)
    assert counters.incr("a", 5) == 1
    assert before.incr("a", 5) == 2
    assert counters.incr("a", 5) == 3
    before.storage.close()


def test_redis_urls_open_redis_counters_and_memory_one_in_process(prefix):
    for uri in (REDIS_URL, "rediss://127.0.0.1:6379/0"):
        assert isinstance(open_storage(uri, key_prefix=prefix), RedisCounters)
    assert isinstance(open_storage("memory://", key_prefix=prefix), ProcessCounters)


def test_closing_shared_counters_releases_the_redis_connections(prefix):
    shared = SharedCounters.open(REDIS_URL, key_prefix=prefix)
    assert shared.add("a", 1, 5) == 1
    (connection,) = shared._storage._client.connection_pool._available_connections
    assert connection._sock is not None
    shared.close()
    assert connection._sock is None


def test_closing_shared_counters_in_memory_is_harmless():
    SharedCounters(ProcessCounters()).close()
    SharedCounters(MemoryStorage()).close()


def test_the_redis_client_reads_answers_with_hiredis(counters):
    """hiredis is a dependency for this: in requests it took ~12% off the count's cost."""
    assert counters.incr("a", 5) == 1
    (connection,) = counters._client.connection_pool._available_connections
    assert isinstance(connection._parser, _HiredisParser)


# Sent now, read later (the rate limiter's reads: the round trip overlaps the request's work)


def test_a_count_sent_now_is_read_later_with_the_same_answers(counters):
    first, second = counters.send_incr("a", 5), counters.send_incr("a", 5)
    assert sorted([second.result(), first.result()]) == [1, 2]  # each on its own connection
    assert counters.incr("a", 5) == 3
    with pytest.raises(RuntimeError, match="read once"):
        first.result()


def test_an_abandoned_count_stands_and_its_answer_reaches_nobody(counters):
    for _ in range(3):
        counters.send_incr("a", 5).cancel()  # dropped with its connection, unread
    # A pooled connection still holding an unread answer would shift every later count.
    assert [counters.incr("a", 5) for _ in range(4)] == [4, 5, 6, 7]
    assert [counters.send_incr("a", 5).result() for _ in range(2)] == [8, 9]


def test_a_count_sent_to_a_redis_that_forgot_the_script_still_counts(counters, connection):
    counters.incr("a", 5)
    connection.script_flush()
    assert counters.send_incr("a", 5).result() == 2
    assert counters.send_incr("a", 5).result() == 3


def test_a_count_sent_to_a_redis_that_is_down_fails_open_then_pauses(caplog):
    shared = SharedCounters(RedisCounters.from_url("redis://127.0.0.1:1", key_prefix="x"))
    with caplog.at_level("ERROR", logger="shim.counters"):
        assert shared.send_add("a", 1, 5).result() is None
        assert shared.send_add("a", 1, 5).result() is None  # paused: not even tried
    assert len([r for r in caplog.records if "storage failed" in r.getMessage()]) == 1
    shared.close()


def test_counts_in_process_are_made_at_once():
    shared = SharedCounters(ProcessCounters())
    pending = shared.send_add("a", 1, 5)
    assert shared.add("a", 1, 5) == 2  # the first was counted when sent
    assert pending.result() == 1


def test_a_redis_that_stops_answering_costs_one_timeout_then_fails_open():
    """A server that accepts and never answers: one read timeout, no retries after it."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        shared = SharedCounters(RedisCounters.from_url(f"redis://127.0.0.1:{port}",
                                                       key_prefix="x"))
        started = time.monotonic()
        assert shared.add("a", 1, 5) is None
        took = time.monotonic() - started
        shared.close()
    assert REDIS_TIMEOUT_S <= took < 2 * REDIS_TIMEOUT_S, took
