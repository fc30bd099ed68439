"""Prometheus metrics, one registry per app (so several apps in one process never clash).

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (``redmart-shim serve``
does): every worker then writes its values to files there and ``/metrics`` adds them up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from flask import g, has_request_context
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shim.store.records import Seller
from shim.upstream.breaker import STATES, Breakers, Transition
from shim.upstream.client import CallRecord

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A labelled metric's children by label values, each asked of the metric once.

    prometheus_client's ``labels()`` validates the values and takes the metric's lock on every
    call, which every request would pay for each metric it counts. The children are the ones
    the metric keeps (nothing removes one), so the exposition is the same.
    """

    def __init__(self, metric: M) -> None:
        self._labels: Callable[..., M] = metric.labels
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        """Return the child for ``values``."""
        child = self._children.get(values)
        if child is None:  # two threads at once get the same child from the metric
            child = self._children[values] = self._labels(*values)
        return child


class Metrics:
    """The shim's counters and histograms, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.legacy_requests = Counter(
            "shim_legacy_requests", "Legacy requests by route, method and status.",
            ["route", "method", "status"], registry=registry)
        self.legacy_latency = Histogram(
            "shim_legacy_request_duration_seconds", "Time to answer a legacy request.",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.client_requests = Counter(
            "shim_client_requests", "Legacy requests per client (usage, for retirement).",
            ["client"], registry=registry)
        self.rate_limited = Counter(
            "shim_rate_limited", "Legacy requests refused by the rate limiter.",
            ["route", "client"], registry=registry)
        # What every legacy request counts, by label values (``Children``).
        self.legacy_requests_by = Children(self.legacy_requests)
        self.legacy_latency_by = Children(self.legacy_latency)
        self.client_requests_by = Children(self.client_requests)
        self.rate_limited_by = Children(self.rate_limited)
        self.upstream_calls = Counter(
            "shim_upstream_calls", "Platform calls by API and Lazada code.",
            ["api", "code"], registry=registry)
        self.upstream_latency = Histogram(
            "shim_upstream_call_duration_seconds", "Time of one platform call, retries included.",
            ["api"], buckets=LATENCY_BUCKETS, registry=registry)
        self.upstream_retries = Counter(
            "shim_upstream_retries",
            "Retries of platform reads (transport failures, garbled answers, trouble codes).",
            ["api"], registry=registry)
        self.refreshes = Counter(
            "shim_seller_token_refreshes", "Seller token refreshes by outcome.",
            ["seller", "result"], registry=registry)
        self.pickup_jobs_withheld = Counter(
            "shim_pickup_jobs_withheld",
            "Pickup jobs the platform sent without a number the legacy schema requires "
            "(left out of lists; a single one answered 502).", ["member"], registry=registry)
        self.refresh_answers_lost = Counter(
            "shim_seller_refresh_answers_lost",
            "Refreshes that got no usable answer although the platform may have rotated the "
            "tokens (if it did, the seller must authorize again).", ["seller"],
            registry=registry)
        self.reauthorization_required = Counter(
            "shim_seller_reauthorization_required",
            "Times a seller was found to need authorizing again.", ["seller"],
            registry=registry)
        self.admission_refused = Counter(
            "shim_admission_refused",
            "Requests refused at once because a bulkhead was full, by scope: instance, "
            "seller, client, or lot (waiters for one stock lot's lock).", ["scope"],
            registry=registry)
        # livesum: the workers' values added up, a dead worker's dropped (child_exit).
        self.requests_in_flight = Gauge(
            "shim_requests_in_flight", "API requests being served now (admitted, not done).",
            registry=registry, multiprocess_mode="livesum")

        # livemax: the worst state among the live workers (each has its own breakers); a
        # dead worker's last state leaves with it (gunicorn's child_exit hook).
        self.breaker_state = Gauge(
            "shim_upstream_breaker_state",
            "Circuit breaker of each platform API: 0 closed, 1 half_open, 2 open (the worst "
            "over apps and worker processes).", ["api"], multiprocess_mode="livemax",
            registry=registry)
        self.breaker_transitions = Counter(
            "shim_upstream_breaker_transitions",
            "Circuit breaker transitions of each platform API, by the state entered.",
            ["api", "to"], registry=registry)

        self._states: list[Collector] = []  # read at each scrape (``track_sellers``)

    def track_sellers(self, list_sellers: Callable[[], list[Seller]]) -> None:
        """Expose the sellers' state as read from ``list_sellers`` at each scrape."""
        collector = SellerStates(list_sellers)
        self._states.append(collector)
        self.registry.register(collector)

    def exposition(self) -> tuple[bytes, str]:
        """Return the text exposition of every metric (of all workers, in multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            for collector in self._states:  # the store's state, not any one worker's
                registry.register(collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class SellerStates(Collector):
    """``shim_seller_needs_reauthorization{seller}``, 1 or 0, read from the store when scraped.

    A state, not an event: an alert must fire for a seller marked before this process started
    and clear once the seller authorized again (through whichever instance), so it is read
    from the store rather than set by the code that found out. The label is the seller's
    name, an operator's choice like the other metrics' ``seller`` labels, never a token.
    """

    NAME = "shim_seller_needs_reauthorization"
    HELP = "1 while the seller must authorize the shim again, else 0 (read from the store)."

    def __init__(self, list_sellers: Callable[[], list[Seller]]) -> None:
        self._list_sellers = list_sellers

    def describe(self) -> Iterator[Metric]:
        """Name the family without reading the store (registration calls this)."""
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["seller"])

    def collect(self) -> Iterator[Metric]:
        """Yield one sample per seller; none when the store cannot be read (logged)."""
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["seller"])
        try:
            sellers = self._list_sellers()
        except Exception as error:  # the other metrics are still worth a scrape
            log.warning("metrics: cannot read the sellers: %s", type(error).__name__)
            sellers = []
        for seller in sellers:
            family.add_metric([seller.name], 1.0 if seller.needs_reauth else 0.0)
        yield family


def upstream_observer(metrics: Metrics) -> Callable[[CallRecord], None]:
    """Return the upstream client's observer: metrics, and request ids for the log line."""

    calls_by, latency_by = Children(metrics.upstream_calls), Children(metrics.upstream_latency)

    def observe(call: CallRecord) -> None:
        calls_by(call.api, call.code).inc()
        latency_by(call.api).observe(call.seconds)
        if call.retries:
            metrics.upstream_retries.labels(call.api).inc(call.retries)
        if call.request_id and has_request_context():
            g.setdefault("upstream_request_ids", []).append(call.request_id)

    return observe


def breaker_observer(metrics: Metrics, breakers: Callable[[], Breakers]
                     ) -> Callable[[Transition], None]:
    """Return the breakers' observer: the state gauge and the transitions counter."""

    def observe(transition: Transition) -> None:
        if transition.before is not None:
            metrics.breaker_transitions.labels(transition.api, transition.after).inc()
        worst = breakers().worst(transition.api)
        metrics.breaker_state.labels(transition.api).set(STATES.index(worst))

    return observe
