"""Prometheus metrics, one registry per app (so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    """The shim's counters and histograms, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refreshes = Counter(
            "shim_seller_token_refreshes", "Seller token refreshes by outcome.",
            ["seller", "result"], registry=self.registry)
        self.reauthorization_required = Counter(
            "shim_seller_reauthorization_required",
            "Times a seller was found to need authorizing again.", ["seller"],
            registry=self.registry)
