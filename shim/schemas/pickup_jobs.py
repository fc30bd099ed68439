"""Pickup jobs: ``GET /v1/pickup-jobs[/{id}]`` <-> ``/rss/pickup-jobs/get`` and ``pickup-job/get``.

Range rules of the legacy API: ``from`` is required; ``till`` defaults to ``from`` + 31 days
(the widest range allowed, so leaving it out never makes a valid request invalid); a range
over 31 days, ``from`` after ``till`` or ``from`` older than 180 days is a 422.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields, validate

from shim.schemas.common import (
    LegacyInputSchema,
    LegacyOptionalsSchema,
    LegacyOutputSchema,
    RssSchema,
)
from shim.schemas.fields import (
    INT64_MAX,
    CommaList,
    DigitsId,
    LooseInteger,
    LooseNestedList,
    LooseOptionalString,
    LooseString,
    StrictInteger,
)

JOB_STATUSES = ("pending", "arrived", "pickedup", "cancelled", "failed")
DAY_MS = 86_400_000
MAX_RANGE_MS = 31 * DAY_MS
MAX_AGE_MS = 180 * DAY_MS


class RangeError(ValueError):
    """Raised when a pickup-job range is well-formed but not servable (legacy 422)."""


class LegacyPickupJobsQuerySchema(LegacyInputSchema):
    """Query of ``GET /v1/pickup-jobs``."""

    from_ = StrictInteger(minimum=0, maximum=INT64_MAX, required=True, data_key="from",
                          metadata={"description": "Start of the range, epoch milliseconds; "
                                                   "at most 180 days ago (else 422)."})
    till = StrictInteger(minimum=0, maximum=INT64_MAX, metadata={
        "description": "End of the range, epoch milliseconds; at most 31 days after `from` "
                       "and not before it (else 422). Default: `from` + 31 days."})
    statuses = CommaList(fields.String(validate=validate.OneOf(JOB_STATUSES)), metadata={
        "description": "Only jobs in one of these statuses (comma-separated)."})


def resolve_range(query: dict[str, Any], now_ms: int) -> tuple[int, int]:
    """Return (from, till) with the default ``till`` applied, or raise ``RangeError``."""
    start = query["from_"]
    end = query.get("till", min(start + MAX_RANGE_MS, INT64_MAX))  # never past int64
    if start > end:
        raise RangeError("'from' must not be later than 'till'")
    if end - start > MAX_RANGE_MS:
        raise RangeError("the range from 'from' to 'till' must not exceed 31 days")
    if start < now_ms - MAX_AGE_MS:
        raise RangeError("'from' must not be more than 180 days in the past")
    return start, end


def missing_numbers(job: Mapping[str, Any]) -> list[str]:
    """Return the required legacy integers a loaded platform job lacks (empty: servable).

    The platform may send ``scheduledAt`` or a shipment's ``qty`` as null or leave it out;
    the legacy PickupJob requires both as integers, and no value can be made up for them.
    """
    missing = []
    if job.get("scheduled_at") is None:
        missing.append("scheduledAt")
    if any(shipment.get("qty") is None for item in job.get("items") or ()
           for shipment in item.get("shipments_info") or ()):
        missing.append("items.shipmentsInfo.qty")
    return missing


class LegacyPickupJobPathSchema(LegacyInputSchema):
    """The id in ``/v1/pickup-jobs/{pickupJobId}``."""

    pickup_job_id = DigitsId(required=True, data_key="pickupJobId")


class RssPickupJobsParamsSchema(Schema):
    """Business parameters of ``/rss/pickup-jobs/get``."""

    from_ = fields.Integer(data_key="from")
    till = fields.Integer()
    statuses = fields.Function(lambda params: ",".join(params.get("statuses") or []) or None)


class RssPickupJobParamsSchema(Schema):
    """Business parameters of ``/rss/pickup-job/get``."""

    pickup_job_id = fields.Integer(data_key="pickupJobId")


class RssShipmentSchema(RssSchema):
    """One shipment of a pickup item."""

    qty = LooseInteger(allow_none=True)
    order_id = LooseString(data_key="orderId")


class RssPickupItemSchema(RssSchema):
    """One item of a pickup job as the platform sends it."""

    name = LooseString()
    sku = LooseString()
    qty = LooseInteger(load_default=0)
    rpc = LooseInteger(required=True)
    qty_fulfilled = LooseInteger(allow_none=True, data_key="qtyFulfilled")
    size = LooseOptionalString()
    vpc = LooseOptionalString()
    image_url = LooseOptionalString(data_key="imageUrl")
    minimum_expiry_date = fields.Raw(allow_none=True, data_key="minimumExpiryDate")
    shipments_info = fields.Nested(RssShipmentSchema, many=True, allow_none=True,
                                   data_key="shipmentsInfo")


class RssPickupJobSchema(RssSchema):
    """One pickup job as the platform sends it."""

    id = LooseInteger(required=True)
    status = LooseString()
    category = LooseString()
    scheduled_at = LooseInteger(allow_none=True, data_key="scheduledAt")
    qty_count = LooseInteger(allow_none=True, data_key="qtyCount")
    qty_fulfilled_count = LooseInteger(allow_none=True, data_key="qtyFulfilledCount")
    items = LooseNestedList(RssPickupItemSchema)
    picked_at = LooseInteger(allow_none=True, data_key="pickedAt")
    amendability_cut_off_date = LooseInteger(allow_none=True, data_key="amendabilityCutOffDate")
    preferred_pickup_time = LooseOptionalString(data_key="preferredPickupTime")


class RssPickupJobResultSchema(RssSchema):
    """The ``result`` of ``/rss/pickup-job/get``."""

    data = fields.Nested(RssPickupJobSchema, allow_none=True)


class RssPickupJobListSchema(RssSchema):
    """The ``result`` of ``/rss/pickup-jobs/get``."""

    data = LooseNestedList(RssPickupJobSchema)


class LegacyShipmentSchema(LegacyOutputSchema):
    """The legacy shipmentsInfo entry."""

    qty = fields.Integer()
    order_id = fields.String(data_key="orderId")


class LegacyPickupItemSchema(LegacyOptionalsSchema):
    """The legacy PickupItem."""

    OPTIONAL = ("qtyFulfilled", "size", "vpc", "imageUrl", "minimumExpiryDate", "shipmentsInfo")

    name = fields.String()
    sku = fields.String()
    qty = fields.Integer()
    rpc = fields.Integer()
    qty_fulfilled = fields.Integer(data_key="qtyFulfilled")
    size = fields.String()
    vpc = fields.String()
    image_url = fields.String(data_key="imageUrl")
    minimum_expiry_date = fields.Raw(data_key="minimumExpiryDate", metadata={
        "description": "Epoch milliseconds, passed through as the platform sends it."})
    shipments_info = fields.Nested(LegacyShipmentSchema, many=True, data_key="shipmentsInfo")


class LegacyPickupJobSchema(LegacyOptionalsSchema):
    """The legacy PickupJob; the two counts are the sums over items when the platform omits them."""

    OPTIONAL = ("pickedAt", "amendabilityCutOffDate", "preferredPickupTime")

    id = fields.Integer()
    status = fields.String()
    category = fields.String()
    scheduled_at = fields.Integer(data_key="scheduledAt")
    qty_count = fields.Function(
        lambda job: job["qty_count"] if job.get("qty_count") is not None
        else sum(item["qty"] for item in job["items"]), data_key="qtyCount",
        metadata={"type": "integer", "description": "Sum of the items' qty."})
    qty_fulfilled_count = fields.Function(
        lambda job: job["qty_fulfilled_count"] if job.get("qty_fulfilled_count") is not None
        else sum(item.get("qty_fulfilled") or 0 for item in job["items"]),
        data_key="qtyFulfilledCount",
        metadata={"type": "integer", "description": "Sum of the items' qtyFulfilled."})
    items = fields.Nested(LegacyPickupItemSchema, many=True)
    picked_at = fields.Integer(data_key="pickedAt")
    amendability_cut_off_date = fields.Integer(data_key="amendabilityCutOffDate")
    preferred_pickup_time = fields.String(data_key="preferredPickupTime")


# The legacy docs' example (legacy reference, section 6), verbatim: for the OpenAPI document.
EXAMPLE_PICKUP_JOB = {
    "id": 123, "status": "pickedup", "category": "Dry", "scheduledAt": 1684135189000,
    "qtyCount": 11, "qtyFulfilledCount": 10,
    "items": [{
        "name": "Salmon", "sku": "19739731408", "qty": 11, "rpc": 123456, "qtyFulfilled": 10,
        "size": "2.5 kg", "vpc": "19739731408",
        "imageUrl": "http://media.redmart.com/newmedia/1600x/i/m/xxx.jpg",
        "minimumExpiryDate": 1770357600000,
        "shipmentsInfo": [{"qty": 5, "orderId": "49e74qjnkprp1to4"},
                          {"qty": 6, "orderId": "49e74qjn1prp1to4"}],
    }],
    "pickedAt": 1684136189000, "amendabilityCutOffDate": 1684135989000,
    "preferredPickupTime": "13:00-17:00",
}
