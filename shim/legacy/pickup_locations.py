"""``GET /v1/pickup-locations`` and ``GET /v1/pickup-locations/{pickupLocationId}``."""

from __future__ import annotations

import logging

from flask import Blueprint

from shim import errors, scopes
from shim.legacy import rss
from shim.legacy.auth import requires
from shim.legacy.inputs import load_path, load_query
from shim.schemas.common import (
    MAX_PAGE_SIZE,
    LegacyPageQuerySchema,
    RssPageParamsSchema,
    page_of,
)
from shim.schemas.pickup_locations import (
    LegacyPickupLocationPageSchema,
    LegacyPickupLocationPathSchema,
    LegacyPickupLocationSchema,
    RssPickupLocationPageSchema,
    RssPickupLocationParamsSchema,
    RssPickupLocationResultSchema,
)
from shim.services import get_services

log = logging.getLogger(__name__)
bp = Blueprint("pickup_locations", __name__)

LIST_API = "/rss/pickupLocations/get"
ONE_API = "/rss/pickupLocation/get"  # only in the migration guide: may not exist (reference 6.9)
MAX_SCAN_PAGES = 100  # 10,000 locations: far more than any store has

_query, _page_params = LegacyPageQuerySchema(), RssPageParamsSchema()
_rss_page, _legacy_page = RssPickupLocationPageSchema(), LegacyPickupLocationPageSchema()
_path, _one_params = LegacyPickupLocationPathSchema(), RssPickupLocationParamsSchema()
_rss_one, _legacy_one = RssPickupLocationResultSchema(), LegacyPickupLocationSchema()


@bp.get("/v1/pickup-locations")
@requires(scopes.READ_PICKUP_LOCATION)
def list_pickup_locations():
    """Return a Page of the seller's pickup locations."""
    query = load_query(_query)
    loaded = rss.fetch(LIST_API, _page_params.dump(query), _rss_page)
    return _legacy_page.dump(page_of(query, loaded))


@bp.get("/v1/pickup-locations/<pickup_location_id>")
@requires(scopes.READ_PICKUP_LOCATION)
def get_pickup_location(pickup_location_id):
    """Return one pickup location; an id that cannot exist is a 404, as documented."""
    path = load_path(_path, {"pickupLocationId": pickup_location_id}, error=errors.not_found())
    return _legacy_one.dump(find(path["pickup_location_id"]))


def find(location_id: int) -> dict:
    """Return the location, through the single-location API while the platform has it."""
    services = get_services()
    if services.single_location_api:
        try:
            params = _one_params.dump({"pickup_location_id": location_id})
            return rss.fetch_one(ONE_API, params, _rss_one, optional=True)
        except rss.ApiMissing:
            log.warning("%s is unknown upstream; finding pickup locations by paging %s",
                        ONE_API, LIST_API)
            services.single_location_api = False
    return scan(str(location_id))


def scan(location_id: str) -> dict:
    """Page through all locations for ``location_id``; 404 when no page holds it."""
    for page in range(1, MAX_SCAN_PAGES + 1):
        loaded = rss.fetch(LIST_API, {"page": page, "pageSize": MAX_PAGE_SIZE}, _rss_page)
        for location in loaded["data"]:
            if location["id"] == location_id:
                return location
        total = loaded.get("total")
        if len(loaded["data"]) < MAX_PAGE_SIZE or (total is not None
                                                   and page * MAX_PAGE_SIZE >= total):
            break
    raise errors.not_found()

