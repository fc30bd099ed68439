"""Seller tokens over time: refresh before expiry, refresh-and-replay once, re-authorization.

Rules, in the order they protect a seller's integration:
- the new token pair is committed before it is used, and the row lock plus the generation
  check in ``Store.update_tokens`` make one refresh per expiry across threads, processes and
  instances (whoever gets the lock second sees the new generation and does nothing);
- a refresh that fails for a passing reason keeps the old pair, which stays usable until it
  expires; one the platform refuses (``IllegalRefreshToken``) marks the seller as needing
  re-authorization, and from then on calls fail fast instead of looping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from marshmallow import ValidationError

from shim.authorization import grant_from
from shim.failures import ReauthorizationNeeded, RefreshUnanswered, TokensUnavailable
from shim.metrics import Metrics
from shim.store.base import Store
from shim.store.records import RefreshFailed, Seller, TokenGrant
from shim.upstream import RefreshRefused, TransportError, UpstreamError, UpstreamUnreachable
from shim.upstream.client import LazadaClient, SellerCredentials

log = logging.getLogger(__name__)

__all__ = ["Lease", "ReauthorizationNeeded", "RefreshUnanswered", "SellerTokens",
           "TokensUnavailable"]

RETRY_AFTER_FAILURE_S = 60.0  # a failed refresh is not retried by every call that follows
# How long a process reuses a seller record it read (and decrypted) for the calls it serves.
# A refresh by another instance reaches this one within this time, or at once when the
# platform refuses the old token (``renew`` always reads the store).
SELLER_CACHE_S = 2.0


@dataclass(frozen=True)
class Lease:
    """The credentials for one call, and the seller record they came from (for a replay)."""

    credentials: SellerCredentials
    seller: Seller

    @property
    def generation(self) -> int:
        """Return the token generation these credentials belong to."""
        return self.seller.generation


class SellerTokens:
    """Hands out seller credentials, refreshing them when due."""

    def __init__(
        self,
        store: Store,
        upstream_for: Callable[[Seller], LazadaClient],
        *,
        margin_s: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        cache_s: float = SELLER_CACHE_S,
    ) -> None:
        self.store = store
        self.upstream_for = upstream_for
        self.margin_s = margin_s
        self.metrics = metrics
        self.clock = clock
        self.read_only = store.read_only
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Seller]] = {}  # name -> (read at, record)

    def lease(self, name: str) -> Lease:
        """Return credentials for a call now, refreshing first when the token is due.

        A seller marked for re-authorization keeps being served while its access token
        lasts: the operator is alerted, but the seller loses nothing before it must.
        """
        seller = self._cached(name)
        if not self.read_only and not seller.needs_reauth and self.is_due(seller):
            try:
                seller = self._refresh(name, seller.generation, forced=False)
            except ReauthorizationNeeded:
                seller = self._get(name)
        return self._lease(seller)

    def renew(self, name: str, rejected: Lease) -> Lease:
        """Return new credentials after the platform refused ``rejected`` (IllegalAccessToken)."""
        seller = self._get(name)
        if seller.generation == rejected.generation:
            if self.read_only:
                raise TokensUnavailable(f"seller {name!r}: the platform refused the access token")
            seller = self._refresh(name, rejected.generation, forced=True)
        if seller.generation == rejected.generation:  # the refresh failed for a passing reason
            raise RefreshUnanswered(f"seller {name!r}: the platform refused the access token "
                                    f"and the refresh failed ({seller.last_refresh_result})")
        return self._lease(seller)

    def is_due(self, seller: Seller) -> bool:
        """Return whether the seller's access token expires within the margin."""
        expires_at = seller.access_expires_at
        return expires_at is not None and expires_at - self.margin_s <= self.clock()

    def refresh_due(self) -> int:
        """Refresh every seller whose token is due; return how many were refreshed."""
        done = 0
        for seller in self.store.list_sellers():
            if seller.needs_reauth or not seller.refresh_token or not self.is_due(seller):
                continue
            try:
                if self._refresh(seller.name, seller.generation, forced=False).generation \
                        != seller.generation:
                    done += 1
            except (ReauthorizationNeeded, TokensUnavailable):
                continue  # logged where it happened; the next round or a call retries
        return done

    def _cached(self, name: str) -> Seller:
        entry = self._cache.get(name)
        now = time.monotonic()
        if entry is not None and now - entry[0] < self.cache_s:
            return entry[1]
        return self._get(name)

    def _get(self, name: str) -> Seller:
        """Read the seller from the store (and remember it for ``cache_s``)."""
        seller = self.store.get_seller(name)
        if seller is not None:
            self._cache[name] = (time.monotonic(), seller)
        if seller is None:
            raise ReauthorizationNeeded(name, "the seller is not registered")
        if not seller.access_token:
            raise ReauthorizationNeeded(name, "the seller has not authorized the shim yet")
        return seller

    def _lease(self, seller: Seller) -> Lease:
        expired = seller.access_expires_at is not None and seller.access_expires_at <= self.clock()
        if expired and seller.needs_reauth:
            raise ReauthorizationNeeded(seller.name, seller.reauth_reason or "refresh refused")
        if expired:
            raise TokensUnavailable(f"seller {seller.name!r}: the access token has expired")
        if not seller.access_token:  # _get lets none through; a lease needs one
            raise ReauthorizationNeeded(seller.name, "the seller has not authorized the shim yet")
        return Lease(SellerCredentials(store_id=seller.store_id,
                                       access_token=seller.access_token), seller)

    def _failed_recently(self, seller: Seller) -> bool:
        return bool(seller.last_refresh_result and seller.last_refresh_result.startswith("failed")
                    and seller.last_refresh_at is not None
                    and self.clock() - seller.last_refresh_at < RETRY_AFTER_FAILURE_S)

    def _refresh(self, name: str, seen_generation: int, *, forced: bool) -> Seller:
        lost: list[str] = []  # why the answer may be lost after the platform rotated

        def decide(current: Seller) -> TokenGrant | RefreshFailed | None:
            if current.generation != seen_generation:
                return None  # refreshed by somebody else meanwhile
            if current.needs_reauth:
                # No refresh can help; a refused access token is dead from now on, so that
                # later calls fail fast instead of trying it again.
                return RefreshFailed(current.reauth_reason or "refresh refused",
                                     reauthorize=True, retire_access=True) if forced else None
            if not forced and (not self.is_due(current) or self._failed_recently(current)):
                return None
            if not current.refresh_token or (current.refresh_expires_at is not None
                                             and current.refresh_expires_at <= self.clock()):
                return RefreshFailed("the refresh token has expired", reauthorize=True,
                                     retire_access=forced)
            try:
                answer = self.upstream_for(current).refresh_token(current.refresh_token)
                return grant_from(answer, self.clock())
            except RefreshRefused as error:
                return RefreshFailed(error.code, reauthorize=True, retire_access=forced)
            except UpstreamError as error:
                if _maybe_applied(error):
                    lost.append(error.code)
                return RefreshFailed(error.code)
            except ValidationError:
                lost.append("unreadable token answer")
                return RefreshFailed("unreadable token answer")

        updated = self.store.update_tokens(name, decide)
        self._cache[name] = (time.monotonic(), updated)
        if updated.generation != seen_generation:
            if updated.last_refresh_result == "refreshed" and updated.generation == \
                    seen_generation + 1:
                self.metrics.refreshes.labels(name, "refreshed").inc()
                log.info("refreshed the tokens of seller %s", name)
            return updated
        if updated.needs_reauth:
            self.metrics.refreshes.labels(name, "refused").inc()
            self.metrics.reauthorization_required.labels(name).inc()
            log.error("seller %s must authorize the shim again: %s", name, updated.reauth_reason)
            raise ReauthorizationNeeded(name, updated.reauth_reason or "refresh refused")
        if updated.last_refresh_result and updated.last_refresh_result.startswith("failed") \
                and lost:
            self.metrics.refreshes.labels(name, "failed").inc()
            self.metrics.refresh_answers_lost.labels(name).inc()
            # Nobody can tell yet whether the platform rotated the pair: the next refresh will.
            # If it did, the new refresh token is gone with the answer, and the seller must
            # authorize again; the current access token serves until it expires either way.
            log.error("the answer to refreshing seller %s was lost (%s): if the platform "
                      "rotated the tokens, the seller must authorize the shim again", name,
                      lost[0])
        elif updated.last_refresh_result and updated.last_refresh_result.startswith("failed"):
            self.metrics.refreshes.labels(name, "failed").inc()
            log.warning("refreshing seller %s failed (%s); keeping the current tokens", name,
                        updated.last_refresh_result)
        return updated


def _maybe_applied(error: UpstreamError) -> bool:
    """Return whether a failed refresh may have reached the platform and rotated the pair."""
    if isinstance(error, UpstreamUnreachable):
        return False  # nothing was sent
    return isinstance(error, TransportError) or error.late
