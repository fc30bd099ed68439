"""The control API under ``/_sandbox/``: faults, latency, variance, ledger, stock, sellers.

For tests and demos only: no authentication (the server binds to 127.0.0.1 by default), JSON
in and out, and never under ``/rest`` so no shim call can reach it by accident. Answers never
echo tokens.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from shim.sandbox.config import SellerAccount
from shim.sandbox.faults import parse_rule
from shim.sandbox.state import SandboxState

bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")


class ControlError(Exception):
    """Raised for a bad control request; rendered as ``{"error": ...}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@bp.errorhandler(ControlError)
def _render(error: ControlError) -> tuple[Response, int]:
    return jsonify(error=error.message), error.status


def _state() -> SandboxState:
    state = current_app.extensions["sandbox"]
    assert isinstance(state, SandboxState)
    return state


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ControlError("expected a JSON object body")
    return body


def _int(source: dict[str, Any], name: str) -> int:
    value = source.get(name)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError(f"{name} must be a non-negative integer")
    return value


def _optional_int(source: dict[str, Any], name: str) -> int | None:
    return None if source.get(name) is None else _int(source, name)


@bp.post("/faults")
def add_fault() -> tuple[Response, int]:
    """Add a fault rule; answer its id."""
    try:
        rule = parse_rule(request.get_json(silent=True))
    except ValueError as error:
        raise ControlError(str(error)) from None
    _state().add_fault(rule)
    return jsonify(id=rule.id, rule=rule.to_dict()), 201


@bp.get("/faults")
def list_faults() -> Response:
    """List the active fault rules."""
    return jsonify(faults=[rule.to_dict() for rule in _state().faults()])


@bp.delete("/faults")
def clear_faults() -> Response:
    """Remove every fault rule."""
    _state().clear_faults()
    return jsonify(cleared=True)


@bp.post("/latency")
def set_latency() -> Response:
    """Make every platform call wait ``ms`` milliseconds first (0 turns it off)."""
    ms = _int(_body(), "ms")
    _state().set_mode(latency_ms=ms)
    return jsonify(ms=ms)


@bp.post("/variance")
def set_variance() -> Response:
    """Switch type-variance mode on or off."""
    enabled = _body().get("enabled")
    if not isinstance(enabled, bool):
        raise ControlError("enabled must be true or false")
    _state().set_mode(variance=enabled)
    return jsonify(enabled=enabled)


@bp.get("/ledger")
def ledger() -> Response:
    """Return the ledger entries after ``?after=<seq>`` (all by default)."""
    after = _optional_int(dict(request.args), "after") or 0
    entries = _state().ledger(after)
    return jsonify(entries=entries, last_seq=entries[-1]["seq"] if entries else after)


def _lot_key(source: dict[str, Any]) -> tuple[str, int, str]:
    return (str(_int(source, "storeId")), _int(source, "productId"),
            str(_int(source, "pickupLocationId")))


@bp.get("/stock")
def get_stock() -> Response:
    """Return one stock lot as the platform would (``?storeId&productId&pickupLocationId``)."""
    lot = _state().get_lot(*_lot_key(dict(request.args)))
    if lot is None:
        raise ControlError("no such stock lot", 404)
    return jsonify(lot)


@bp.post("/stock")
def set_stock() -> Response:
    """Change a lot's quantities as an outside writer (the warehouse, RedMart) would."""
    body = _body()
    key = _lot_key(body)
    at = _optional_int(body, "quantityAtPickupLocation")
    scheduled = _optional_int(body, "quantityScheduledForPickup")
    if at is None and scheduled is None:
        raise ControlError("give quantityAtPickupLocation and/or quantityScheduledForPickup")
    state = _state()
    change = state.set_lot(*key, at=at, scheduled=scheduled)
    if change is None:
        raise ControlError("no such stock lot", 404)
    if not change.applied:
        raise ControlError("quantityScheduledForPickup cannot exceed quantityAtPickupLocation",
                           409)
    state.record({"api": "/_sandbox/stock", "method": "POST", "source": "outside",
                  "store_id": key[0],
                  "params": {"productId": key[1], "pickupLocationId": key[2]},
                  "code": "0", "success": True, "before": change.before,
                  "after": change.after, "applied": True})
    return jsonify(change.after)


@bp.post("/sellers")
def add_seller() -> tuple[Response, int]:
    """Register a seller account (store, tokens, expiries) at runtime."""
    body = _body()
    state = _state()
    now = state.now()
    try:
        seller = SellerAccount(
            store_id=str(body.get("store_id", "")),
            access_token=str(body.get("access_token") or ""),
            refresh_token=str(body.get("refresh_token") or ""),
            access_expires_at=float(body.get("access_expires_at",
                                             now + state.config.access_token_ttl_s)),
            refresh_expires_at=float(body.get("refresh_expires_at",
                                              now + state.config.refresh_token_ttl_s)),
            account=str(body.get("account") or ""),
            seller_id=str(body.get("seller_id") or ""),
        )
    except (TypeError, ValueError) as error:
        raise ControlError(str(error)) from None
    seeded = state.add_seller(seller)
    return jsonify(store_id=seller.store_id, seeded=seeded), 201


@bp.post("/expire")
def expire() -> Response:
    """Expire a store's access tokens (``access``, default true) and/or refresh tokens."""
    body = _body()
    store_id = str(body.get("store_id", ""))
    access, refresh = body.get("access", True), body.get("refresh", False)
    if not isinstance(access, bool) or not isinstance(refresh, bool):
        raise ControlError("access and refresh must be true or false")
    if _state().catalog(store_id) is None:
        raise ControlError("unknown store_id", 404)
    return jsonify(expired=_state().expire(store_id, access=access, refresh=refresh))


@bp.post("/codes")
def issue_code() -> tuple[Response, int]:
    """Issue an authorization code for a store, as the consent page would."""
    store_id = str(_body().get("store_id", ""))
    if _state().catalog(store_id) is None:
        raise ControlError("unknown store_id", 404)
    return jsonify(code=_state().issue_code(store_id)), 201
