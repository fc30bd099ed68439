"""Products: ``GET /v1/products[/{productId}]`` <-> ``/rss/products/get``, ``/rss/product/get``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load

from shim.schemas.common import (
    LegacyInputSchema,
    LegacyOutputSchema,
    LegacyPageQuerySchema,
    RssPageParamsSchema,
    RssSchema,
    legacy_page_schema,
    rss_page_schema,
)
from shim.schemas.fields import (
    CommaList,
    DigitsId,
    LeanField,
    LooseInteger,
    LooseList,
    LooseNestedList,
    LooseString,
)
from shim.schemas.straight import straight, straight_result

PRODUCT_STATUSES = ("Enabled", "Disabled", "Discontinued")


class LegacyProductsQuerySchema(LegacyPageQuerySchema):
    """Query of ``GET /v1/products``; the location filter is accepted under both names."""

    pickup_locations = CommaList(DigitsId(), data_key="pickupLocations", metadata={
        "description": "Only products at one of these pickup locations (comma-separated ids)."})
    pickup_location_ids = CommaList(DigitsId(), data_key="pickupLocationIds", metadata={
        "description": "Another name of `pickupLocations` (the docs' own example); both "
                       "lists are merged."})

    @post_load
    def merge_location_filters(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        merged = data.pop("pickup_locations", []) + data.pop("pickup_location_ids", [])
        data["pickup_location_ids"] = list(dict.fromkeys(merged))  # keep order, drop repeats
        return data


class LegacyProductPathSchema(LegacyInputSchema):
    """The RPC in ``/v1/products/{productId}``."""

    product_id = DigitsId(required=True, data_key="productId")


class RssProductsParamsSchema(RssPageParamsSchema):
    """Business parameters of ``/rss/products/get``."""

    pickup_location_ids = fields.List(fields.Integer(), data_key="pickupLocationIds")


class RssProductParamsSchema(Schema):
    """Business parameters of ``/rss/product/get``."""

    product_id = fields.Integer(data_key="productId")


class ProductStatusField(LeanField[dict[str, str]]):
    """``status`` as ``{"type": ...}``; some platform builds send the bare string."""

    LEGACY_SHAPE = ("type",)  # it loads exactly the legacy status object (shim.schemas.straight)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> dict[str, str]:
        if isinstance(value, dict):
            value = value.get("type")
        if not isinstance(value, str):
            raise ValidationError("status has no type")
        return {"type": value}


class RssLocationRefSchema(RssSchema):
    """A reference to a pickup location inside a product."""

    id = LooseString(required=True)


class RssProductSchema(RssSchema):
    """One product as the platform sends it."""

    rpc = LooseInteger(required=True)
    product_code = LooseString(data_key="productCode")
    title = LooseString()
    barcodes = LooseList(LooseString())
    status = ProductStatusField(required=True)
    pickup_locations = LooseNestedList(RssLocationRefSchema, data_key="pickupLocations")


class RssProductResultSchema(RssSchema):
    """The ``result`` of ``/rss/product/get``."""

    data = fields.Nested(RssProductSchema, allow_none=True)


class LegacyStatusSchema(LegacyOutputSchema):
    """The legacy product status object."""

    type = fields.String()


class LegacyLocationRefSchema(LegacyOutputSchema):
    """The legacy ``{"id"}`` reference to a pickup location."""

    id = fields.String()


class LegacyProductSchema(LegacyOutputSchema):
    """The legacy Product."""

    rpc = fields.Integer()
    product_code = fields.String(data_key="productCode")
    title = fields.String()
    barcodes = fields.List(fields.String())
    status = fields.Nested(LegacyStatusSchema)
    pickup_locations = fields.Nested(LegacyLocationRefSchema, many=True,
                                     data_key="pickupLocations")


RssProductPageSchema = rss_page_schema(RssProductSchema)
LegacyProductPageSchema = legacy_page_schema(LegacyProductSchema)

# What the views load with: the pairs above, derived to load straight into legacy JSON.
RssProductAsLegacySchema = straight(RssProductSchema, LegacyProductSchema)
RssProductPageAsLegacySchema = rss_page_schema(RssProductAsLegacySchema)
RssProductResultAsLegacySchema = straight_result(RssProductAsLegacySchema)


# The legacy docs' example (legacy reference, section 6), verbatim: for the OpenAPI document.
EXAMPLE_PRODUCT = {"rpc": 100150, "productCode": "abc-merch-specific-choc-cereals-code",
                   "title": "Chocolate Cereals", "barcodes": ["111122223333"],
                   "status": {"type": "Enabled"}, "pickupLocations": [{"id": "23789"}]}
