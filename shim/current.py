"""The objects behind Flask's ``request``, ``g`` and ``current_app``, for per-request hooks.

Each attribute read through one of Flask's proxies first finds the current context (a
microsecond or two here), so a hook that reads a dozen takes the objects once. Flask documents
``_get_current_object`` for this ("Notes On Proxies").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, Request, current_app, g, request

if TYPE_CHECKING:
    from flask.ctx import _AppCtxGlobals


def current_request() -> Request:
    """Return the request being served, not its proxy."""
    found: Request = request._get_current_object()  # type: ignore[attr-defined]
    return found


def current_g() -> _AppCtxGlobals:
    """Return the current app context's ``g``, not its proxy."""
    found: _AppCtxGlobals = g._get_current_object()
    return found


def current_application() -> Flask:
    """Return the app serving the request, not its proxy."""
    found: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return found
