"""The sandbox's mutable world, behind one lock: stock, tokens, codes, ledger and fault rules.

Catalog records (locations, products, pickup jobs) never change after seeding, so handlers
read them freely; everything that can change goes through a method here.
"""

from __future__ import annotations

import copy
import json
import random
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from shim.sandbox.config import SandboxConfig, SellerAccount
from shim.sandbox.faults import FaultRule
from shim.sandbox.seed import Catalog, build_catalog

CODE_TTL_S = 1800
STOCK_LOT_ID = "0"


@dataclass
class Grant:
    """Who a token or code belongs to and until when (epoch seconds)."""

    store_id: str
    expires_at: float


@dataclass(frozen=True)
class TokenPair:
    """A freshly issued access and refresh token with their absolute expiries."""

    store_id: str
    access_token: str
    refresh_token: str
    access_expires_at: float
    refresh_expires_at: float


@dataclass(frozen=True)
class StockChange:
    """The outcome of a stock write: quantities before and after, and whether it applied."""

    before: dict[str, Any]
    after: dict[str, Any]
    applied: bool


def stock_lot(quantities: dict[str, int]) -> dict[str, Any]:
    """Return the API's StockLot object for one lot's stored quantities."""
    at = quantities["quantityAtPickupLocation"]
    scheduled = quantities["quantityScheduledForPickup"]
    return {"id": STOCK_LOT_ID, "quantityAtPickupLocation": at,
            "quantityScheduledForPickup": scheduled, "quantityAvailableForSale": at - scheduled}


