"""``GET /v1/products`` and ``GET /v1/products/{productId}`` (the id is the RPC)."""

from __future__ import annotations

from flask import Blueprint

from shim import scopes
from shim.legacy import rss
from shim.legacy.auth import requires
from shim.legacy.inputs import load_path, load_query
from shim.schemas.common import page_of
from shim.schemas.products import (
    LegacyProductPageSchema,
    LegacyProductPathSchema,
    LegacyProductSchema,
    LegacyProductsQuerySchema,
    RssProductPageSchema,
    RssProductParamsSchema,
    RssProductResultSchema,
    RssProductsParamsSchema,
)

bp = Blueprint("products", __name__)

_query, _list_params = LegacyProductsQuerySchema(), RssProductsParamsSchema()
_rss_page, _legacy_page = RssProductPageSchema(), LegacyProductPageSchema()
_path, _one_params = LegacyProductPathSchema(), RssProductParamsSchema()
_rss_one, _legacy_one = RssProductResultSchema(), LegacyProductSchema()


@bp.get("/v1/products")
@requires(scopes.READ_PRODUCT)
def list_products():
    """Return a Page of products, optionally only those at some pickup locations."""
    query = load_query(_query)
    loaded = rss.fetch("/rss/products/get", _list_params.dump(query), _rss_page)
    return _legacy_page.dump(page_of(query, loaded))


@bp.get("/v1/products/<product_id>")
@requires(scopes.READ_PRODUCT)
def get_product(product_id):
    """Return one product by RPC; an RPC that is not a number is a 400, as documented."""
    path = load_path(_path, {"productId": product_id})
    return _legacy_one.dump(rss.fetch_one("/rss/product/get", _one_params.dump(path), _rss_one))
