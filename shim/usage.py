"""Per-client call counts, kept in memory and written to the store in batches; and the
retirement plan read from them.

Counting must not cost a database write per legacy request: ``count`` only touches a dict,
and a daemon thread (``start``) flushes the batch every few seconds. The status page flushes
before it reads, so its figures are exact for this process up to the moment it is shown
(other processes' counts arrive with their next periodic flush). ``stop`` flushes what is
left; it also runs at interpreter exit, so a graceful stop loses no count.

Two granularities are kept: calls per (client, hour), for the status page's last 24 hours,
and tallies per (client, route, UTC day) with errors and first/last call, for the
retirement planner (``plan``): which legacy clients still call, what, and since when. The
store adds every instance's flushes up, and the periodic purge deletes what is older than
``usage_retention_days``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shim.periodic import Periodic
from shim.store.records import DAY_S, Client, DayTally, RouteUsage

if TYPE_CHECKING:
    from shim.store.base import Store

log = logging.getLogger(__name__)
HOUR_S = 3600
WINDOW_HOURS = 24


class _DayCount:
    """One (client, route, day)'s calls since the last flush, counted in place: a DayTally
    per call, merged with ``plus``, made two objects per request."""

    __slots__ = ("calls", "errors", "first_at", "last_at")

    def __init__(self, now: float) -> None:
        self.calls = self.errors = 0
        self.first_at = self.last_at = now

    def add(self, now: float, error: bool) -> None:
        """Count one call answered at ``now``."""
        self.calls += 1
        self.errors += error
        if now < self.first_at:  # the wall clock may step back
            self.first_at = now
        elif now > self.last_at:
            self.last_at = now

    def tally(self) -> DayTally:
        """Return the calls counted as a tally."""
        return DayTally(self.calls, self.errors, self.first_at, self.last_at)


class UsageRecorder:
    """Counts calls per (client, hour) and per (client, route, day), and flushes them to
    the store."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: Counter[tuple[str, int]] = Counter()
        self._days: dict[tuple[str, str, int], _DayCount] = {}  # (client, route, day)
        self._unwritten: dict[tuple[str, str, int], DayTally] = {}  # a failed flush's tallies
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time keeps batches in order
        self._task: Periodic | None = None

    def count(self, client_id: str, route: str | None = None, *, error: bool = False) -> None:
        """Count one call of ``client_id`` now, on ``route`` (if given) and whether it was
        answered with an error."""
        now = self.clock()
        hour = int(now // HOUR_S)
        with self._lock:
            self._pending[(client_id, hour)] += 1
            if route is None:
                return
            key = (client_id, route, int(now // DAY_S))
            counted = self._days.get(key)
            if counted is None:
                counted = self._days[key] = _DayCount(now)
            counted.add(now, error)

    def pending(self) -> int:
        """Return how many counted calls are not written to the store yet."""
        with self._lock:
            return sum(self._pending.values())

    def flush(self) -> None:
        """Write the pending counts; on failure they are kept for the next flush."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, Counter()
                counted, self._days = self._days, {}
            days, self._unwritten = self._unwritten, {}  # guarded by the flush lock
            for key, count in counted.items():
                kept = days.get(key)
                days[key] = count.tally() if kept is None else kept.plus(count.tally())
            if not batch and not days:
                return
            try:
                self.store.add_usage(dict(batch), days)
            except Exception:
                with self._lock:
                    self._pending.update(batch)
                self._unwritten = days
                raise

    def last_24h(self) -> dict[str, int]:
        """Return calls per client over the last 24 hours (this hour included)."""
        self.flush()
        return self.store.usage_since(int(self.clock() // HOUR_S) - (WINDOW_HOURS - 1))

    def start(self, interval_s: float) -> UsageRecorder:
        """Flush every ``interval_s`` seconds from a daemon thread until ``stop``; return self.

        A failed flush keeps its counts for the next one.
        """
        if self._task is None:
            self._task = Periodic("usage-flusher", interval_s, self.flush,
                                  on_failure="the counts are kept for the next flush").start()
            atexit.register(self.stop)
        return self

    @property
    def running(self) -> bool:
        """Return whether the flusher thread is running."""
        return self._task is not None and self._task.running

    def stop(self) -> None:
        """Stop the thread (if started), then write what is still pending."""
        task, self._task = self._task, None
        if task is not None:
            atexit.unregister(self.stop)
            task.stop()
        try:
            self.flush()
        except Exception:  # the store is gone: say how much is lost instead of a traceback
            log.exception("could not write %d counted calls on stop", self.pending())


# --- the retirement plan ------------------------------------------------------------------------

@dataclass(frozen=True)
class RoutePlan:
    """One client's use of one route: totals over the window, calls and errors per day
    (oldest first, one entry per day of the window), first and last call."""

    route: str
    calls: int
    errors: int
    daily_calls: tuple[int, ...]
    daily_errors: tuple[int, ...]
    first_at: float
    last_at: float


@dataclass(frozen=True)
class ClientPlan:
    """One legacy client's place in the retirement plan."""

    client_id: str
    seller: str | None  # None: the client is no longer registered
    enabled: bool
    calls: int
    errors: int
    first_at: float | None  # None: never called (within retention)
    last_at: float | None
    idle_days: int | None  # whole days since the last call (since registration if none)
    ready_to_retire: bool
    routes: tuple[RoutePlan, ...]
    daily_calls: tuple[int, ...]

    @property
    def error_share(self) -> float:
        """Return the share of the window's calls answered with an error (0 without calls)."""
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Plan:
    """The retirement plan: the window's days (days since the epoch) and every client."""

    first_day: int
    days: int
    retire_after_days: int
    clients: tuple[ClientPlan, ...]

    def day_dates(self) -> list[str]:
        """Return the window's days as ISO dates, oldest first."""
        return [time.strftime("%Y-%m-%d", time.gmtime((self.first_day + i) * DAY_S))
                for i in range(self.days)]


def plan(routes: Iterable[RouteUsage], clients: Iterable[Client], *, now: float,
         days: int = 30, retire_after_days: int = 14) -> Plan:
    """Return the retirement plan over the ``days`` UTC days up to today.

    A client is ready to retire when it has not called for ``retire_after_days``: its last
    call is that old, or it never called and was registered that long ago (or when, is not
    known). Clients that called but are registered no more are listed too.
    """
    today = int(now // DAY_S)
    first_day = today - days + 1
    by_client: dict[str, list[RoutePlan]] = {}
    for usage in routes:
        daily = [usage.days.get(day, (0, 0)) for day in range(first_day, today + 1)]
        by_client.setdefault(usage.client_id, []).append(RoutePlan(
            route=usage.route, calls=sum(c for c, _ in daily), errors=sum(e for _, e in daily),
            daily_calls=tuple(c for c, _ in daily), daily_errors=tuple(e for _, e in daily),
            first_at=usage.first_at, last_at=usage.last_at))
    registered = {client.client_id: client for client in clients}
    plans = []
    for client_id in sorted(set(registered) | set(by_client)):
        client = registered.get(client_id)
        used = sorted(by_client.get(client_id, []), key=lambda r: (-r.calls, r.route))
        last_at = max((r.last_at for r in used), default=None)
        since = last_at if last_at is not None else (client.created_at if client else None)
        idle_days = int((now - since) // DAY_S) if since is not None else None
        plans.append(ClientPlan(
            client_id=client_id, seller=client.seller if client else None,
            enabled=client.enabled if client else False,
            calls=sum(r.calls for r in used), errors=sum(r.errors for r in used),
            first_at=min((r.first_at for r in used), default=None), last_at=last_at,
            idle_days=idle_days,
            ready_to_retire=idle_days is None or idle_days >= retire_after_days,
            routes=tuple(used),
            daily_calls=tuple(sum(day) for day in zip(*(r.daily_calls for r in used),
                                                      strict=True)) if used else (0,) * days))
    return Plan(first_day=first_day, days=days, retire_after_days=retire_after_days,
                clients=tuple(plans))
