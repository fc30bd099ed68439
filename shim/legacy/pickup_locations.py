"""``GET /v1/pickup-locations`` and ``GET /v1/pickup-locations/{pickupLocationId}``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shim import errors, scopes
from shim.legacy import rss
from shim.legacy.inputs import load_path, load_query
from shim.legacy.routes import Doc, Route, RouteBlueprint
from shim.schemas.common import (
    MAX_PAGE_SIZE,
    LegacyPageQuerySchema,
    RssPageParamsSchema,
    example_page,
)
from shim.schemas.pickup_locations import (
    EXAMPLE_LOCATION,
    LegacyPickupLocationPageSchema,
    LegacyPickupLocationPathSchema,
    LegacyPickupLocationSchema,
    RssPickupLocationPageAsLegacySchema,
    RssPickupLocationParamsSchema,
    RssPickupLocationResultAsLegacySchema,
)
from shim.schemas.straight import straight_page
from shim.services import get_services
from shim.upstream import UnknownApi

log = logging.getLogger(__name__)
bp = RouteBlueprint("pickup_locations", __name__)

LIST_API = "/rss/pickupLocations/get"
ONE_API = "/rss/pickupLocation/get"  # only in the migration guide: may not exist (reference 6.9)
MAX_SCAN_PAGES = 100  # 10,000 locations: far more than any store has
SCAN_PAGE_SIZE = MAX_PAGE_SIZE  # read at call time, so tests can make pages small

_query, _page_params = LegacyPageQuerySchema(), RssPageParamsSchema()
_rss_page = RssPickupLocationPageAsLegacySchema()  # answers load straight into legacy JSON
_path, _one_params = LegacyPickupLocationPathSchema(), RssPickupLocationParamsSchema()
_rss_one = RssPickupLocationResultAsLegacySchema()


@bp.declare(Route(
    method="GET", rule="/v1/pickup-locations", scope=scopes.READ_PICKUP_LOCATION,
    fixtures="pickup-locations-list", query=LegacyPageQuerySchema,
    answer=LegacyPickupLocationPageSchema, statuses=(400,),
    doc=Doc(answer="A Page of PickupLocations.", example=example_page(EXAMPLE_LOCATION),
            notes="Unknown query parameters are ignored; a known one given twice is a 400.")))
def list_pickup_locations() -> dict[str, Any]:
    """Return a Page of the seller's pickup locations."""
    query = load_query(_query)
    loaded = rss.fetch(LIST_API, _page_params.dump(query), _rss_page)
    return straight_page(LegacyPickupLocationPageSchema, query, loaded)


@bp.declare(Route(
    method="GET", rule="/v1/pickup-locations/<pickup_location_id>",
    scope=scopes.READ_PICKUP_LOCATION, fixtures="pickup-locations-get",
    path=LegacyPickupLocationPathSchema, answer=LegacyPickupLocationSchema, statuses=(404,),
    doc=Doc(answer="The pickup location.", example=EXAMPLE_LOCATION,
            notes="An id that is not digits, or too large, is a 404 (as documented), not a "
                  "400.")))
def get_pickup_location(pickup_location_id: str) -> dict[str, Any]:
    """Return one pickup location; an id that cannot exist is a 404, as documented."""
    path = load_path(_path, {"pickupLocationId": pickup_location_id}, error=errors.not_found())
    return find(path["pickup_location_id"])


def find(location_id: int) -> dict[str, Any]:
    """Return the location, through the single-location API while the platform has it."""
    services = get_services()
    if ONE_API not in services.unknown_apis:
        try:
            params = _one_params.dump({"pickup_location_id": location_id})
            return rss.fetch_one(ONE_API, params, _rss_one, passing=(UnknownApi,))
        except UnknownApi:
            log.warning("%s is unknown upstream; finding pickup locations by paging %s",
                        ONE_API, LIST_API)
            services.unknown_apis.add(ONE_API)
    found = scan(str(location_id), fetch_page, SCAN_PAGE_SIZE)
    if found is None:
        raise errors.not_found()
    return found


def fetch_page(page: int, page_size: int) -> dict[str, Any]:
    """Return one loaded page of the caller's pickup locations."""
    params = _page_params.dump({"page": page, "page_size": page_size})
    return rss.fetch(LIST_API, params, _rss_page)


def scan(location_id: str, fetch: Callable[[int, int], dict[str, Any]],
         page_size: int) -> dict[str, Any] | None:
    """Return the location with ``location_id`` from the pages ``fetch`` gives, or None.

    The end is the first of: an empty page, ``total`` locations seen, or (without a total) a
    short page. A short page alone is not the end when a total says more exist, as the
    platform may cap the page size below what was asked.
    """
    seen = 0
    for page in range(1, MAX_SCAN_PAGES + 1):
        loaded = fetch(page, page_size)
        locations: list[dict[str, Any]] = loaded["data"]
        for location in locations:
            if location["id"] == location_id:
                return location
        seen += len(loaded["data"])
        total = loaded.get("total")
        if not loaded["data"] or (total is not None and seen >= total) or (
                total is None and len(loaded["data"]) < (loaded.get("page_size") or page_size)):
            return None
    log.warning("gave up looking for pickup location %s after %d pages", location_id,
                MAX_SCAN_PAGES)
    return None
