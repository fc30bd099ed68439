"""Stock lots: reads, and the PATCH whose read-check-write ``shim.stock_update`` does."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify, request

from shim import errors, scopes
from shim.legacy import rss
from shim.legacy.inputs import load_json_body, load_path
from shim.legacy.routes import Doc, Route, RouteBlueprint
from shim.schemas.common import dump_many
from shim.schemas.stock_lots import (
    EXAMPLE_STOCK_LOT,
    STOCK_LOT_ID,
    LegacyStockLotPathSchema,
    LegacyStockLotSchema,
    LegacyStockLotUpdateSchema,
    RssStockLotListSchema,
    RssStockLotParamsSchema,
    RssStockLotResultSchema,
    RssStockLotUpdateParamsSchema,
    etag_of,
)
from shim.services import get_services
from shim.stock_update import StockLotUpdate, parse_if_match
from shim.upstream import BusinessError

bp = RouteBlueprint("stock_lots", __name__)

LOTS = "/v1/products/<product_id>/pickup-locations/<pickup_location_id>/stock-lots"
# Inputs the views check by hand, for the OpenAPI document.
STOCK_LOT_PARAM: dict[str, Any] = {"in": "path", "name": "stockLotId", "required": True,
                   "description": f'Always `"{STOCK_LOT_ID}"`: any other lot is a 404.',
                   "schema": {"type": "string", "enum": [STOCK_LOT_ID]}}
IF_MATCH_PARAM: dict[str, Any] = {"in": "header", "name": "If-Match", "required": True,
                  "description": "The ETag of a previous read (`\"10\"`), or `*`. Missing: 400; "
                                 "not the current ETag: 412.",
                  "schema": {"type": "string"}, "example": '"10"'}

_path, _params, _update_params = (LegacyStockLotPathSchema(), RssStockLotParamsSchema(),
                                  RssStockLotUpdateParamsSchema())
_update = LegacyStockLotUpdateSchema()
_rss_list, _rss_one, _legacy = (RssStockLotListSchema(), RssStockLotResultSchema(),
                                LegacyStockLotSchema())


@bp.declare(Route(
    method="GET", rule=LOTS, scope=scopes.READ_STOCK_LOT, fixtures="stock-lots-list",
    path=LegacyStockLotPathSchema, answer=LegacyStockLotSchema, many=True, statuses=(400, 404),
    doc=Doc(answer="The product's stock lots at the location (a bare array).",
            example=[EXAMPLE_STOCK_LOT],
            notes="Today every product has one lot at a location, with id `\"0\"`.")))
def list_stock_lots(product_id: str, pickup_location_id: str) -> list[dict[str, Any]]:
    """Return the stock lots of a product at a location, as a bare JSON array."""
    path = load_lot_path(product_id, pickup_location_id)
    loaded = rss.fetch("/rss/stockLots/get", _params.dump(path), _rss_list)
    return dump_many(_legacy, loaded["data"])


@bp.declare(Route(
    method="GET", rule=LOTS + "/<stock_lot_id>", scope=scopes.READ_STOCK_LOT,
    fixtures="stock-lot-get", path=LegacyStockLotPathSchema, answer=LegacyStockLotSchema,
    etag=True, statuses=(400, 404),
    doc=Doc(answer="The stock lot, with its ETag.", example=EXAMPLE_STOCK_LOT,
            parameters=(STOCK_LOT_PARAM,),
            examples={404: {"no such lot": errors.not_found().body()}},
            notes="The `ETag` is the quantity at the location, quoted; send it back in "
                  "`If-Match` to update.")))
def get_stock_lot(product_id: str, pickup_location_id: str, stock_lot_id: str) -> Response:
    """Return stock lot "0" with its ETag."""
    path = load_lot_path(product_id, pickup_location_id, stock_lot_id)
    return with_etag(read(path))


@bp.declare(Route(
    method="PATCH", rule=LOTS + "/<stock_lot_id>", scope=scopes.WRITE_STOCK_LOT,
    fixtures="stock-lot-patch", path=LegacyStockLotPathSchema, body=LegacyStockLotUpdateSchema,
    answer=LegacyStockLotSchema, etag=True, statuses=(400, 404, 409, 412, 413, 415),
    doc=Doc(answer="The updated stock lot (available-for-sale recomputed), with its new ETag.",
            example={**EXAMPLE_STOCK_LOT, "quantityAtPickupLocation": 20,
                     "quantityAvailableForSale": 18},
            parameters=(STOCK_LOT_PARAM, IF_MATCH_PARAM),
            body_example={"quantityAtPickupLocation": 20},
            notes="Send `If-Match` with the ETag of a read: a stale one is a 412. A quantity "
                  "below the quantity scheduled for pickup is a 409. The number may be sent "
                  "as JSON text (`\"20\"`), as real clients did; any other member is a 400.",
            examples={503: {"lock": {"title": "Service Unavailable",
                                     "detail": errors.LOCK_BUSY},
                            "lock queue": {"title": "Service Unavailable",
                                           "detail": errors.LOCK_QUEUE_FULL}},
                      400: {"no If-Match": {"title": "Bad Request",
                                            "detail": "the If-Match header is required: "
                                                      "send the ETag of a read"},
                            "bad quantity": {"title": "Bad Request",
                                             "detail": "quantityAtPickupLocation: must be "
                                                       "between 0 and 2147483647"}}})))
def update_stock_lot(product_id: str, pickup_location_id: str,
                     stock_lot_id: str) -> Response:
    """Set the quantity at the location if If-Match still holds and pickups stay covered."""
    path = load_lot_path(product_id, pickup_location_id, stock_lot_id)
    if_match = parse_if_match(request.headers.get("If-Match"))
    quantity = load_json_body(_update)["quantity_at_pickup_location"]
    return with_etag(update_of(path).apply(quantity, if_match))


def update_of(path: dict[str, Any]) -> StockLotUpdate:
    """Return the update of the caller's lot at ``path``, with its lock and platform calls."""
    services = get_services()
    seller = services.store.get_seller(g.caller.seller)
    assert seller is not None, "an authenticated caller's seller exists"
    key = ("stock-lot", seller.store_id, path["product_id"], path["pickup_location_id"])
    return StockLotUpdate(
        read=lambda: read(path), write=lambda quantity: write(path, quantity),
        hold=lambda: services.locks.hold(key, timeout=services.settings.lock_timeout_s,
                                         waiters=services.settings.lot_queue),
        read_timeout_s=services.settings.read_timeout_s)


