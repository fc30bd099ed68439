"""Pickup locations: ``GET /v1/pickup-locations[/{id}]`` <-> ``/rss/pickupLocation(s)/get``."""

from __future__ import annotations

from marshmallow import Schema, fields

from shim.schemas.common import (
    LegacyInputSchema,
    LegacyOutputSchema,
    RssSchema,
    legacy_page_schema,
    rss_page_schema,
)
from shim.schemas.fields import DigitsId, LooseString
from shim.schemas.straight import straight, straight_result


class LegacyPickupLocationPathSchema(LegacyInputSchema):
    """The id in ``/v1/pickup-locations/{pickupLocationId}``."""

    pickup_location_id = DigitsId(required=True, data_key="pickupLocationId")


class RssPickupLocationParamsSchema(Schema):
    """Business parameters of ``/rss/pickupLocation/get``."""

    pickup_location_id = fields.Integer(data_key="pickupLocationId")


class RssPickupLocationSchema(RssSchema):
    """One pickup location as the platform sends it."""

    id = LooseString(required=True)
    name = LooseString()
    address_line1 = LooseString(data_key="addressLine1")
    address_line2 = LooseString(data_key="addressLine2")
    city = LooseString()
    postal_code = LooseString(data_key="postalCode")
    country = LooseString()


class RssPickupLocationResultSchema(RssSchema):
    """The ``result`` of ``/rss/pickupLocation/get``."""

    data = fields.Nested(RssPickupLocationSchema, allow_none=True)


class LegacyPickupLocationSchema(LegacyOutputSchema):
    """The legacy PickupLocation: every member a string."""

    id = fields.String()
    name = fields.String()
    address_line1 = fields.String(data_key="addressLine1")
    address_line2 = fields.String(data_key="addressLine2")
    city = fields.String()
    postal_code = fields.String(data_key="postalCode")
    country = fields.String()


RssPickupLocationPageSchema = rss_page_schema(RssPickupLocationSchema)
LegacyPickupLocationPageSchema = legacy_page_schema(LegacyPickupLocationSchema)

# What the views load with: the pairs above, derived to load straight into legacy JSON.
RssPickupLocationAsLegacySchema = straight(RssPickupLocationSchema, LegacyPickupLocationSchema)
RssPickupLocationPageAsLegacySchema = rss_page_schema(RssPickupLocationAsLegacySchema)
RssPickupLocationResultAsLegacySchema = straight_result(RssPickupLocationAsLegacySchema)

# The legacy docs' example (legacy reference, section 6), verbatim: for the OpenAPI document.
EXAMPLE_LOCATION = {"id": "23789", "name": "ABC Merchant", "addressLine1": "1 Main Street",
                    "addressLine2": "#02-15", "city": "Singapore", "postalCode": "123456",
                    "country": "Singapore"}
