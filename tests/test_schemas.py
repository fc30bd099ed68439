"""The schemas alone: strict legacy input, tolerant RSS answers (reference 7), legacy output."""

from __future__ import annotations

import math

import pytest
from legacy_docs import DOC_JOB, DOC_LOCATION, DOC_PRODUCT
from marshmallow import ValidationError

from shim.schemas.common import LegacyPageQuerySchema, page_of
from shim.schemas.fields import (
    INT32_MAX,
    INT64_MAX,
    CommaList,
    DigitsId,
    LooseInteger,
    LooseList,
    LooseOptionalString,
    LooseString,
    StrictInteger,
    parse_ascii_int,
)
from shim.schemas.pickup_jobs import (
    DAY_MS,
    LegacyPickupJobPathSchema,
    LegacyPickupJobSchema,
    LegacyPickupJobsQuerySchema,
    RangeError,
    RssPickupJobListSchema,
    RssPickupJobResultSchema,
    RssPickupJobsParamsSchema,
    resolve_range,
)
from shim.schemas.pickup_locations import (
    LegacyPickupLocationPageSchema,
    LegacyPickupLocationPathSchema,
    LegacyPickupLocationSchema,
    RssPickupLocationPageSchema,
    RssPickupLocationResultSchema,
)
from shim.schemas.products import (
    LegacyProductPageSchema,
    LegacyProductSchema,
    LegacyProductsQuerySchema,
    RssProductPageSchema,
    RssProductResultSchema,
    RssProductSchema,
    RssProductsParamsSchema,
)
from shim.schemas.stock_lots import (
    LegacyStockLotPathSchema,
    LegacyStockLotSchema,
    LegacyStockLotUpdateSchema,
    RssStockLotListSchema,
    RssStockLotResultSchema,
    RssStockLotUpdateParamsSchema,
    etag_of,
)

NOW_MS = 1_750_000_000_000


# Strict fields for legacy input


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), ("0", 0), ("007", 7), ("-5", -5), (-5, -5), (INT32_MAX, INT32_MAX),
    (str(INT64_MAX), INT64_MAX), ("-" + "9" * 18, -int("9" * 18)),
])
def test_parse_ascii_int_accepts_ascii_digits_in_range(value, expected):
    assert parse_ascii_int(value, minimum=-INT64_MAX, maximum=INT64_MAX) == expected


@pytest.mark.parametrize("value", [
    True, False, None, 1.0, 1.5, math.nan, math.inf, "1.5", "1.0", "\u0663", "\uff11", "\u00b2",
    " 1", "1 ", "1\n", "+1", "", "-", "--1", "1e2", "0x10", "1_000", "3limit5", "1&a=2", "1\x00",
    [], {}, b"1",
])
def test_parse_ascii_int_refuses_everything_else(value):
    with pytest.raises(ValueError, match="must be an integer"):
        parse_ascii_int(value, minimum=-INT64_MAX, maximum=INT64_MAX)


@pytest.mark.parametrize(("value", "minimum", "maximum"), [
    ("0", 1, 10), ("11", 1, 10), (11, 1, 10), (str(INT64_MAX + 1), 0, INT64_MAX),
    ("9" * 20, 0, INT64_MAX), ("9" * 21, 0, INT64_MAX), ("9" * 5000, 0, INT64_MAX),
    (INT32_MAX + 1, 0, INT32_MAX), ("-1", 0, 10),
])
def test_parse_ascii_int_enforces_bounds(value, minimum, maximum):
    with pytest.raises(ValueError, match=f"between {minimum} and {maximum}"):
        parse_ascii_int(value, minimum=minimum, maximum=maximum)


def test_unsigned_parse_refuses_a_sign():
    assert parse_ascii_int("5", minimum=0, maximum=9, signed=False) == 5
    with pytest.raises(ValueError, match="integer"):
        parse_ascii_int("-0", minimum=0, maximum=9, signed=False)


def test_strict_integer_and_digits_id_fields():
    quantity = StrictInteger(minimum=0, maximum=INT32_MAX)
    assert quantity.deserialize("20") == 20
    assert quantity.deserialize(20) == 20
    for bad in ("5.5", 5.5, "-1", -1, INT32_MAX + 1, True, "\u0663"):
        with pytest.raises(ValidationError):
            quantity.deserialize(bad)
    with pytest.raises(ValidationError):
        quantity.deserialize(None)
    ident = DigitsId()
    assert ident.deserialize("0") == 0
    assert ident.deserialize(str(INT64_MAX)) == INT64_MAX
    for bad in ("-0", "-1", str(INT64_MAX + 1), "abc", " 1", ""):
        with pytest.raises(ValidationError):
            ident.deserialize(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("23789", [23789]), ("23789,23790", [23789, 23790]), (" 23789 , 23790 ", [23789, 23790]),
    ("", []), ("  ", []),
])
def test_comma_list_loads_each_item(text, expected):
    assert CommaList(DigitsId()).deserialize(text) == expected


