"""The OpenAPI document of the legacy surface at ``/openapi.json``, and a page at ``/docs``.

Both are public (no credential): they describe the API, not anyone's data. The document is
built once per app from the schemas the routes use (``shim.openapi.spec``); the page is
rendered from that document on the server, with no script and nothing fetched from elsewhere.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, render_template
from flask.typing import ResponseReturnValue

from shim.openapi.page import page_model
from shim.openapi.spec import build_spec

bp = Blueprint("openapi", __name__, template_folder="templates")
EXTENSION = "shim.openapi"
SPEC_PATH = "/openapi.json"
DOCS_PATH = "/docs"
# The page shows only the document, but it is HTML: nothing may run, load or frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def init_app(app: Flask) -> None:
    """Build the document for ``app`` and serve it at ``/openapi.json`` and ``/docs``."""
    app.extensions[EXTENSION] = build_spec()
    app.register_blueprint(bp)


def get_spec() -> dict[str, Any]:
    """Return the current app's OpenAPI document."""
    spec: dict[str, Any] = current_app.extensions[EXTENSION]
    return spec


@bp.get(SPEC_PATH)
def openapi_json() -> ResponseReturnValue:
    """Return the OpenAPI document as JSON."""
    response = current_app.json.response(get_spec())
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get(DOCS_PATH)
def docs() -> tuple[str, int, dict[str, str]]:
    """Return the API reference page rendered from the OpenAPI document."""
    html = render_template("openapi_docs.html", page=page_model(get_spec()),
                           spec_path=SPEC_PATH)
    return html, 200, {"Content-Type": "text/html; charset=utf-8", **PAGE_HEADERS}
