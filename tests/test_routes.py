"""The route registry: the app serves exactly the declared routes, with their declared limits."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask

from shim import legacy, scopes
from shim.app import create_app
from shim.legacy import ratelimit
from shim.legacy.routes import Doc, Route, RouteBlueprint, current_route
from shim.schemas.stock_lots import LegacyStockLotSchema


def test_the_app_serves_exactly_the_declared_routes(app):
    """Every /v1 rule comes from one declaration, and every declaration is served."""
    served = {(method, rule.rule, rule.endpoint) for rule in app.url_map.iter_rules()
              if legacy.is_api_path(rule.rule)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    declared = [(route.method, route.rule, route.endpoint) for route in legacy.ROUTES]
    assert sorted(declared) == sorted(served)


def test_route_facts_are_unique():
    assert len({route.endpoint for route in legacy.ROUTES}) == len(legacy.ROUTES)
    assert len({route.fixtures for route in legacy.ROUTES}) == len(legacy.ROUTES)
    assert len({(route.method, route.rule) for route in legacy.ROUTES}) == len(legacy.ROUTES)


def test_the_limiter_takes_the_declared_limits(settings):
    """A route declaring a limit gets it from the settings; every other one the default."""
    custom = dataclasses.replace(settings, rate_limit_per_second=7,
                                 pickup_jobs_rate_limit_per_second=3)
    limiter = create_app(custom).extensions[ratelimit.EXTENSION]
    limits = {route.endpoint: limiter.limit_for(route.endpoint) for route in legacy.ROUTES}
    assert limits.pop("pickup_jobs.list_pickup_jobs") == 3
    assert set(limits.values()) == {7}


def _lots_route(**changes) -> Route:
    return Route(method="GET", rule="/v1/scratch/<item_id>", scope=scopes.READ_STOCK_LOT,
                 fixtures="scratch-get", answer=LegacyStockLotSchema,
                 doc=Doc(answer="A lot.", example={}), **changes)


def test_declaring_adds_the_rule_the_scope_and_the_record():
    bp = RouteBlueprint("scratch", __name__)

    @bp.declare(_lots_route(statuses=(404,), not_found_title="No such item"))
    def get_item(item_id):
        """Return an item."""
        return {"id": item_id}

    app = Flask(__name__)
    app.register_blueprint(bp)
    [route] = bp.routes
    assert (route.endpoint, route.view, route.documents_not_found) == (
        "scratch.get_item", get_item, True)
    assert get_item.required_scope == scopes.READ_STOCK_LOT
    assert app.test_client().get("/v1/scratch/5").get_json() == {"id": "5"}
    assert app.test_client().post("/v1/scratch/5").status_code == 405


def test_the_current_route_is_known_only_in_a_declared_view():
    bp = RouteBlueprint("scratch", __name__)
    seen = []

    @bp.declare(_lots_route(not_found_title="No such item"))
    def get_item(item_id):
        """Return an item."""
        seen.append(current_route().not_found_title)
        return {}

    app = Flask(__name__)
    app.register_blueprint(bp)
    app.test_client().get("/v1/scratch/5")
    assert seen == ["No such item"]
    with app.test_request_context("/elsewhere"), pytest.raises(LookupError):
        current_route()