def load_lot_path(product_id: str, pickup_location_id: str,
                  stock_lot_id: str | None = None) -> dict[str, Any]:
    """Return the validated path; only lot "0" exists, so any other lot id is a 404."""
    path = load_path(_path, {"productId": product_id, "pickupLocationId": pickup_location_id})
    if stock_lot_id is not None:
        if stock_lot_id != STOCK_LOT_ID:
            raise errors.not_found()
        path["stock_lot_id"] = STOCK_LOT_ID
    return path


def read(path: dict[str, Any]) -> dict[str, Any]:
    """Return the current stock lot from the platform."""
    return rss.fetch_one("/rss/stockLot/get", _params.dump(path), _rss_one)


def write(path: dict[str, Any], quantity: int) -> dict[str, Any]:
    """Send the update; return the lot the platform answered (``OutcomeUnknown`` if none).

    A refusal by the service passes as the ``BusinessError`` it is: the update tells a 409
    from other refusals.
    """
    change = {**path, "stock_lot_update": {"quantityAtPickupLocation": quantity}}
    return rss.fetch_one("/rss/stockLot/update", _update_params.dump(change), _rss_one,
                         method="POST", passing=(BusinessError,))


def with_etag(stock_lot: dict[str, Any]) -> Response:
    """Return the legacy StockLot response carrying its ETag."""
    response = jsonify(_legacy.dump(stock_lot))
    response.set_etag(etag_of(stock_lot))
    return response
