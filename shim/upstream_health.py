"""The platform APIs' health over the last hour, in this process: calls, errors, latency.

The upstream client reports each finished call (``CallRecord``) to its observers; ``watch``
adds ``observe`` to a client's. Each API keeps one tally per minute for the
last ``minutes`` minutes (calls, errors, and latencies in logarithmic buckets 10 % wide,
so p50/p99 cost constant memory whatever the traffic, and are exact to 10 %).

Per process on purpose: under gunicorn each worker sees its own share of the calls, and the
status page says whose figures it shows. Adding the workers up would take a write per call
or per flush to shared storage for figures an operator glances at; the Prometheus metrics
(``shim_upstream_calls``, ``shim_upstream_call_duration_seconds``) are the all-worker view.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shim.upstream.client import CallRecord, LazadaClient

MINUTE_S = 60
_STEP = 1.1  # latency bucket width: each bucket's bound is 10 % above the previous one
_FLOOR_S = 0.001  # calls faster than 1 ms share the first bucket


def _bucket(seconds: float) -> int:
    return max(0, math.ceil(math.log(max(seconds, _FLOOR_S) / _FLOOR_S, _STEP)))


def _bound(bucket: int) -> float:
    return _FLOOR_S * _STEP ** bucket


@dataclass
class _Minute:
    calls: int = 0
    errors: int = 0
    slowest: float = 0.0
    latencies: Counter[int] = field(default_factory=Counter)


@dataclass(frozen=True)
class ApiHealth:
    """One platform API over the window: totals, latency percentiles (seconds, ``None``
    without calls) and calls and errors per minute, oldest first."""

    api: str
    calls: int
    errors: int
    p50_s: float | None
    p99_s: float | None
    per_minute: tuple[int, ...]
    errors_per_minute: tuple[int, ...]

    @property
    def error_rate(self) -> float:
        """Return the share of the window's calls that failed (0 without calls)."""
        return self.errors / self.calls if self.calls else 0.0


class UpstreamHealth:
    """Rolling per-minute tallies of the platform calls of this process, per API."""

    def __init__(self, *, clock: Callable[[], float] = time.time, minutes: int = 60) -> None:
        self.clock = clock
        self.minutes = minutes
        self.started_at = clock()
        self._apis: dict[str, dict[int, _Minute]] = {}
        self._watched: set[int] = set()
        self._lock = threading.Lock()

    def observe(self, record: CallRecord) -> None:
        """Count one finished call (a code other than "0" is an error)."""
        minute = int(self.clock() // MINUTE_S)
        with self._lock:
            minutes = self._apis.setdefault(record.api, {})
            tally = minutes.get(minute)
            if tally is None:
                tally = minutes[minute] = _Minute()
                for old in [m for m in minutes if m <= minute - self.minutes]:
                    del minutes[old]
            tally.calls += 1
            tally.errors += record.code != "0"
            tally.slowest = max(tally.slowest, record.seconds)
            tally.latencies[_bucket(record.seconds)] += 1

    def watch(self, client: LazadaClient) -> LazadaClient:
        """Add ``observe`` to ``client``'s observers (once per client); return the client."""
        with self._lock:
            if id(client) in self._watched:
                return client
            self._watched.add(id(client))
        client.add_observer(self.observe)
        return client

    def snapshot(self) -> list[ApiHealth]:
        """Return each API seen in the window, by name."""
        last = int(self.clock() // MINUTE_S)
        window = range(last - self.minutes + 1, last + 1)
        found = []
        with self._lock:
            for api, minutes in sorted(self._apis.items()):
                kept = [minutes[m] for m in window if m in minutes]
                if not kept:
                    continue
                latencies: Counter[int] = Counter()
                for tally in kept:
                    latencies.update(tally.latencies)
                slowest = max(tally.slowest for tally in kept)
                found.append(ApiHealth(
                    api=api, calls=sum(t.calls for t in kept), errors=sum(t.errors for t in kept),
                    p50_s=_percentile(latencies, 0.50, slowest),
                    p99_s=_percentile(latencies, 0.99, slowest),
                    per_minute=tuple(minutes[m].calls if m in minutes else 0 for m in window),
                    errors_per_minute=tuple(minutes[m].errors if m in minutes else 0
                                            for m in window)))
        return found


def _percentile(latencies: Counter[int], share: float, slowest: float) -> float | None:
    """Return the bound of the bucket holding the ``share`` quantile (at most the slowest)."""
    total = sum(latencies.values())
    if not total:
        return None
    rank = max(1, math.ceil(share * total))
    seen = 0
    for bucket in sorted(latencies):
        seen += latencies[bucket]
        if seen >= rank:
            return min(_bound(bucket), slowest)
    return slowest  # pragma: no cover - the loop always reaches the rank
