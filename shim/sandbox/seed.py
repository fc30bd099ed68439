"""Deterministic seed data for one store: pickup locations, products, stock lots, pickup jobs.

Everything comes from ``random.Random(seed)`` and dates are relative to ``now_ms``, so one seed
and one clock give the same store every time. The legacy documentation's example records are
included verbatim, so examples from the docs work against the sandbox.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
JOB_STATUSES = ("pending", "arrived", "pickedup", "cancelled", "failed")
CATEGORIES = ("Dry", "Fresh", "Frozen")
PRODUCT_STATUSES = ("Enabled", "Disabled", "Discontinued")

DOC_LOCATION: dict[str, Any] = {
    "id": "23789", "name": "ABC Merchant", "addressLine1": "1 Main Street",
    "addressLine2": "#02-15", "city": "Singapore", "postalCode": "123456", "country": "Singapore"}
DOC_PRODUCT: dict[str, Any] = {"rpc": 100150, "productCode": "abc-merch-specific-choc-cereals-code",
               "title": "Chocolate Cereals", "barcodes": ["111122223333"],
               "pickupLocations": [{"id": "23789"}], "status": {"type": "Enabled"}}
DOC_STOCK: dict[str, int] = {"quantityAtPickupLocation": 10, "quantityScheduledForPickup": 2}
DOC_JOB: dict[str, Any] = {
    "id": 123, "status": "pickedup", "category": "Dry", "scheduledAt": 1684135189000,
    "pickedAt": 1684136189000, "amendabilityCutOffDate": 1684135989000,
    "preferredPickupTime": "13:00-17:00", "qtyCount": 11, "qtyFulfilledCount": 10,
    "items": [{
        "name": "Salmon", "sku": "19739731408", "vpc": "19739731408", "size": "2.5 kg",
        "qty": 11, "qtyFulfilled": 10, "rpc": 123456, "minimumExpiryDate": 1770357600000,
        "imageUrl": "http://media.redmart.com/newmedia/1600x/i/m/xxx.jpg",
        "shipmentsInfo": [{"qty": 5, "orderId": "49e74qjnkprp1to4"},
                          {"qty": 6, "orderId": "49e74qjn1prp1to4"}],
    }],
}

_OTHER_LOCATIONS = [
    ("23790", "ABC Merchant Tuas DC", "25 Tuas Avenue 4", "#01-02", "639383"),
    ("23791", "ABC Merchant Changi Cold Store", "3 Changi North Street 2", "#03-07", "498827"),
    ("23792", "ABC Merchant Woodlands", "11 Woodlands Loop", "#05-21", "738317"),
    ("23793", "ABC Merchant Jurong Hub", "8 Jalan Terusan", "#02-01", "619293"),
]
_ADJECTIVES = ("Organic", "Classic", "Premium", "Wholegrain", "Fresh", "Frozen", "Lite",
               "Spicy", "Roasted", "Honey", "Sea Salt", "Family Pack")
_NOUNS = ("Rolled Oats", "Jasmine Rice", "Almond Milk", "Salmon Fillet", "Greek Yoghurt",
          "Peanut Butter", "Green Tea", "Egg Noodles", "Chicken Breast", "Kaya Spread",
          "Cheddar Cheese", "Ice Cream", "Orange Juice", "Instant Coffee", "Tofu", "Dumplings")
_SIZES = ("250 g", "500 g", "1 kg", "2.5 kg", "1 L", "6 x 330 ml", "12 pcs")
_PICKUP_WINDOWS = ("09:00-12:00", "13:00-17:00", "17:00-20:00")


@dataclass
class Catalog:
    """One store's read-only records plus its initial stock, indexed the way lookups need."""

    locations: list[dict[str, Any]]
    products: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    stock: dict[tuple[int, str], dict[str, int]]
    locations_by_id: dict[str, dict[str, Any]] = field(init=False)
    products_by_rpc: dict[int, dict[str, Any]] = field(init=False)
    jobs_by_id: dict[int, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.locations_by_id = {loc["id"]: loc for loc in self.locations}
        self.products_by_rpc = {p["rpc"]: p for p in self.products}
        self.jobs_by_id = {j["id"]: j for j in self.jobs}


def build_catalog(seed: int, now_ms: int) -> Catalog:
    """Return the seed data for one store (same ``seed`` and ``now_ms``: same data)."""
    rng = random.Random(seed)
    locations = [dict(DOC_LOCATION)] + [
        {"id": lid, "name": name, "addressLine1": line1, "addressLine2": line2,
         "city": "Singapore", "postalCode": postal, "country": "Singapore"}
        for lid, name, line1, line2, postal in _OTHER_LOCATIONS
    ]
    products, stock = _products(rng, [loc["id"] for loc in locations])
    jobs = _jobs(rng, products, now_ms)
    return Catalog(locations=locations, products=products, jobs=jobs, stock=stock)


def _products(rng: random.Random, location_ids: list[str],
              ) -> tuple[list[dict[str, Any]], dict[tuple[int, str], dict[str, int]]]:
    # Mostly 6-digit RPCs, plus a few above 2**32 so int64 handling gets exercised.
    small = rng.sample([n for n in range(100_001, 101_200) if n != DOC_PRODUCT["rpc"]], 285)
    large = [4_300_000_000 + rng.randrange(10**9) for _ in range(14)]
    products = [_copy(DOC_PRODUCT)]
    stock = {(DOC_PRODUCT["rpc"], DOC_LOCATION["id"]): dict(DOC_STOCK)}
    for rpc in small + large:
        title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_SIZES)}"
        at = sorted(rng.sample(location_ids, rng.choice((1, 1, 2, 3))))
        barcodes = [str(rng.randrange(10**12, 10**13)) for _ in range(rng.choice((0, 1, 1, 2)))]
        products.append({
            "rpc": rpc,
            "productCode": f"abc-{title.lower().replace(' ', '-')}-{rpc}",
            "title": title,
            "barcodes": barcodes,
            "pickupLocations": [{"id": lid} for lid in at],
            "status": {"type": rng.choices(PRODUCT_STATUSES, weights=(80, 12, 8))[0]},
        })
        for lid in at:
            on_hand = rng.choice((0, rng.randrange(1, 40), rng.randrange(40, 500)))
            scheduled = rng.randrange(0, min(on_hand, 20) + 1)
            stock[(rpc, lid)] = {"quantityAtPickupLocation": on_hand,
                                 "quantityScheduledForPickup": scheduled}
    products.sort(key=lambda p: p["rpc"])
    return products, stock