@pytest.mark.parametrize("text", ["a", "1,,2", ",1", "1,", "1,a", "[1,2]", "1;2", "1 2"])
def test_comma_list_refuses_bad_items(text):
    with pytest.raises(ValidationError):
        CommaList(DigitsId()).deserialize(text)


# Legacy input schemas


def test_page_query_defaults_and_bounds():
    schema = LegacyPageQuerySchema()
    assert schema.load({}) == {"page": 1, "page_size": 50}
    assert schema.load({"page": "3", "pageSize": "100", "other": "x"}) == {
        "page": 3, "page_size": 100}
    for bad in ({"page": "0"}, {"pageSize": "0"}, {"pageSize": "101"}, {"page": "abc"},
                {"page": str(INT32_MAX + 1)}, {"pageSize": ""}):
        with pytest.raises(ValidationError):
            schema.load(bad)


def test_products_query_merges_both_filter_names_in_order():
    schema = LegacyProductsQuerySchema()
    assert schema.load({})["pickup_location_ids"] == []
    loaded = schema.load({"pickupLocations": "23790,23789", "pickupLocationIds": "23789,23791"})
    assert loaded["pickup_location_ids"] == [23790, 23789, 23791]
    assert RssProductsParamsSchema().dump(loaded) == {
        "page": 1, "pageSize": 50, "pickupLocationIds": [23790, 23789, 23791]}


def test_path_schemas_take_ascii_digits_only():
    assert LegacyPickupLocationPathSchema().load({"pickupLocationId": "23789"}) == {
        "pickup_location_id": 23789}
    assert LegacyPickupJobPathSchema().load({"pickupJobId": "123"}) == {"pickup_job_id": 123}
    assert LegacyStockLotPathSchema().load({"productId": "1", "pickupLocationId": "2"}) == {
        "product_id": 1, "pickup_location_id": 2}
    for schema, name in ((LegacyPickupLocationPathSchema(), "pickupLocationId"),
                         (LegacyPickupJobPathSchema(), "pickupJobId")):
        for bad in ("3limit5", "\u0663", "-1", "1 ", "99999999999999999999"):
            with pytest.raises(ValidationError):
                schema.load({name: bad})


def test_stock_lot_update_is_strict_about_members():
    schema = LegacyStockLotUpdateSchema()
    assert schema.load({"quantityAtPickupLocation": "20"}) == {"quantity_at_pickup_location": 20}
    for bad in ({}, {"quantityAtPickupLocation": 1, "id": "0"},
                {"quantityAtPickupLocation": None}, {"quantity_at_pickup_location": 1}):
        with pytest.raises(ValidationError):
            schema.load(bad)


def test_stock_lot_update_params_carry_the_dto():
    dumped = RssStockLotUpdateParamsSchema().dump({
        "product_id": 100150, "pickup_location_id": 23789, "stock_lot_id": "0",
        "stock_lot_update": {"quantityAtPickupLocation": 20}})
    assert dumped == {"productId": 100150, "pickupLocationId": 23789, "stockLotId": "0",
                      "stockLotUpdateDTO": {"quantityAtPickupLocation": 20}}


# Pickup-job ranges


def test_pickup_jobs_query_and_default_till():
    query = LegacyPickupJobsQuerySchema().load({"from": str(NOW_MS), "statuses": "pending"})
    assert query == {"from_": NOW_MS, "statuses": ["pending"]}
    assert resolve_range(query, NOW_MS) == (NOW_MS, NOW_MS + 31 * DAY_MS)
    for bad in ({}, {"from": "x"}, {"from": "-1"}, {"from": "1", "till": "1.5"},
                {"from": "1", "statuses": "Pending"}, {"from": "1", "statuses": "pending,"}):
        with pytest.raises(ValidationError):
            LegacyPickupJobsQuerySchema().load(bad)


