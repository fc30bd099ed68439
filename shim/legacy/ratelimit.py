"""Per-client, per-route limits with Kong's ``X-RateLimit-*-second`` headers, and the
token endpoint's throttle on failed client authentication.

Like Kong 1.x's rate-limiting plugin, a window is one calendar second of the app's clock and
its counter is keyed by that second, so "remaining" means calls left in the current second
and a test can hold the clock still. Counters are the app's ``SharedCounters``
(``shim.counters``: in this process, or in Redis to share them between instances); the
storage's own expiry only cleans up the counters of past windows. When the storage fails the
call is let through without headers, as Kong's ``fault_tolerant`` default did. The
authentication throttle does not fail open: while the storage is down it counts in this
process instead (each instance then allows the limit on its own, which still bounds the
guesses and the hashing one address can cause).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import cast

from flask import Flask, Response, after_this_request, current_app

from shim.counters import CounterStorage, PendingAdd, ProcessCounters, SharedCounters
from shim.current import current_g
from shim.errors import RATE_LIMITED as RATE_LIMITED  # Kong's 429 message, declared there
from shim.errors import GatewayMessage, render

log = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit-second"
REMAINING_HEADER = "X-RateLimit-Remaining-second"
WINDOW_S = 1
# Counters of past windows are never read again; keep them a little longer than a window so
# instances with slightly different clocks still share one.
_KEEP_S = 5
# Failed client authentications allowed per client id and address in one calendar minute;
# the next attempt, even with the right secret, waits for the next minute.
FAILED_AUTH_LIMIT = 10
FAILED_AUTH_WINDOW_S = 60
# Failed client authentications allowed per caller address in one calendar minute, whatever
# the client ids: fresh random ids each would otherwise never meet the per-id limit, and each
# unknown id still costs a full slow-hash check.
FAILED_AUTH_ADDRESS_LIMIT = 30
EXTENSION = "shim.limiter"


def init_app(app: Flask, limiter: RouteLimiter) -> None:
    """Make ``limiter`` the one that ``get_limiter`` returns for ``app``."""
    app.extensions[EXTENSION] = limiter


def get_limiter() -> RouteLimiter:
    """Return the current app's limiter."""
    limiter: RouteLimiter = current_app.extensions[EXTENSION]
    return limiter


class RouteLimiter:
    """Admits or refuses one call of a client on a route, and says what is left."""

    def __init__(self, counters: SharedCounters | str | CounterStorage, default: int,
                 overrides: dict[str, int]) -> None:
        if isinstance(counters, str):
            counters = SharedCounters.open(counters, key_prefix="shim")
        self._counters = (counters if isinstance(counters, SharedCounters)
                          else SharedCounters(counters))
        self._default = default
        self._overrides = dict(overrides)
        # The token endpoint's throttle shares the storage, so instances share it too.
        self.failed_auth = FailedAuthThrottle(self._counters)

    def limit_for(self, route: str) -> int:
        """Return the calls per second allowed on ``route``."""
        return self._overrides.get(route, self._default)

    def admit(self, client_id: str, route: str, now: float) -> dict[str, str]:
        """Count the call and return the headers to send; raise the 429 when over the limit."""
        return self.count(client_id, route, now).decide()

    def count(self, client_id: str, route: str, now: float) -> CallCount:
        """Send the call's count and return at once; its ``decide()`` is ``admit``'s answer.

        One atomic increment gives this call's place in the window: no read-back that other
        calls or the window's end could change in between.
        """
        window = math.floor(now / WINDOW_S) * WINDOW_S
        pending = self._counters.send_add(_key(client_id, route, window), 1, _KEEP_S)
        return CallCount(pending, self.limit_for(route), window, now)


class CallCount:
    """One call's count on its way: ``decide()`` reads it and admits or refuses the call."""

    def __init__(self, pending: PendingAdd, limit: int, window: float, now: float) -> None:
        self._pending = pending
        self._limit = limit
        self._window = window
        self._now = now

    def decide(self) -> dict[str, str]:
        """Return the headers to send; raise the 429 when over the limit. Call it once."""
        used = self._pending.result()
        if used is None:  # the storage failed: let through without headers, like Kong
            return {}
        limit = self._limit
        headers = {LIMIT_HEADER: str(limit), REMAINING_HEADER: str(max(limit - used, 0))}
        if used > limit:
            retry_after = max(1, math.ceil(self._window + WINDOW_S - self._now))
            raise GatewayMessage(429, RATE_LIMITED,
                                 headers={**headers, "Retry-After": str(retry_after)})
        return headers

    def abandon(self) -> None:
        """Drop the answer unread (the call was counted all the same)."""
        self._pending.cancel()


@dataclass(frozen=True)
class AuthAttempt:
    """One client authentication at the token endpoint, as the throttle counted it."""

    keys: tuple[str, ...]  # the places it took: (client id, address) and address
    local: bool = False  # counted in this process (the shared storage was down)
    retry_after: int | None = None  # set: refused, whatever the secret

    @property
    def refused(self) -> bool:
        """Return whether the attempt must be refused without checking the secret."""
        return self.retry_after is not None


