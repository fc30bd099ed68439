"""The RedMart (``/rss/...``) APIs: one table row per path, one small handler per API.

Handlers get the caller's store and parsed parameters and return the ``data`` to send; they
raise ``BusinessFailure`` for the service's "not found" and conflict answers. Paging and the
envelope are applied by the caller (``app.py``), the same way for every API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shim.sandbox import params as p
from shim.sandbox.gateway import BusinessFailure
from shim.sandbox.seed import Catalog
from shim.sandbox.state import STOCK_LOT_ID, SandboxState

NOT_ACCESSIBLE = "The store is not accessible with this access token"
BELOW_SCHEDULED = "Quantity at pickup location cannot be lower than quantity scheduled for pickup"


@dataclass
class Call:
    """One RSS call in progress: its store, and notes the ledger keeps about it."""

    state: SandboxState
    store_id: str
    catalog: Catalog
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RssApi:
    """One RSS API: its parameters, its handler, and how its answer is shaped."""

    path: str
    spec: tuple[p.Param, ...]
    handler: Callable[[Call, dict[str, Any]], Any]
    kind: str
    paged: bool = False


def pickup_locations(call: Call, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every pickup location of the store (paged by the caller)."""
    return list(call.catalog.locations)


def pickup_location(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    """Return one pickup location."""
    return _location(call, values["pickupLocationId"])


def products(call: Call, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the store's products, optionally only those at some pickup locations."""
    wanted = {str(i) for i in values.get("pickupLocationIds", ())}
    return [product for product in call.catalog.products
            if not wanted or wanted & {loc["id"] for loc in product["pickupLocations"]}]


def product(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    """Return one product by RPC."""
    return _product(call, values["productId"])


def stock_lots(call: Call, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the stock lots of a product at a location (one lot, or none if not stocked)."""
    rpc, location_id = _product_at(call, values)
    lot = call.state.get_lot(call.store_id, rpc, location_id)
    return [lot] if lot else []


def stock_lot(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    """Return the stock lot "0" of a product at a location."""
    rpc, location_id = _product_at(call, values)
    lot = call.state.get_lot(call.store_id, rpc, location_id)
    if lot is None or values["stockLotId"] != STOCK_LOT_ID:
        raise BusinessFailure("Stock lot not found")
    return lot


def update_stock_lot(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    """Set a lot's quantityAtPickupLocation and return the updated lot."""
    rpc, location_id = _product_at(call, values)
    call.notes["applied"] = False
    if values["stockLotId"] != STOCK_LOT_ID:
        raise BusinessFailure("Stock lot not found")
    change = call.state.update_lot(call.store_id, rpc, location_id,
                                   values["stockLotUpdateDTO"])
    if change is None:
        raise BusinessFailure("Stock lot not found")
    call.notes.update(before=change.before, after=change.after, applied=change.applied)
    if not change.applied:
        raise BusinessFailure(BELOW_SCHEDULED)
    return change.after


def pickup_jobs(call: Call, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the jobs scheduled in [from, till], optionally of some statuses, by scheduledAt."""
    wanted = set(values.get("statuses", ()))
    return [job for job in call.catalog.jobs  # already sorted by scheduledAt
            if values["from"] <= job["scheduledAt"] <= values["till"]
            and (not wanted or job["status"] in wanted)]


def pickup_job(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    """Return one pickup job by id."""
    job = call.catalog.jobs_by_id.get(values["pickupJobId"])
    if job is None:
        raise BusinessFailure("Pickup job not found")
    return job


def _location(call: Call, location_id: int) -> dict[str, Any]:
    location = call.catalog.locations_by_id.get(str(location_id))
    if location is None:
        raise BusinessFailure("Pickup location not found")
    return location


def _product(call: Call, rpc: int) -> dict[str, Any]:
    found = call.catalog.products_by_rpc.get(rpc)
    if found is None:
        raise BusinessFailure("Product not found")
    return found


def _product_at(call: Call, values: dict[str, Any]) -> tuple[int, str]:
    rpc = _product(call, values["productId"])["rpc"]
    return rpc, _location(call, values["pickupLocationId"])["id"]


STORE = p.Param("storeId", p.number)
PAGING = (p.Param("page", p.page), p.Param("pageSize", p.page_size))
LOT = (STORE, p.Param("pickupLocationId", p.number), p.Param("productId", p.number))

APIS: dict[str, RssApi] = {api.path: api for api in (
    RssApi("/rss/pickupLocations/get", (STORE, *PAGING), pickup_locations, "location",
           paged=True),
    RssApi("/rss/pickupLocation/get", (STORE, p.Param("pickupLocationId", p.number)),
           pickup_location, "location"),
    RssApi("/rss/products/get",
           (STORE, *PAGING, p.Param("pickupLocationIds", p.id_list, required=False)),
           products, "product", paged=True),
    RssApi("/rss/product/get", (STORE, p.Param("productId", p.number)), product, "product"),
    RssApi("/rss/stockLots/get", LOT, stock_lots, "stockLot"),
    RssApi("/rss/stockLot/get", (*LOT, p.Param("stockLotId", p.text)), stock_lot, "stockLot"),
    RssApi("/rss/stockLot/update",
           (*LOT, p.Param("stockLotId", p.text), p.Param("stockLotUpdateDTO", p.stock_update)),
           update_stock_lot, "stockLot"),
    RssApi("/rss/pickup-jobs/get",
           (STORE, p.Param("from", p.number), p.Param("till", p.number),
            p.Param("statuses", p.statuses, required=False)),
           pickup_jobs, "job"),
    RssApi("/rss/pickup-job/get", (STORE, p.Param("pickupJobId", p.number)), pickup_job, "job"),
)}
SINGLE_LOCATION_API = "/rss/pickupLocation/get"


def run(api: RssApi, call: Call, values: dict[str, Any]) -> tuple[Any, tuple[int, int, int] | None]:
    """Run an API for a verified call; return its data and, for paged APIs, the page info."""
    if values["storeId"] != int(call.store_id):
        raise BusinessFailure(NOT_ACCESSIBLE)
    data = api.handler(call, values)
    if not api.paged:
        return data, None
    number, size = values["page"], values["pageSize"]
    return data[(number - 1) * size:number * size], (number, size, len(data))


def vary(kind: str, data: Any) -> Any:
    """Return ``data`` with the variant field types of the rendered docs (reference 7)."""
    if isinstance(data, list):
        return [vary(kind, item) for item in data]
    if kind == "product":
        return {**data, "status": data["status"]["type"]}
    if kind == "stockLot":
        return {**data, "id": int(data["id"])}
    return data