@pytest.mark.parametrize(("start", "end", "problem"), [
    (NOW_MS, NOW_MS - 1, "later than"),
    (NOW_MS, NOW_MS + 31 * DAY_MS + 1, "31 days"),
    (NOW_MS - 180 * DAY_MS - 1, NOW_MS - 170 * DAY_MS, "180 days"),
])
def test_unservable_ranges(start, end, problem):
    with pytest.raises(RangeError, match=problem):
        resolve_range({"from_": start, "till": end}, NOW_MS)


@pytest.mark.parametrize(("start", "end"), [
    (NOW_MS, NOW_MS), (NOW_MS, NOW_MS + 31 * DAY_MS),
    (NOW_MS - 180 * DAY_MS, NOW_MS - 149 * DAY_MS),
])
def test_ranges_at_the_limits(start, end):
    assert resolve_range({"from_": start, "till": end}, NOW_MS) == (start, end)


def test_pickup_jobs_params_send_a_plain_comma_list_or_nothing():
    schema = RssPickupJobsParamsSchema()
    assert schema.dump({"from_": 1, "till": 2, "statuses": ["pending", "pickedup"]}) == {
        "from": 1, "till": 2, "statuses": "pending,pickedup"}
    assert schema.dump({"from_": 1, "till": 2, "statuses": []})["statuses"] is None
    assert schema.dump({"from_": 1, "till": 2, "statuses": None})["statuses"] is None


# Tolerant fields for RSS answers


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1), ("1", 1), (" 15 ", 15), ('"15"', 15), (10.0, 10), ("10.0", 10), ("-3", -3),
    ("1e3", 1000), (2**63 - 1, 2**63 - 1),
])
def test_loose_integer_accepts_the_variants(value, expected):
    assert LooseInteger().deserialize(value) == expected


@pytest.mark.parametrize("value", [True, "true", "abc", 1.5, "1.5", math.nan, math.inf, "nan",
                                   "inf", "", "1_000", "\u0663", "\uff11", [], {}])
def test_loose_integer_refuses_non_integers(value):
    with pytest.raises(ValidationError):
        LooseInteger().deserialize(value)


def test_loose_strings():
    assert LooseString().deserialize(23789) == "23789"
    assert LooseString().deserialize(23789.0) == "23789"
    assert LooseString().deserialize(None) == ""
    assert LooseOptionalString().deserialize(None) is None
    assert LooseOptionalString().deserialize(42) == "42"
    with pytest.raises(ValidationError):
        LooseString().deserialize({"a": 1})
    assert LooseList(LooseString()).deserialize(None) == []


def test_loose_nested_lists():
    refs = RssProductSchema().load({"rpc": 1, "status": "Enabled", "pickupLocations": None})
    assert refs["pickup_locations"] == []
    assert RssProductSchema().load({"rpc": 1, "status": "Enabled"})["pickup_locations"] == []
    assert RssProductSchema().load({"rpc": 1, "status": "Enabled", "pickupLocations": [
        {"id": 7, "extra": True}, {"id": None}]})["pickup_locations"] == [{"id": "7"}, {"id": ""}]
    for broken in ({"id": "7"}, [{"id": "7"}, None], [{"name": "no id"}], ["7"]):
        with pytest.raises(ValidationError):
            RssProductSchema().load({"rpc": 1, "status": "Enabled", "pickupLocations": broken})


# Section 7 variances, through the RSS schemas and out through the legacy ones


@pytest.mark.parametrize("paging", [
    {"page": 1, "pageSize": 50, "total": 1},
    {"page": "1", "pageSize": "50", "total": "1"},  # the rendered doc samples
])
def test_page_figures_as_numbers_or_text(paging):
    loaded = RssPickupLocationPageSchema().load({"data": [DOC_LOCATION], **paging})
    legacy = LegacyPickupLocationPageSchema().dump(page_of({"page": 1, "page_size": 50}, loaded))
    assert legacy == {"page": 1, "pageSize": 50, "items": [DOC_LOCATION], "total": 1}


@pytest.mark.parametrize("result", [{"data": None}, {}, {"data": None, "total": None}])
def test_null_or_missing_data_is_an_empty_page_without_total(result):
    loaded = RssProductPageSchema().load(result)
    legacy = LegacyProductPageSchema().dump(page_of({"page": 2, "page_size": 10}, loaded))
    assert legacy == {"page": 2, "pageSize": 10, "items": []}


