"""The faster translation against the declared schemas run by marshmallow itself (issue 12).

- Each lean field (``LeanField``, ``LooseNestedList``'s hand loop) gives, for any value, the
  answer or the error marshmallow's generic path gives for the same field.
- The derived one-pass loaders (``shim.schemas.straight``) give, for any platform object,
  exactly the JSON of the two passes they replace (load with the ``Rss*Schema``, dump with
  the ``Legacy*Schema``), and fail exactly when those fail.
- A pair the derivation cannot make exactly right is refused at import.

The oracles run in this module only; ``tests/test_differential.py`` checks whole answers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, missing, validate

from shim.schemas.common import page_of
from shim.schemas.fields import (
    LeanField,
    LooseInteger,
    LooseList,
    LooseNestedList,
    LooseOptionalString,
    LooseString,
    compile_loader,
    load_flat,
)
from shim.schemas.pickup_jobs import LegacyPickupJobSchema, RssPickupJobSchema
from shim.schemas.pickup_locations import (
    LegacyPickupLocationPageSchema,
    LegacyPickupLocationSchema,
    RssPickupLocationAsLegacySchema,
    RssPickupLocationPageAsLegacySchema,
    RssPickupLocationPageSchema,
    RssPickupLocationResultAsLegacySchema,
    RssPickupLocationResultSchema,
)
from shim.schemas.products import (
    LegacyProductPageSchema,
    LegacyProductSchema,
    ProductStatusField,
    RssProductAsLegacySchema,
    RssProductPageAsLegacySchema,
    RssProductPageSchema,
    RssProductResultAsLegacySchema,
    RssProductResultSchema,
    RssProductSchema,
)
from shim.schemas.stock_lots import LegacyStockLotSchema, RssStockLotSchema
from shim.schemas.straight import straight, straight_page

EXAMPLES = settings(max_examples=300, derandomize=True, database=None, deadline=None)

# Platform values of every JSON type, with the odd ones the corpus names.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.from_regex(r"\s?-?[0-9]{1,25}(\.[0-9]*)?([eE][+-]?[0-9]{1,3})?\s?", fullmatch=True),
    st.sampled_from(["\u0661\u0662", "\uff11", "1_0", "NaN", "inf", '"7"', "0x1f", "\ud800"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(["type", "id", "x"]), scalars, max_size=2))
maybe_missing = st.one_of(st.just(missing), values)


def outcome(load: Any) -> tuple[str, Any]:
    """Return ("ok", JSON of the result) or ("error", the messages) of calling ``load``."""
    try:
        return "ok", json.dumps(load(), default=repr)  # type-exact: 1, 1.0 and true differ
    except ValidationError as error:
        return "error", error.messages


LEAN = [LooseInteger(), LooseInteger(allow_none=True), LooseInteger(required=True),
        LooseInteger(load_default=0), LooseString(), LooseString(required=True),
        LooseOptionalString(), LooseList(LooseString()), ProductStatusField(required=True)]


@pytest.mark.parametrize("field", LEAN, ids=lambda field: type(field).__name__)
@EXAMPLES
@given(value=maybe_missing)
def test_a_lean_field_answers_and_refuses_as_marshmallow_does(field, value):
    def generic() -> Any:
        loaded = fields.Field.deserialize(field, value)  # the path LeanField short-cuts
        if loaded is None and isinstance(field, (LooseString, LooseList)):
            return "" if isinstance(field, LooseString) else []  # what these two add
        return loaded

    assert outcome(lambda: field.deserialize(value)) == outcome(generic)


def test_a_lean_field_with_validators_takes_the_generic_path():
    field = LooseInteger(validate=validate.Range(max=4))
    assert field.deserialize("4") == 4
    with pytest.raises(ValidationError):
        field.deserialize("7")


objects = st.dictionaries(st.sampled_from(["id", "rpc", "title", "status", "pickupLocations",
                                           "barcodes", "productCode", "x"]),
                          values, max_size=6)
products = st.one_of(objects, st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"rpc": st.integers(0, 2**63 - 1),
                           "status": st.sampled_from(["Enabled", {"type": "Disabled"}]),
                           "pickupLocations": st.lists(st.fixed_dictionaries(
                               {"id": st.one_of(st.text(max_size=4), st.integers())}),
                               max_size=3)}),
    objects))
item_lists = st.one_of(values, st.lists(st.one_of(products, scalars), max_size=4))


@EXAMPLES
@given(items=item_lists)
def test_the_hand_loop_of_a_nested_list_loads_as_the_schema_does(items):
    lean = LooseNestedList(RssProductSchema)
    generic = LooseNestedList(RssProductSchema)
    generic._loader = None  # no loader: marshmallow's Nested loads every item
    assert lean._make_loader() is not None
    assert outcome(lambda: lean.deserialize(items)) == outcome(
        lambda: generic.deserialize(items))


@EXAMPLES
@given(item=st.one_of(products, scalars, st.dictionaries(
    st.sampled_from(["id", "name", "city", "x"]), values, max_size=4)))
def test_a_generated_loader_loads_as_the_loop_over_its_plan(item):
    for nested in (RssProductSchema, RssPickupLocationAsLegacySchema, RssProductAsLegacySchema):
        plan = LooseNestedList(nested).plan()
        assert plan is not None
        loader = compile_loader(plan, nested())
        assert outcome(lambda loader=loader: loader(item)) == outcome(
            lambda plan=plan: load_flat(item, plan))


def two_passes(rss: Schema, legacy: Schema, data: Any) -> Any:
    loaded = rss.load({"data": data})["data"]
    return None if loaded is None else legacy.dump(loaded)


@EXAMPLES
@given(product=st.one_of(products, values))
def test_a_product_loads_straight_into_what_two_passes_gave(product):
    assert outcome(lambda: RssProductResultAsLegacySchema().load({"data": product})["data"]) \
        == outcome(lambda: two_passes(RssProductResultSchema(), LegacyProductSchema(), product))


locations = st.dictionaries(st.sampled_from(["id", "name", "addressLine1", "addressLine2",
                                             "city", "postalCode", "country", "x"]),
                            values, max_size=8)


@EXAMPLES
@given(location=st.one_of(locations, values))
def test_a_location_loads_straight_into_what_two_passes_gave(location):
    assert outcome(lambda: RssPickupLocationResultAsLegacySchema().load(
        {"data": location})["data"]) == outcome(lambda: two_passes(
            RssPickupLocationResultSchema(), LegacyPickupLocationSchema(), location))


paging = st.dictionaries(st.sampled_from(["page", "pageSize", "total"]), scalars, max_size=3)


@EXAMPLES
@given(data=st.one_of(item_lists, st.lists(products, max_size=4)), figures=paging,
       requested=st.fixed_dictionaries({"page": st.integers(1, 9),
                                        "page_size": st.integers(1, 100)}))
def test_a_page_loads_straight_into_what_two_passes_gave(data, figures, requested):
    payload = {"data": data, **figures}
    assert outcome(lambda: straight_page(
        LegacyProductPageSchema, requested, RssProductPageAsLegacySchema().load(payload))) \
        == outcome(lambda: LegacyProductPageSchema().dump(
            page_of(requested, RssProductPageSchema().load(payload))))


@EXAMPLES
@given(data=st.lists(st.one_of(locations, scalars), max_size=4), figures=paging)
def test_a_page_of_locations_loads_straight_into_what_two_passes_gave(data, figures):
    payload, requested = {"data": data, **figures}, {"page": 1, "page_size": 50}
    assert outcome(lambda: straight_page(
        LegacyPickupLocationPageSchema, requested,
        RssPickupLocationPageAsLegacySchema().load(payload))) == outcome(
        lambda: LegacyPickupLocationPageSchema().dump(
            page_of(requested, RssPickupLocationPageSchema().load(payload))))


def test_the_derived_loaders_keep_the_legacy_wire_names_and_order():
    assert list(RssPickupLocationAsLegacySchema().load({"id": 7})) == [
        field.data_key or name for name, field in LegacyPickupLocationSchema().fields.items()]


@pytest.mark.parametrize(("rss", "legacy"), [
    (RssStockLotSchema, LegacyStockLotSchema),     # a post_load hook fills members in
    (RssPickupJobSchema, LegacyPickupJobSchema),   # counts computed by the dump
    (RssProductSchema, LegacyPickupLocationSchema),  # not a pair at all
])
def test_a_pair_the_derivation_cannot_make_exact_is_refused(rss, legacy):
    with pytest.raises(TypeError):
        straight(rss, legacy)


def test_a_dump_that_would_change_a_value_is_refused():
    rss = Schema.from_dict({"n": LooseString()}, name="RssText")
    legacy = Schema.from_dict({"n": fields.Integer()}, name="LegacyNumber")
    with pytest.raises(TypeError, match="would change"):
        straight(rss, legacy)
    assert isinstance(LooseInteger(), LeanField)
