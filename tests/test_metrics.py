"""The request-side metrics: children cached by label values are the metric's own."""

from __future__ import annotations

from prometheus_client import generate_latest

from shim.metrics import Metrics


def test_children_are_the_metrics_own() -> None:
    metrics = Metrics()
    child = metrics.legacy_requests_by("/v1/products/<id>", "GET", "200")
    assert child is metrics.legacy_requests.labels("/v1/products/<id>", "GET", "200")
    assert metrics.legacy_requests_by("/v1/products/<id>", "GET", "200") is child


def test_counting_through_children_exposes_what_labels_would() -> None:
    cached, direct = Metrics(), Metrics()
    for _ in range(3):
        cached.legacy_requests_by("/v1/products/<id>", "GET", "200").inc()
        cached.legacy_latency_by("/v1/products/<id>").observe(0.02)
        cached.client_requests_by("reader").inc()
        cached.rate_limited_by("/v1/products/<id>", "reader").inc()
        direct.legacy_requests.labels("/v1/products/<id>", "GET", "200").inc()
        direct.legacy_latency.labels("/v1/products/<id>").observe(0.02)
        direct.client_requests.labels("reader").inc()
        direct.rate_limited.labels("/v1/products/<id>", "reader").inc()
    assert _samples(cached) == _samples(direct)


def _samples(metrics: Metrics) -> list[str]:
    """Return the exposition's lines but the ``_created`` timestamps (when each child was made)."""
    return [line for line in generate_latest(metrics.registry).decode().splitlines()
            if "_created" not in line]
