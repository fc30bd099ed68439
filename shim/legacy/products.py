"""``GET /v1/products`` and ``GET /v1/products/{productId}`` (the id is the RPC)."""

from __future__ import annotations

from typing import Any

from shim import scopes
from shim.legacy import rss
from shim.legacy.inputs import load_path, load_query
from shim.legacy.routes import Doc, Route, RouteBlueprint
from shim.schemas.common import example_page
from shim.schemas.products import (
    EXAMPLE_PRODUCT,
    LegacyProductPageSchema,
    LegacyProductPathSchema,
    LegacyProductSchema,
    LegacyProductsQuerySchema,
    RssProductPageAsLegacySchema,
    RssProductParamsSchema,
    RssProductResultAsLegacySchema,
    RssProductsParamsSchema,
)
from shim.schemas.straight import straight_page

bp = RouteBlueprint("products", __name__)

_query, _list_params = LegacyProductsQuerySchema(), RssProductsParamsSchema()
_rss_page = RssProductPageAsLegacySchema()  # platform answers load straight into legacy JSON
_path, _one_params = LegacyProductPathSchema(), RssProductParamsSchema()
_rss_one = RssProductResultAsLegacySchema()


@bp.declare(Route(
    method="GET", rule="/v1/products", scope=scopes.READ_PRODUCT, fixtures="products-list",
    query=LegacyProductsQuerySchema, answer=LegacyProductPageSchema, statuses=(400,),
    doc=Doc(answer="A Page of Products.", example=example_page(EXAMPLE_PRODUCT),
            notes="The location filter may be given as `pickupLocations` or "
                  "`pickupLocationIds` (the docs' own example); both lists are merged.")))
def list_products() -> dict[str, Any]:
    """Return a Page of products, optionally only those at some pickup locations."""
    query = load_query(_query)
    loaded = rss.fetch("/rss/products/get", _list_params.dump(query), _rss_page)
    return straight_page(LegacyProductPageSchema, query, loaded)


@bp.declare(Route(
    method="GET", rule="/v1/products/<product_id>", scope=scopes.READ_PRODUCT,
    fixtures="products-get", path=LegacyProductPathSchema, answer=LegacyProductSchema,
    statuses=(400, 404),
    doc=Doc(answer="The product.", example=EXAMPLE_PRODUCT,
            notes="`productId` is the RPC (RedMart Product Code), not the seller's product "
                  "code. An RPC that is not digits is a 400.")))
def get_product(product_id: str) -> dict[str, Any]:
    """Return one product by RPC; an RPC that is not a number is a 400, as documented."""
    path = load_path(_path, {"productId": product_id})
    return rss.fetch_one("/rss/product/get", _one_params.dump(path), _rss_one)
