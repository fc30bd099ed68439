"""The app's collaborators (upstream client, store, limiter, locks, clock) and their accessors."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from shim.config import Settings
from shim.legacy.ratelimit import RouteLimiter
from shim.locks import KeyedLocks
from shim.store import Store
from shim.upstream import LazadaClient


@dataclass
class Services:
    """Everything a request may need besides the request itself."""

    settings: Settings
    upstream: LazadaClient
    store: Store
    limiter: RouteLimiter
    clock: Callable[[], float] = time.time
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    single_location_api: bool = True  # turned off once the platform says the path is unknown


def init_app(app: Flask, services: Services) -> None:
    """Attach ``services`` to ``app``."""
    app.extensions["shim"] = services


def get_services() -> Services:
    """Return the current app's services."""
    return current_app.extensions["shim"]
