"""The OpenAPI document of the legacy surface at ``/openapi.json``, and Swagger UI at ``/docs``.

Both are public (no credential): they describe the API, not anyone's data. The document is
built once per app from the schemas the routes use (``shim.openapi.spec``). The page is
Swagger UI over that document, its files served by the shim itself (``ASSETS``): nothing is
fetched from elsewhere, and the page's policy lets it load, run and call only the shim's own
origin, so its Authorize dialog gets a token from ``POST /oauth2/token`` and "Try it out"
calls the routes of the same shim.

Swagger UI's files come from the ``flask-swagger-ui`` distribution (its ``dist`` folder, a
copy of the npm ``swagger-ui-dist`` it follows release by release); its blueprint is not
used, for its page starts Swagger UI with an inline script that the policy would refuse.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, send_from_directory
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from shim.openapi.spec import build_spec

bp = Blueprint("openapi", __name__)
EXTENSION = "shim.openapi"
SPEC_PATH = "/openapi.json"
DOCS_PATH = "/docs"
OWN_FILES = Path(__file__).resolve().parent / "static"
SWAGGER_UI_FILES = Path(str(resources.files("flask_swagger_ui") / "dist"))
# The files under /docs/, by name, and the folder each is in: nothing else is served there.
ASSETS = {
    "swagger-ui-bundle.js": SWAGGER_UI_FILES,
    "swagger-ui.css": SWAGGER_UI_FILES,
    "favicon-32x32.png": SWAGGER_UI_FILES,
    "docs.js": OWN_FILES,
    "docs.css": OWN_FILES,
}
ASSET_MAX_AGE_S = 3600  # revalidated by ETag after that: a new release shows within the hour
# Swagger UI runs here from the shim's origin only: scripts, styles, images, and the calls of
# "Try it out" and of the Authorize dialog. Its stylesheet draws its icons (arrows, check
# boxes) as data: SVG images, hence ``data:`` for images alone (a data: image runs nothing
# and fetches nothing). Nothing may frame the page or post a form.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'",
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
def docs() -> Response:
    """Return the Swagger UI page over the OpenAPI document."""
    page = Response((OWN_FILES / "docs.html").read_bytes(), mimetype="text/html")
    page.headers.update(PAGE_HEADERS)
    return page


@bp.get(f"{DOCS_PATH}/<name>")
def docs_asset(name: str) -> Response:
    """Return one of the page's files (``ASSETS``)."""
    folder = ASSETS.get(name)
    if folder is None:
        raise NotFound()
    response = send_from_directory(folder, name, max_age=ASSET_MAX_AGE_S)
    response.headers.update(PAGE_HEADERS)
    return response
