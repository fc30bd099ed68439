"""Stock lots, with the concurrency control the new API lacks.

The platform has no ETag, If-Match or "below scheduled" check, so the shim supplies them:
the ETag is the quoted quantity at the location (the legacy docs' ``If-Match: "10"``), and a
PATCH holds a per-lot lock across read, checks and write, so two clients holding the same
ETag cannot both succeed through this process.

An update the platform does not confirm (no answer, a garbled one, a backend failure) is
settled under the same lock by reading the lot again (``settle``). A PATCH therefore answers
200 only for an update the platform applied, a definitive failure (412, 409, 429, ...) only
for one it did not and never will, and otherwise the explicit "outcome unknown" 503.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, g, jsonify, request

from shim import errors, scopes
from shim.legacy import rss
from shim.legacy.auth import requires
from shim.legacy.inputs import load_json_body, load_path
from shim.schemas.stock_lots import (
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
from shim.store.errors import StoreUnavailable
from shim.upstream import BusinessError

log = logging.getLogger(__name__)
bp = Blueprint("stock_lots", __name__)

# RFC 9110 entity tags ("10", W/"10") or "*"; bare digits too, which some clients sent.
_ETAG = r'(?:W/)?"[\x21\x23-\x7e]*"|[0-9]+'
IF_MATCH = re.compile(rf"\*|(?:{_ETAG})(?:[ \t]*,[ \t]*(?:{_ETAG}))*")

LOTS = "/v1/products/<product_id>/pickup-locations/<pickup_location_id>/stock-lots"

_path, _params, _update_params = (LegacyStockLotPathSchema(), RssStockLotParamsSchema(),
                                  RssStockLotUpdateParamsSchema())
_update = LegacyStockLotUpdateSchema()
_rss_list, _rss_one, _legacy = (RssStockLotListSchema(), RssStockLotResultSchema(),
                                LegacyStockLotSchema())


@bp.get(LOTS)
@requires(scopes.READ_STOCK_LOT)
def list_stock_lots(product_id, pickup_location_id):
    """Return the stock lots of a product at a location, as a bare JSON array."""
    path = load_lot_path(product_id, pickup_location_id)
    loaded = rss.fetch("/rss/stockLots/get", _params.dump(path), _rss_list)
    return _legacy.dump(loaded["data"], many=True)


@bp.get(LOTS + "/<stock_lot_id>")
@requires(scopes.READ_STOCK_LOT)
def get_stock_lot(product_id, pickup_location_id, stock_lot_id):
    """Return stock lot "0" with its ETag."""
    path = load_lot_path(product_id, pickup_location_id, stock_lot_id)
    return with_etag(read(path))


@bp.patch(LOTS + "/<stock_lot_id>")
@requires(scopes.WRITE_STOCK_LOT)
def update_stock_lot(product_id, pickup_location_id, stock_lot_id):
    """Set the quantity at the location if If-Match still holds and pickups stay covered."""
    path = load_lot_path(product_id, pickup_location_id, stock_lot_id)
    if "If-Match" not in request.headers:
        raise errors.bad_request("the If-Match header is required: send the ETag of a read")
    if_match = request.headers["If-Match"].strip(" \t")
    if if_match and not IF_MATCH.fullmatch(if_match):  # empty: a list that matches nothing
        raise errors.bad_request('If-Match must be "*" or a list of entity tags, like "10"')
    quantity = load_json_body(_update)["quantity_at_pickup_location"]
    services = get_services()
    store_id = services.store.get_seller(g.caller.seller).store_id
    key = ("stock-lot", store_id, path["product_id"], path["pickup_location_id"])
    with services.locks.hold(key, timeout=services.settings.lock_timeout_s):
        started = time.monotonic()
        current = read(path)
        if not if_match_holds(etag_of(current)):
            raise errors.Problem(412, errors.PRECONDITION_TITLE)
        if quantity < current["quantity_scheduled_for_pickup"]:
            raise errors.Problem(409, errors.CONFLICT_TITLE)
        try:
            updated = write(path, quantity)
        except errors.OutcomeUnknown as unknown:
            updated = settle(path, quantity, current, unknown, started)
    return with_etag(updated)


def load_lot_path(product_id: str, pickup_location_id: str, stock_lot_id: str | None = None):
    """Return the validated path; only lot "0" exists, so any other lot id is a 404."""
    path = load_path(_path, {"productId": product_id, "pickupLocationId": pickup_location_id})
    if stock_lot_id is not None:
        if stock_lot_id != STOCK_LOT_ID:
            raise errors.not_found()
        path["stock_lot_id"] = STOCK_LOT_ID
    return path


def read(path: dict) -> dict:
    """Return the current stock lot from the platform."""
    return rss.fetch_one("/rss/stockLot/get", _params.dump(path), _rss_one)


def write(path: dict, quantity: int) -> dict:
    """Send the update; return the lot the platform answered (``OutcomeUnknown`` if none)."""
    change = {**path, "stock_lot_update": {"quantityAtPickupLocation": quantity}}
    try:
        return rss.fetch_one("/rss/stockLot/update", _update_params.dump(change), _rss_one,
                             method="POST", passing=(BusinessError,))
    except BusinessError as refusal:
        recheck(path, quantity)
        raise errors.from_upstream(refusal) from None


def settle(path: dict, quantity: int, before: dict, unknown: errors.OutcomeUnknown,
           started: float) -> dict:
    """Return the lot if an unconfirmed update was applied, or send it once more; else raise.

    Runs under the lot's lock, so only an outside writer can have changed the lot since
    ``before`` was read. The re-read decides:
    - the requested quantity: applied, or (when ``before`` showed it already) the lot is in
      the state asked for whatever became of the attempt; the update sets, it does not add;
      so the 200;
    - ``before``'s quantity: not applied (yet). The If-Match still holds, so the update is
      what the client asked for and is sent once more, unless the first attempt timed out
      (the platform is slow, and a late write can still land: do not pile on) or the PATCH
      has already used a read deadline (so it stays within about three of them);
    - anything else, or no answer: the outcome stays open.
    Once an attempt's outcome is open the PATCH answers 200 or ``OutcomeUnknown``, never a
    definitive failure: that first attempt may still be applied after any later answer.
    """
    was = before["quantity_at_pickup_location"]
    now = reread(path)
    if now is not None and now["quantity_at_pickup_location"] == quantity:
        log.warning("unconfirmed update of a stock lot: the re-read shows the quantity asked for")
        return now
    resend = (now is not None and now["quantity_at_pickup_location"] == was
              and quantity >= now["quantity_scheduled_for_pickup"] and not unknown.timed_out
              and time.monotonic() - started < get_services().settings.read_timeout_s)
    if not resend:
        log.warning("outcome of a stock lot update unknown: %s", "the re-read failed"
                    if now is None else "the lot changed" if now["quantity_at_pickup_location"]
                    != was else "not sent again (slow platform, or pickups booked)")
        raise unknown
    log.warning("unconfirmed update of a stock lot was not applied; sending it once more")
    try:
        return write(path, quantity)
    except Exception as failure:  # whatever it is, the first attempt's fate is still open
        if not isinstance(failure, StoreUnavailable) and not errors.answers(failure):
            log.exception("second attempt of a stock lot update failed unexpectedly")
        now = reread(path)
        if now is not None and now["quantity_at_pickup_location"] == quantity:
            return now
        raise errors.OutcomeUnknown() from None


def reread(path: dict) -> dict | None:
    """Return the current lot, or ``None`` if it cannot be read now."""
    try:
        return read(path)
    except Exception as failure:
        if isinstance(failure, StoreUnavailable) or errors.answers(failure):
            return None
        raise


def recheck(path: dict, quantity: int) -> None:
    """After the platform refused an update, raise the 409 if pickups were booked meanwhile.

    The lock only orders writers going through this process; the warehouse can raise
    ``quantityScheduledForPickup`` between the read and the write.
    """
    if quantity < read(path)["quantity_scheduled_for_pickup"]:
        raise errors.Problem(409, errors.CONFLICT_TITLE)


def if_match_holds(current: str) -> bool:
    """Return whether the request's If-Match names the current ETag (strong comparison)."""
    if_match = request.if_match
    return if_match.star_tag or if_match.contains(current)


def with_etag(stock_lot: dict):
    """Return the legacy StockLot response carrying its ETag."""
    response = jsonify(_legacy.dump(stock_lot))
    response.set_etag(etag_of(stock_lot))
    return response