def test_product_variances():
    varied = {"rpc": "100150", "productCode": "abc-merch-specific-choc-cereals-code",
              "title": "Chocolate Cereals", "barcodes": ["111122223333"], "status": "Enabled",
              "pickupLocations": [{"id": 23789}], "imageUrl": "a new upstream field"}
    loaded = RssProductResultSchema().load({"data": varied})["data"]
    dumped = LegacyProductSchema().dump(loaded)
    assert dumped == DOC_PRODUCT
    assert list(dumped) == list(DOC_PRODUCT)
    assert LegacyProductSchema().dump(RssProductResultSchema().load(
        {"data": {**varied, "barcodes": None, "pickupLocations": None}})["data"])[
        "barcodes"] == []
    with pytest.raises(ValidationError):
        RssProductResultSchema().load({"data": {**varied, "status": {"kind": "Enabled"}}})


def test_placeholder_location_ids_stay_text():
    loaded = RssProductResultSchema().load({"data": {
        **DOC_PRODUCT, "pickupLocations": [{"id": "Location1"}]}})["data"]
    assert LegacyProductSchema().dump(loaded)["pickupLocations"] == [{"id": "Location1"}]


def test_pickup_location_with_a_numeric_id():
    loaded = RssPickupLocationResultSchema().load({"data": {**DOC_LOCATION, "id": 23789}})
    assert LegacyPickupLocationSchema().dump(loaded["data"]) == DOC_LOCATION
    assert RssPickupLocationResultSchema().load({"data": None}) == {"data": None}


@pytest.mark.parametrize("lot", [
    {"id": "0", "quantityAtPickupLocation": 10, "quantityScheduledForPickup": 2,
     "quantityAvailableForSale": 8},
    {"id": 12345, "quantityAtPickupLocation": "10", "quantityScheduledForPickup": "2",
     "quantityAvailableForSale": "8"},
    {"id": "12345", "quantityAtPickupLocation": 10, "quantityScheduledForPickup": 2},
    {"quantityAtPickupLocation": 10.0, "quantityScheduledForPickup": 2,
     "quantityAvailableForSale": None},
])
def test_stock_lot_variances(lot):
    loaded = RssStockLotResultSchema().load({"data": lot})["data"]
    dumped = LegacyStockLotSchema().dump(loaded)
    assert dumped == {"id": "0", "quantityAtPickupLocation": 10,
                      "quantityScheduledForPickup": 2, "quantityAvailableForSale": 8}
    assert etag_of(loaded) == "10"
    assert RssStockLotListSchema().load({"data": [lot]})["data"] == [loaded]


def test_stock_lot_list_null_data():
    assert RssStockLotListSchema().load({"data": None}) == {"data": []}


def test_the_docs_pickup_job_round_trips():
    loaded = RssPickupJobResultSchema().load({"data": DOC_JOB})["data"]
    assert LegacyPickupJobSchema().dump(loaded) == DOC_JOB


def test_pickup_job_variances():
    varied = {"id": "123", "status": "pickedup", "category": "Dry",
              "scheduledAt": "1684135189000", "pickedAt": None, "preferredPickupTime": None,
              "items": [{"name": "Salmon", "sku": 19739731408, "qty": "11", "rpc": "123456",
                         "vpc": None, "size": None, "imageUrl": None, "qtyFulfilled": None,
                         "minimumExpiryDate": None, "shipmentsInfo": None},
                        {"name": "Tofu", "sku": "1", "qty": 4, "rpc": 7, "qtyFulfilled": 3,
                         "minimumExpiryDate": "1770357600000"}]}
    loaded = RssPickupJobListSchema().load({"data": [varied]})["data"]
    [dumped] = LegacyPickupJobSchema().dump(loaded, many=True)
    # Counts the platform left out are the sums over the items.
    assert dumped == {
        "id": 123, "status": "pickedup", "category": "Dry", "scheduledAt": 1684135189000,
        "qtyCount": 15, "qtyFulfilledCount": 3,
        "items": [{"name": "Salmon", "sku": "19739731408", "qty": 11, "rpc": 123456},
                  {"name": "Tofu", "sku": "1", "qty": 4, "rpc": 7, "qtyFulfilled": 3,
                   "minimumExpiryDate": "1770357600000"}]}


def test_missing_optional_job_members_are_left_out_not_null():
    bare = {"id": 5, "status": "pending", "category": "Fresh", "scheduledAt": 1,
            "qtyCount": 2, "qtyFulfilledCount": 0,
            "items": [{"name": "Tofu", "sku": "1", "qty": 2, "rpc": 7}]}
    loaded = RssPickupJobResultSchema().load({"data": bare})["data"]
    assert LegacyPickupJobSchema().dump(loaded) == bare
    assert RssPickupJobListSchema().load({"data": None}) == {"data": []}
    assert RssPickupJobListSchema().load({}) == {"data": []}