def _jobs(rng: random.Random, products: list[dict[str, Any]],
          now_ms: int) -> list[dict[str, Any]]:
    jobs = [_copy(DOC_JOB)]
    job_id = 880_000
    for index in range(80):
        job_id += rng.randrange(1, 9)
        # The first five cover every status whatever the seed; the rest follow the calendar.
        status = JOB_STATUSES[index] if index < len(JOB_STATUSES) else None
        jobs.append(_job(rng, job_id, status, products, now_ms))
    jobs.sort(key=lambda j: (j["scheduledAt"], j["id"]))
    return jobs


def _job(rng: random.Random, job_id: int, status: str | None, products: list[dict[str, Any]],
         now_ms: int) -> dict[str, Any]:
    if status == "pending":
        scheduled = now_ms + rng.randrange(HOUR_MS, 14 * DAY_MS)
    elif status == "arrived":
        scheduled = now_ms - rng.randrange(0, 2 * HOUR_MS)
    elif status is not None:
        scheduled = now_ms - rng.randrange(DAY_MS, 170 * DAY_MS)
    else:
        scheduled = now_ms + rng.randrange(-170 * DAY_MS, 14 * DAY_MS)
        status = _status_for(rng, scheduled - now_ms)
    scheduled -= scheduled % 60_000
    items = [_item(rng, p, status, scheduled)
             for p in rng.sample(products, rng.randrange(1, 7))]
    job: dict[str, Any] = {"id": job_id, "status": status, "category": rng.choice(CATEGORIES),
           "scheduledAt": scheduled, "qtyCount": sum(i["qty"] for i in items),
           "qtyFulfilledCount": sum(i.get("qtyFulfilled", 0) for i in items), "items": items}
    if status == "pickedup":
        job["pickedAt"] = scheduled + rng.randrange(5, 240) * 60_000
    if rng.random() < 0.7:
        job["amendabilityCutOffDate"] = scheduled - rng.randrange(2, 48) * HOUR_MS
    if rng.random() < 0.6:
        job["preferredPickupTime"] = rng.choice(_PICKUP_WINDOWS)
    return job


def _status_for(rng: random.Random, offset_ms: int) -> str:
    if offset_ms > 0:
        return rng.choices(("pending", "cancelled"), weights=(9, 1))[0]
    if offset_ms > -DAY_MS:
        return rng.choice(("arrived", "pickedup"))
    return rng.choices(("pickedup", "cancelled", "failed"), weights=(7, 2, 1))[0]


def _item(rng: random.Random, product: dict[str, Any], status: str,
          scheduled: int) -> dict[str, Any]:
    qty = rng.randrange(1, 31)
    code = str(rng.randrange(10**10, 10**11))
    item: dict[str, Any] = {"name": product["title"], "sku": code, "qty": qty,
                            "rpc": product["rpc"]}
    if status == "pickedup" or (status in ("arrived", "failed") and rng.random() < 0.5):
        item["qtyFulfilled"] = max(0, qty - rng.choice((0, 0, 0, 1, 2)))
    if rng.random() < 0.8:
        item["size"] = rng.choice(_SIZES)
    if rng.random() < 0.7:
        item["vpc"] = code
    if rng.random() < 0.6:
        item["imageUrl"] = f"http://media.redmart.com/newmedia/1600x/i/m/{product['rpc']}.jpg"
    if rng.random() < 0.5:
        item["minimumExpiryDate"] = scheduled + rng.randrange(7, 365) * DAY_MS
    if rng.random() < 0.7:
        first = rng.randrange(0, qty + 1)
        parts = [first, qty - first] if 0 < first < qty else [qty]
        item["shipmentsInfo"] = [{"qty": part, "orderId": f"{rng.getrandbits(64):016x}"}
                                 for part in parts]
    return item


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    # The module-level examples must never be mutated through a store's records.
    return copy.deepcopy(record)
