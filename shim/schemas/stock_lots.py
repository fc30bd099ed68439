"""Stock lots: ``/v1/products/{rpc}/pickup-locations/{id}/stock-lots[/0]`` <-> ``/rss/stockLot*``.

The legacy API only ever had lot ``"0"``; its ETag was the quoted quantity at the location.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_load

from shim.schemas.common import LegacyBodySchema, LegacyInputSchema, LegacyOutputSchema, RssSchema
from shim.schemas.fields import INT32_MAX, DigitsId, LooseInteger, LooseNestedList, StrictInteger

STOCK_LOT_ID = "0"


class LegacyStockLotPathSchema(LegacyInputSchema):
    """The product and location ids in a stock-lot path."""

    product_id = DigitsId(required=True, data_key="productId")
    pickup_location_id = DigitsId(required=True, data_key="pickupLocationId")


class LegacyStockLotUpdateSchema(LegacyBodySchema):
    """The merge-patch body of ``PATCH .../stock-lots/0``: a number or numeric text."""

    quantity_at_pickup_location = StrictInteger(minimum=0, maximum=INT32_MAX, required=True,
                                                data_key="quantityAtPickupLocation")


class RssStockLotParamsSchema(Schema):
    """Business parameters of ``/rss/stockLots/get`` and ``/rss/stockLot/get``."""

    product_id = fields.Integer(data_key="productId")
    pickup_location_id = fields.Integer(data_key="pickupLocationId")
    stock_lot_id = fields.String(data_key="stockLotId")


class RssStockLotUpdateParamsSchema(RssStockLotParamsSchema):
    """Business parameters of ``/rss/stockLot/update``; the DTO travels as compact JSON."""

    stock_lot_update = fields.Dict(data_key="stockLotUpdateDTO")


class RssStockLotSchema(RssSchema):
    """One stock lot as the platform sends it."""

    id = fields.Raw(allow_none=True)  # a string or a number upstream; always "0" on the legacy side
    quantity_at_pickup_location = LooseInteger(required=True, data_key="quantityAtPickupLocation")
    quantity_scheduled_for_pickup = LooseInteger(required=True,
                                                 data_key="quantityScheduledForPickup")
    quantity_available_for_sale = LooseInteger(allow_none=True,
                                               data_key="quantityAvailableForSale")

    @post_load
    def complete(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["id"] = STOCK_LOT_ID
        if data.get("quantity_available_for_sale") is None:
            data["quantity_available_for_sale"] = (data["quantity_at_pickup_location"]
                                                   - data["quantity_scheduled_for_pickup"])
        return data


class RssStockLotResultSchema(RssSchema):
    """The ``result`` of ``/rss/stockLot/get`` and ``/rss/stockLot/update``."""

    data = fields.Nested(RssStockLotSchema, allow_none=True)


class RssStockLotListSchema(RssSchema):
    """The ``result`` of ``/rss/stockLots/get``."""

    data = LooseNestedList(RssStockLotSchema)


class LegacyStockLotSchema(LegacyOutputSchema):
    """The legacy StockLot."""

    id = fields.String()
    quantity_at_pickup_location = fields.Integer(data_key="quantityAtPickupLocation")
    quantity_scheduled_for_pickup = fields.Integer(data_key="quantityScheduledForPickup")
    quantity_available_for_sale = fields.Integer(data_key="quantityAvailableForSale")


def etag_of(stock_lot: dict[str, Any]) -> str:
    """Return the legacy ETag value (unquoted) of a loaded stock lot: its quantity."""
    return str(stock_lot["quantity_at_pickup_location"])


# The legacy docs' example (legacy reference, section 6), verbatim: for the OpenAPI document.
EXAMPLE_STOCK_LOT = {"id": "0", "quantityAtPickupLocation": 10,
                     "quantityScheduledForPickup": 2, "quantityAvailableForSale": 8}
