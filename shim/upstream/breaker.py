"""Circuit breakers: one per (app, platform API), so a failing API answers at once.

States and moves of one breaker::

    closed ──(``failures`` counted failures in a row)──> open
    open ──(``open_s`` passed; the next call, or a look at the state)──> half_open
    half_open ──(the one probe call answered)──> closed
    half_open ──(the probe failed)──> open (for another ``open_s``)

While open, a call raises ``BreakerOpen`` (nothing is sent) with ``retry_after_s``, the time
until the breaker half-opens. Half-open lets exactly one call through as the probe; every other
caller meanwhile gets ``BreakerOpen`` at once (retry after a second), so a platform that is
still down sees one call per ``open_s``, not a stampede.

What counts as a failure: the platform not answering usefully (``TransportError``: timeouts,
resets, refused connections, HTTP 5xx, garbled bodies) and its backend failing
(``BackendFailure``: ISP/SYSTEM codes such as ServiceTimeout, SYSTEM_ERROR, 901's kin). Any
other answer, throttling, refused tokens and business errors ("not found", validation)
included, shows the platform answering: it counts as a success and ends a run of failures.

One call is one outcome, whatever its retries: ``guard`` is entered once per call, around the
client's retry loop, so a read that is mid-retry when the breaker opens keeps its retry budget
(it is not cut short), and its three failed attempts are one failure, not three. Outcomes of
calls admitted before the latest transition are stale and ignored (the slow calls still in
flight when a breaker opens do not reopen it after the probe closed it).

State lives in the process (each gunicorn worker has its own breakers): a worker learns of
trouble from its own calls, ``failures`` of them at most. Safe to share between threads.

Dependency rule: no Flask, nothing from ``shim`` outside ``shim.upstream``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shim.upstream.errors import BackendFailure, BreakerOpen, TransportError, UpstreamError

log = logging.getLogger(__name__)

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATES = (CLOSED, HALF_OPEN, OPEN)  # by severity: the metric's 0, 1, 2
PROBE_WAIT_S = 1.0  # what a caller refused while the probe is out is told to wait


def counts_as_failure(error: UpstreamError) -> bool:
    """Return whether ``error`` says the platform is in trouble (rather than answering)."""
    return isinstance(error, (TransportError, BackendFailure))


@dataclass(frozen=True)
class BreakerView:
    """One breaker as the status page and ``snapshot`` show it."""

    api: str
    state: str  # closed | half_open | open
    since: float  # epoch seconds of the last transition (or of the breaker's first use)
    retry_after_s: float | None  # open: seconds until half-open; else None
    app: str = ""  # the app key whose calls it guards


@dataclass(frozen=True)
class Transition:
    """What an observer learns when a breaker changes state (``before`` None: just made)."""

    app: str
    api: str
    before: str | None
    after: str


class Breaker:
    """The circuit breaker of one platform API of one app (see the module docstring)."""

    def __init__(self, app: str, api: str, *, failures: int, open_s: float,
                 clock: Callable[[], float], wall: Callable[[], float],
                 notify: Callable[[Transition], None]) -> None:
        if failures < 1 or open_s <= 0:
            raise ValueError("failures must be at least 1 and open_s positive")
        self.app, self.api = app, api
        self.failures, self.open_s = failures, open_s
        self._clock, self._wall, self._notify = clock, wall, notify
        self._lock = threading.Lock()
        self._state = CLOSED
        self._since = wall()
        self._opened_at = 0.0  # clock() when it last opened
        self._run = 0  # counted failures in a row, while closed
        self._generation = 0  # bumped at every transition: older tickets are stale
        self._probe_out = False

    @property
    def state(self) -> str:
        """Return the state now (an open breaker past its period reads half_open)."""
        return self.view().state

    def view(self) -> BreakerView:
        """Return the breaker as it stands now."""
        moved: list[Transition] = []
        with self._lock:
            self._expire(moved)
            retry = self._remaining() if self._state == OPEN else None
            view = BreakerView(self.api, self._state, self._since, retry, self.app)
        self._announce(moved)
        return view

    def guard(self) -> Guard:
        """Return a context manager running its block as one call through the breaker (or
        raising ``BreakerOpen`` at once)."""
        return Guard(self)

    # --- inside the lock ------------------------------------------------------------------

    def _remaining(self) -> float:
        return max(0.0, self._opened_at + self.open_s - self._clock())

    def _move(self, to: str, moved: list[Transition]) -> None:
        moved.append(Transition(self.app, self.api, self._state, to))
        self._state = to
        self._since = self._wall()
        self._generation += 1
        self._run = 0
        self._probe_out = False
        if to == OPEN:
            self._opened_at = self._clock()

    def _expire(self, moved: list[Transition]) -> None:
        if self._state == OPEN and self._remaining() <= 0:
            self._move(HALF_OPEN, moved)

    def _admit(self) -> tuple[int, bool]:
        """Return the call's ticket (generation, is the probe), or raise ``BreakerOpen``."""
        moved: list[Transition] = []
        try:
            with self._lock:
                self._expire(moved)
                if self._state == CLOSED:
                    return self._generation, False
                if self._state == HALF_OPEN and not self._probe_out:
                    self._probe_out = True
                    return self._generation, True
                wait = self._remaining() if self._state == OPEN else PROBE_WAIT_S
        finally:
            self._announce(moved)
        raise BreakerOpen(f"calls to {self.api} are paused: the platform failed "
                          f"{self.failures} times in a row", api=self.api, retry_after_s=wait)

    def _settle(self, ticket: tuple[int, bool], *, failed: bool, reason: str) -> None:
        generation, probe = ticket
        if not (failed or probe or self._run):
            return  # the everyday success: no run of failures to end, nothing to change
        moved: list[Transition] = []
        with self._lock:
            if generation != self._generation:
                pass  # admitted before the last transition: stale news
            elif probe:
                self._move(OPEN if failed else CLOSED, moved)
            elif failed:
                self._run += 1
                if self._run >= self.failures:
                    self._move(OPEN, moved)
            else:
                self._run = 0
        self._announce(moved, reason)

    def _release(self, ticket: tuple[int, bool]) -> None:
        generation, probe = ticket
        with self._lock:
            if probe and generation == self._generation:
                self._probe_out = False  # the next caller probes instead

    # --- outside the lock -----------------------------------------------------------------

    def _announce(self, moved: list[Transition], reason: str = "") -> None:
        for transition in moved:
            if transition.after == OPEN:
                log.warning(
                    "circuit breaker for %s opened%s (last failure: %s): its calls answer 503 "
                    "for %.0f s, then one probe call decides", self.api,
                    " again: the probe call failed" if transition.before == HALF_OPEN
                    else f" after {self.failures} failed calls in a row", reason or "?",
                    self.open_s)
            elif transition.after == CLOSED:
                log.info("circuit breaker for %s closed: the probe call was answered", self.api)
            else:
                log.info("circuit breaker for %s half-open: the next call is a probe", self.api)
            self._notify(transition)


