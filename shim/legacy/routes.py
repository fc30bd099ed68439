"""The route registry: each legacy route declared once, in a decorator on its view.

``@bp.declare(Route(...))`` adds the URL rule and records the route on its blueprint; the
rest of the shim reads the records (``shim.legacy.ROUTES``) instead of keeping lists of its
own: the OpenAPI document (schemas, statuses, examples), the rate limiter (per-route limits),
the recorder and the contract tests (fixture directories, documented 404s), and the scope
check (the view's ``required_scope``).

Dependency rule: declarations only; no request handling here beyond ``current_route``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, current_app, request
from marshmallow import Schema

from shim import errors
from shim.config import Settings
from shim.legacy.auth import SCOPE_ATTRIBUTE

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class Doc:
    """What the OpenAPI document says of a route beyond its schemas and statuses."""

    answer: str  # the 200's description
    example: Any  # the 200's body, as the legacy docs show it
    notes: str = ""  # added after the view's docstring
    parameters: tuple[dict[str, Any], ...] = ()  # inputs the view reads by hand (headers, ...)
    body_example: dict[str, Any] | None = None
    examples: dict[int, dict[str, Any]] = field(default_factory=dict)  # per error status


@dataclass(frozen=True, kw_only=True)
class Route:
    """One legacy route, as declared on its view."""

    method: str  # "GET", "PATCH"
    rule: str  # the Flask rule: "/v1/products/<product_id>"
    scope: str  # the scope a token needs (else 403)
    fixtures: str  # its directory of contract cases under fixtures/
    answer: type[Schema]  # the legacy schema of the 200 (of each item, when ``many``)
    many: bool = False  # the 200 is a bare JSON array
    etag: bool = False  # the 200 carries an ETag
    query: type[Schema] | None = None
    path: type[Schema] | None = None
    body: type[Schema] | None = None
    # The error statuses the legacy docs give the route (404: a documented not-found), and
    # those the shim adds (413, 415, 422); every /v1 route can also give the common ones.
    statuses: tuple[int, ...] = ()
    not_found_title: str = errors.NOT_FOUND_TITLE
    # Calls per second per client; None: the settings' default for every route.
    rate_limit: Callable[[Settings], int] | None = None
    doc: Doc


@dataclass(frozen=True, kw_only=True)
class BoundRoute(Route):
    """A declared route with the view that serves it."""

    endpoint: str  # the Flask endpoint, "products.get_product"
    view: Callable[..., Any]

    @property
    def documents_not_found(self) -> bool:
        """Return whether the legacy docs give this route a 404."""
        return 404 in self.statuses


class RouteBlueprint(Blueprint):
    """A blueprint whose legacy routes are declared with ``declare``."""

    def __init__(self, name: str, import_name: str) -> None:
        super().__init__(name, import_name)
        self.routes: list[BoundRoute] = []

    def declare(self, route: Route) -> Callable[[View], View]:
        """Return a decorator serving ``route`` with the view and recording it."""

        def bind(view: View) -> View:
            setattr(view, SCOPE_ATTRIBUTE, route.scope)  # what the guard's scope check reads
            self.add_url_rule(route.rule, view_func=view, methods=[route.method])
            declared = {item.name: getattr(route, item.name)
                        for item in dataclasses.fields(Route)}
            self.routes.append(BoundRoute(**declared, endpoint=f"{self.name}.{view.__name__}",
                                          view=view))
            return view

        return bind


def rate_limits(routes: tuple[BoundRoute, ...], settings: Settings) -> dict[str, int]:
    """Return the per-second limits of the routes that differ from the default, by endpoint."""
    return {route.endpoint: route.rate_limit(settings)
            for route in routes if route.rate_limit is not None}


def current_route() -> BoundRoute:
    """Return the declared route serving the current request."""
    blueprint = current_app.blueprints.get(request.blueprint or "")
    if isinstance(blueprint, RouteBlueprint):
        for route in blueprint.routes:
            if route.endpoint == request.endpoint:
                return route
    raise LookupError(f"no declared route serves {request.endpoint}")