class SandboxState:
    """All state of one sandbox app; every method is safe to call from any request thread."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.rng = random.Random(config.seed)  # drives fault rates, so runs repeat
        self.variance = False
        self.latency_ms = 0
        self._template = build_catalog(config.seed, int(config.clock() * 1000))
        self.sellers: dict[str, SellerAccount] = {}
        self._catalogs: dict[str, Catalog] = {}
        self._stock: dict[tuple[str, int, str], dict[str, int]] = {}
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self._codes: dict[str, Grant] = {}
        # Each entry as JSON text: strings are not tracked by the garbage collector, so a long
        # ledger no longer makes every full collection walk it. As dicts, 10^5 calls made each
        # one pause the whole sandbox up to 76 ms (the bench's paced p99 showed it).
        self._ledger: list[str] = []
        self._faults: list[FaultRule] = []
        self._fault_ids = 0
        for seller in config.sellers:
            self.add_seller(seller)

    def now(self) -> float:
        """Return the sandbox clock in epoch seconds."""
        return self.config.clock()

    def pause(self, ms: float) -> None:
        """Sleep ``ms`` milliseconds, waking early when the server stops."""
        if ms > 0:
            self.stopping.wait(ms / 1000)

    # Stores and stock

    def add_seller(self, seller: SellerAccount) -> bool:
        """Register a seller's tokens; seed its store unless it exists. Return True if seeded."""
        with self.lock:
            self.sellers[seller.store_id] = seller
            self._access[seller.access_token] = Grant(seller.store_id, seller.access_expires_at)
            self._refresh[seller.refresh_token] = Grant(seller.store_id,
                                                        seller.refresh_expires_at)
            if seller.store_id in self._catalogs:
                return False
            catalog = copy.deepcopy(self._template)
            self._catalogs[seller.store_id] = catalog
            for (rpc, location_id), quantities in catalog.stock.items():
                self._stock[(seller.store_id, rpc, location_id)] = dict(quantities)
            return True

    def seller(self, store_id: str) -> SellerAccount | None:
        """Return the seller account registered last for a store."""
        with self.lock:
            return self.sellers.get(store_id)

    def set_mode(self, *, variance: bool | None = None, latency_ms: int | None = None) -> None:
        """Switch type-variance mode and/or set the latency every call waits first."""
        with self.lock:
            if variance is not None:
                self.variance = variance
            if latency_ms is not None:
                self.latency_ms = latency_ms

    def catalog(self, store_id: str) -> Catalog | None:
        """Return a store's read-only records, or None for an unknown store."""
        with self.lock:
            return self._catalogs.get(store_id)

    def get_lot(self, store_id: str, rpc: int, location_id: str) -> dict[str, Any] | None:
        """Return the StockLot of a product at a location, or None if it is not stocked there."""
        with self.lock:
            quantities = self._stock.get((store_id, rpc, location_id))
            return stock_lot(quantities) if quantities else None

    def update_lot(self, store_id: str, rpc: int, location_id: str,
                   quantity: int) -> StockChange | None:
        """Set quantityAtPickupLocation unless it would drop below the scheduled quantity."""
        with self.lock:
            quantities = self._stock.get((store_id, rpc, location_id))
            if quantities is None:
                return None
            before = stock_lot(quantities)
            applied = quantity >= quantities["quantityScheduledForPickup"]
            if applied:
                quantities["quantityAtPickupLocation"] = quantity
            return StockChange(before, stock_lot(quantities), applied)

    def set_lot(self, store_id: str, rpc: int, location_id: str, *,
                at: int | None = None, scheduled: int | None = None) -> StockChange | None:
        """Overwrite a lot's quantities as an outside writer would; refuse available < 0."""
        with self.lock:
            quantities = self._stock.get((store_id, rpc, location_id))
            if quantities is None:
                return None
            before = stock_lot(quantities)
            new_at = quantities["quantityAtPickupLocation"] if at is None else at
            new_scheduled = (quantities["quantityScheduledForPickup"] if scheduled is None
                             else scheduled)
            applied = new_scheduled <= new_at
            if applied:
                quantities.update(quantityAtPickupLocation=new_at,
                                  quantityScheduledForPickup=new_scheduled)
            return StockChange(before, stock_lot(quantities), applied)

    # Tokens and authorization codes

    def store_for_access_token(self, token: str) -> str | None:
        """Return the store an unexpired access token is valid for, else None."""
        with self.lock:
            grant = self._access.get(token)
            return grant.store_id if grant and grant.expires_at > self.now() else None

    def refresh_token_store(self, token: str) -> str | None:
        """Return the store an unexpired, unrotated refresh token is valid for, else None."""
        with self.lock:
            grant = self._refresh.get(token)
            return grant.store_id if grant and grant.expires_at > self.now() else None

    def issue_code(self, store_id: str) -> str:
        """Return a new single-use authorization code for a store (valid 30 minutes)."""
        code = f"0_{self.config.app_key}_{secrets.token_urlsafe(24)}"
        with self.lock:
            self._codes[code] = Grant(store_id, self.now() + CODE_TTL_S)
        return code

    def redeem_code(self, code: str) -> TokenPair | None:
        """Trade a code for a new token pair; None if unknown, used or expired."""
        with self.lock:
            grant = self._codes.pop(code, None)
            if grant is None or grant.expires_at <= self.now():
                return None
            return self._issue(grant.store_id, self.now() + self.config.refresh_token_ttl_s)

    def refresh(self, refresh_token: str) -> TokenPair | None:
        """Rotate a refresh token: new pair, same refresh expiry; the old one stops working."""
        with self.lock:
            grant = self._refresh.pop(refresh_token, None)
            if grant is None or grant.expires_at <= self.now():
                return None
            return self._issue(grant.store_id, grant.expires_at)

    def _issue(self, store_id: str, refresh_expires_at: float) -> TokenPair:
        pair = TokenPair(store_id=store_id, access_token="50000" + secrets.token_hex(24),
                         refresh_token="50001" + secrets.token_hex(24),
                         access_expires_at=self.now() + self.config.access_token_ttl_s,
                         refresh_expires_at=refresh_expires_at)
        self._access[pair.access_token] = Grant(store_id, pair.access_expires_at)
        self._refresh[pair.refresh_token] = Grant(store_id, refresh_expires_at)
        return pair

    def expire(self, store_id: str, *, access: bool, refresh: bool) -> int:
        """Expire every access and/or refresh token of a store; return how many."""
        count = 0
        with self.lock:
            past = self.now() - 1
            for book, wanted in ((self._access, access), (self._refresh, refresh)):
                for grant in book.values():
                    if wanted and grant.store_id == store_id:
                        grant.expires_at = past
                        count += 1
        return count

    # Ledger

    def record(self, entry: dict[str, Any]) -> int:
        """Append a ledger entry, stamping ``seq`` and ``time``; return its seq."""
        with self.lock:
            seq = len(self._ledger) + 1
            self._ledger.append(json.dumps({"seq": seq, "time": self.now(), **entry}))
            return seq

    def ledger(self, after: int = 0) -> list[dict[str, Any]]:
        """Return copies of the ledger entries with ``seq`` greater than ``after``."""
        with self.lock:
            texts = self._ledger[max(after, 0):]
        return [json.loads(text) for text in texts]

    # Fault rules

    def add_fault(self, rule: FaultRule) -> int:
        """Store a fault rule and return its id."""
        with self.lock:
            self._fault_ids += 1
            rule.id = self._fault_ids
            self._faults.append(rule)
            return rule.id

    def faults(self) -> list[FaultRule]:
        """Return copies of the active rules."""
        with self.lock:
            return [copy.copy(rule) for rule in self._faults]

    def clear_faults(self) -> None:
        """Drop every fault rule."""
        with self.lock:
            self._faults.clear()

    def draw_fault(self, api: str) -> FaultRule | None:
        """Return the first rule that fires for this call, consuming one of its ``times``."""
        with self.lock:
            for rule in self._faults:
                if rule.api not in ("*", api):
                    continue
                if rule.skip:
                    rule.skip -= 1
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._faults.remove(rule)
                    return copy.copy(rule)
                if rule.rate is not None and self.rng.random() < rule.rate:
                    return copy.copy(rule)
            return None
