"""Loading legacy input: query strings, path values and JSON bodies, with the legacy 400s."""

from __future__ import annotations

import io

import pytest
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from shim.app import create_app
from shim.errors import Problem, not_found
from shim.legacy.inputs import describe, load_json_body, load_path, load_query
from shim.schemas.common import LegacyPageQuerySchema
from shim.schemas.pickup_locations import LegacyPickupLocationPathSchema
from shim.schemas.stock_lots import LegacyStockLotUpdateSchema

MERGE_PATCH = "application/merge-patch+json"


@pytest.fixture(scope="module")
def app(make_settings):
    # Nothing here calls the platform: the URL only has to be well-formed.
    return create_app(make_settings("http://127.0.0.1:9/rest"))


def problem_of(call) -> Problem:
    with pytest.raises(Problem) as raised:
        call()
    return raised.value


def test_describe_flattens_marshmallow_messages():
    assert describe({"page": ["Not valid."], "items": {0: ["a", "b"]}}) == (
        "page: Not valid.; items: 0: a, b")


def test_query_with_defaults(app):
    with app.test_request_context("/v1/pickup-locations?pageSize=7&other=x&other=y"):
        # An unknown parameter is ignored even when repeated.
        assert load_query(LegacyPageQuerySchema()) == {"page": 1, "page_size": 7}


def test_a_repeated_known_parameter_is_a_400_naming_it(app):
    with app.test_request_context("/v1/products?pageSize=1&page=1&pageSize=2&page=3"):
        problem = problem_of(lambda: load_query(LegacyPageQuerySchema()))
    assert (problem.status, problem.title) == (400, "Bad Request")
    assert problem.detail == "parameter given more than once: page, pageSize"


def test_a_bad_query_value_is_a_400_naming_the_parameter(app):
    with app.test_request_context("/v1/products?pageSize=%D9%A3"):
        problem = problem_of(lambda: load_query(LegacyPageQuerySchema()))
    assert problem.status == 400
    assert problem.detail.startswith("pageSize: ")


def test_path_values_with_a_route_specific_error(app):
    schema = LegacyPickupLocationPathSchema()
    with app.test_request_context("/"):
        assert load_path(schema, {"pickupLocationId": "23789"}) == {"pickup_location_id": 23789}
        assert problem_of(lambda: load_path(schema, {"pickupLocationId": "x"})).status == 400
        replaced = problem_of(lambda: load_path(schema, {"pickupLocationId": "x"},
                                                error=not_found()))
    assert (replaced.status, replaced.body()) == (
        404, {"title": "The requested resource could not be found"})


def body_result(app, data, content_type=MERGE_PATCH):
    """Return what ``load_json_body`` makes of a PATCH body: the loaded dict or the Problem."""
    headers = {"Content-Type": content_type} if content_type is not None else {}
    with app.test_request_context("/", method="PATCH", data=data, headers=headers):
        try:
            return load_json_body(LegacyStockLotUpdateSchema())
        except Problem as problem:
            return problem


@pytest.mark.parametrize("content_type", [
    MERGE_PATCH, "application/json", "application/json; charset=utf-8",
    "application/merge-patch+json; charset=UTF-8",
])
def test_json_content_types_are_read(app, content_type):
    assert body_result(app, '{"quantityAtPickupLocation": "7"}', content_type) == {
        "quantity_at_pickup_location": 7}


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml",
                                          "application/x-www-form-urlencoded",
                                          "application/jsonx", "json"])
def test_other_content_types_are_415(app, content_type):
    problem = body_result(app, '{"quantityAtPickupLocation": 7}', content_type)
    assert (problem.status, problem.title) == (415, "Unsupported Media Type")


@pytest.mark.parametrize(("data", "detail"), [
    ('{"quantityAtPickupLocation": NaN}', "NaN is not a number"),
    ('{"quantityAtPickupLocation": -Infinity}', "-Infinity is not a number"),
    ('{"quantityAtPickupLocation": 1, "quantityAtPickupLocation": 1}', "more than once"),
    ('{"quantityAtPickupLocation": 1, "x": {"a": 1, "a": 2}}', "more than once"),
    ("[" * 5000, "nested too deeply"),
    ('{"a":' * 3000, "nested too deeply"),
    (b"\xff", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ("7", "must be a JSON object"),
    ('{"quantityAtPickupLocation": 1.5}', "quantityAtPickupLocation: must be an integer"),
    ('{"quantityAtPickupLocation": 1, "id": "0"}', "id: Unknown field."),
    ("{}", "quantityAtPickupLocation: Missing data for required field."),
])
def test_bad_bodies_are_400_with_a_reason(app, data, detail):
    problem = body_result(app, data)
    assert (problem.status, problem.title) == (400, "Bad Request")
    assert detail in problem.detail


def test_a_body_over_the_limit_is_refused_before_parsing(app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert body_result(app, '{"quantityAtPickupLocation": 1}' + " " * (limit - 31)) == {
        "quantity_at_pickup_location": 1}
    with pytest.raises(RequestEntityTooLarge):
        body_result(app, '{"quantityAtPickupLocation": 1}' + " " * (limit - 30))



@pytest.mark.parametrize(("padding", "loaded"), [(0, True), (10**6, False)])
def test_a_chunked_body_is_held_to_the_limit(app, padding, loaded):
    # A server that de-chunks sets wsgi.input_terminated and gives no Content-Length.
    body = b'{"quantityAtPickupLocation": 1}' + b" " * padding
    with app.test_request_context("/", method="PATCH", input_stream=io.BytesIO(body),
                                  headers={"Content-Type": MERGE_PATCH,
                                           "Transfer-Encoding": "chunked"},
                                  environ_overrides={"wsgi.input_terminated": True}):
        assert request.content_length is None
        if loaded:
            assert load_json_body(LegacyStockLotUpdateSchema()) == {
                "quantity_at_pickup_location": 1}
        else:
            with pytest.raises(RequestEntityTooLarge):
                load_json_body(LegacyStockLotUpdateSchema())