class FailedAuthThrottle:
    """Limits failed client authentications per (client id, caller address) and per caller
    address, each per calendar minute.

    Every attempt takes a place in both windows before the secret is checked, and gives them
    back when the secret was right: concurrent guesses cannot all slip in before the first
    failure is counted. Over either limit, the attempt is refused *without* checking the
    secret: a throttle that still let the right secret through would answer every guess,
    right or wrong, and so test secrets at full speed. The caller's address is part of the
    pair key because of that: someone spamming a client's id elsewhere exhausts only their
    own (id, address) pair, never the real client's. The per-address key catches what the
    pair key cannot: a fresh client id on every attempt.

    While the shared storage is down the counts are kept in this process (never nothing).
    """

    def __init__(self, counters: SharedCounters, *, limit: int = FAILED_AUTH_LIMIT,
                 address_limit: int = FAILED_AUTH_ADDRESS_LIMIT,
                 window_s: int = FAILED_AUTH_WINDOW_S) -> None:
        self._counters = counters
        self._fallback = ProcessCounters()
        self.limit = limit
        self.address_limit = address_limit
        self.window_s = window_s

    def attempt(self, client_id: str, address: str | None, now: float) -> AuthAttempt:
        """Count an authentication attempt; the result says whether it may go on."""
        window = math.floor(now / self.window_s) * self.window_s
        keys = (_auth_key(client_id, address, window), _address_key(address, window))
        local = False
        used = [self._counters.add(key, 1, self.window_s + _KEEP_S) for key in keys]
        if None in used:  # the shared storage is down: count here rather than not at all
            local = True
            used = [self._fallback.incr(key, self.window_s + _KEEP_S) for key in keys]
        pair_used, address_used = (count or 0 for count in used)
        if pair_used > self.limit or address_used > self.address_limit:
            # Once per window and key, not once per refused guess. The id may be anything
            # (even a secret sent in the wrong field): logged only as a short hash.
            if pair_used == self.limit + 1:
                log.warning("client authentication throttled: client id %s from %s after %d "
                            "failures this minute", client_ref(client_id), address, self.limit)
            if address_used == self.address_limit + 1:
                log.warning("client authentication throttled: address %s after %d failures "
                            "this minute, any client id", address, self.address_limit)
            return AuthAttempt(keys=keys, local=local,
                               retry_after=max(1, math.ceil(window + self.window_s - now)))
        return AuthAttempt(keys=keys, local=local)

    def succeeded(self, attempt: AuthAttempt) -> None:
        """Give back the places of an attempt whose secret was right: only failures count."""
        if attempt.refused:
            return
        for key in attempt.keys:
            if attempt.local:
                self._fallback.incr(key, self.window_s + _KEEP_S, amount=-1)
            else:
                self._counters.add(key, -1, self.window_s + _KEEP_S)


def client_ref(client_id: str) -> str:
    """Return how a presented client id is logged: a short hash, never the text itself."""
    digest = hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest[:12]}"


def _key(client_id: str, route: str, window: float) -> str:
    # Route (a Flask endpoint name) and window hold no "/" and come first, so a client id
    # containing one cannot make two keys collide.
    return f"shim-rate/{route}/{int(window)}/{client_id}"


def _auth_key(client_id: str, address: str | None, window: float) -> str:
    # Hashed: a presented client id may be any text of any length, and unknown ids should
    # not be readable from the counter store.
    pair = f"{client_id}\0{address or '-'}".encode("utf-8", "surrogatepass")
    return f"shim-auth/{int(window)}/{hashlib.sha256(pair).hexdigest()[:32]}"


def _address_key(address: str | None, window: float) -> str:
    return f"shim-auth-address/{int(window)}/{address or '-'}"


# A read's count in the request (``g``): sent by the guard, decided before the call reaches
# the platform, or before the answer leaves when it never did.
_PENDING = "rate_limit_count"


def defer(counted: CallCount) -> None:
    """Keep ``counted`` undecided for now: the count's round trip to Redis overlaps the
    request's work until ``decide_now`` (before the platform call) or the answer."""
    setattr(current_g(), _PENDING, counted)
    # A request's own after-request functions run before the app's hooks: every hook (usage,
    # headers, metrics, the recorder) then sees the answer as decided.
    after_this_request(decide_before_answer)


def decide_now() -> None:
    """Decide the request's deferred count, if any: the 429 is raised here, before anything
    leaves for the platform, so a call over the limit never reaches it."""
    ctx = current_g()
    counted = ctx.pop(_PENDING, None)
    if counted is None:
        return
    was_in_gateway = ctx.get("in_gateway", False)
    ctx.in_gateway = True  # the limiter is the gateway's: its failures are Kong's
    try:
        ctx.rate_limit_headers = counted.decide()
    except GatewayMessage:
        ctx.counts_as_usage = False  # refused by the gateway: not a call of the route
        raise
    finally:
        ctx.in_gateway = was_in_gateway


def decide_before_answer(response: Response) -> Response:
    """(after this request) Decide a count no platform call decided: over the limit, the
    429 replaces the answer, as if the limiter had refused first (Kong's order)."""
    try:
        decide_now()
    except GatewayMessage as refusal:
        return cast(Response, render(refusal))
    return response


def abandon(_error: BaseException | None = None) -> None:
    """(teardown) Drop a count nobody decided, so its connection never serves another."""
    counted = current_g().pop(_PENDING, None)
    if counted is not None:
        counted.abandon()