class Guard:
    """One call through a breaker: admitted on entry (or ``BreakerOpen``), settled on exit.

    The block's ``UpstreamError`` is its outcome; any other exception (a bug, an interruption)
    tells nothing of the platform and only frees the probe slot.
    """

    # A plain context manager, not a generator: this runs around every platform call.
    __slots__ = ("_breaker", "_ticket")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._ticket = (0, False)

    def __enter__(self) -> None:
        self._ticket = self._breaker._admit()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> Literal[False]:
        if error is None:
            self._breaker._settle(self._ticket, failed=False, reason="")
        elif isinstance(error, UpstreamError):
            self._breaker._settle(self._ticket, failed=counts_as_failure(error),
                                  reason=error.code)
        else:
            self._breaker._release(self._ticket)
        return False  # the block's exception goes on up


class Breakers:
    """Every circuit breaker of a process: one per (app, platform API), made on first use.

    ``observer`` hears of each breaker when it is made (``before`` None) and of every
    transition, outside any lock.
    """

    def __init__(self, *, failures: int = 5, open_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 observer: Callable[[Transition], None] | None = None) -> None:
        if failures < 1 or open_s <= 0:
            raise ValueError("failures must be at least 1 and open_s positive")
        self.failures, self.open_s = failures, open_s
        self._clock, self._wall = clock, wall
        self._observer = observer
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def get(self, app: str, api: str) -> Breaker:
        """Return the breaker of ``api`` for ``app``, making it (closed) on first use."""
        # Every platform call asks; breakers are never removed, and a dict read is atomic, so
        # only a first use takes the lock (instead of every call of every thread).
        found = self._breakers.get((app, api))
        if found is not None:
            return found
        with self._lock:
            breaker = self._breakers.get((app, api))
            if breaker is not None:
                return breaker
            breaker = self._breakers[(app, api)] = Breaker(
                app, api, failures=self.failures, open_s=self.open_s, clock=self._clock,
                wall=self._wall, notify=self._notify)
        self._notify(Transition(app, api, None, CLOSED))
        return breaker

    def snapshot(self) -> list[BreakerView]:
        """Return every breaker as it stands now, by API then app."""
        with self._lock:
            breakers = list(self._breakers.values())
        return sorted((breaker.view() for breaker in breakers),
                      key=lambda view: (view.api, view.app))

    def worst(self, api: str) -> str:
        """Return the most severe state of ``api``'s breakers over every app (closed if none)."""
        with self._lock:
            breakers = [breaker for (_, name), breaker in self._breakers.items() if name == api]
        states = [breaker.view().state for breaker in breakers] or [CLOSED]
        return max(states, key=STATES.index)

    def _notify(self, transition: Transition) -> None:
        if self._observer is not None:
            self._observer(transition)
