"""Seller authorization: the consent page, and the ``/auth/token/create|refresh`` APIs.

The real consent page asks the seller to log in; this one only needs ``store_id`` (a
sandbox-only parameter) to know which store grants access, then redirects with a code.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, current_app, redirect, request
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from shim.sandbox import params as p
from shim.sandbox.gateway import GatewayRefusal
from shim.sandbox.state import SandboxState, TokenPair

COUNTRY = "sg"
bp = Blueprint("sandbox_oauth", __name__)


def create_token(state: SandboxState, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Answer ``/auth/token/create``: trade a code for a token pair; return (store, body)."""
    code = p.read((p.Param("code", p.text),), values)["code"]
    pair = state.redeem_code(code)
    if pair is None:
        raise GatewayRefusal("InvalidCode")
    body = _token_body(state, pair, "country_user_info")
    if state.variance:
        # The create page documents refresh_expires_in as a String (reference section 7).
        body["refresh_expires_in"] = str(body["refresh_expires_in"])
    return pair.store_id, body


def refresh_token(state: SandboxState, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Answer ``/auth/token/refresh``: rotate the pair, keeping the refresh token's expiry."""
    token = p.read((p.Param("refresh_token", p.text),), values)["refresh_token"]
    pair = state.refresh(token)
    if pair is None:
        raise GatewayRefusal("IllegalRefreshToken")
    return pair.store_id, _token_body(state, pair, "country_user_info_list")


TOKEN_APIS = {"/auth/token/create": create_token, "/auth/token/refresh": refresh_token}


def _token_body(state: SandboxState, pair: TokenPair, list_key: str) -> dict[str, Any]:
    now = state.now()
    seller = state.seller(pair.store_id)
    assert seller is not None, "a token pair is only issued to a registered seller"
    user = {"country": COUNTRY, "user_id": seller.seller_id, "seller_id": seller.seller_id,
            "short_code": f"SG{int(pair.store_id):06d}RM"}
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": max(0, round(pair.access_expires_at - now)),
        "refresh_expires_in": max(0, round(pair.refresh_expires_at - now)),
        "country": COUNTRY,
        "account_platform": "seller_center",
        "account": seller.account,
        list_key: [user],
        "code": "0",
    }


@bp.get("/oauth/authorize")
def authorize() -> BaseResponse:
    """Show the consent page, or with ``store_id`` issue a code and redirect to the callback."""
    state: SandboxState = current_app.extensions["sandbox"]
    args = request.args
    redirect_uri = args.get("redirect_uri", "")
    if args.get("response_type") != "code":
        return _page("Invalid request", "response_type must be code", 400)
    if args.get("client_id") != state.config.app_key:
        return _page("Invalid request", "client_id is not a known app key", 400)
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        return _page("Invalid request", "redirect_uri must be an http(s) URL", 400)
    store_id = args.get("store_id")
    if not store_id:
        return _consent_form(state, args)
    if state.catalog(store_id) is None:
        return _page("Invalid request", "store_id is not a sandbox store", 400)
    answer = {"code": state.issue_code(store_id)}
    if args.get("state"):
        answer["state"] = args["state"]
    parts = urlsplit(redirect_uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *answer.items()])
    return redirect(urlunsplit(parts._replace(query=query)), code=302)


def _consent_form(state: SandboxState, args: MultiDict[str, str]) -> Response:
    hidden = "".join(f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
                     for name, value in args.items(multi=True) if name != "store_id")
    options = "".join(f'<option value="{escape(sid)}">{escape(sid)} '
                      f"({escape(seller.account)})</option>"
                      for sid, seller in sorted(dict(state.sellers).items()))
    form = (f'<form method="get" action="/oauth/authorize">{hidden}'
            f'<label>Store <select name="store_id">{options}</select></label> '
            '<button type="submit">Authorize</button></form>')
    return _page("Authorize app", f"<p>App {escape(state.config.app_key)} asks to access your "
                 f"RedMart store.</p>{form}", 200, raw=True)


def _page(title: str, body: str, status: int, *, raw: bool = False) -> Response:
    content = body if raw else f"<p>{escape(body)}</p>"
    html = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"</head><body><h1>{escape(title)}</h1>{content}</body></html>")
    return Response(html, status=status, mimetype="text/html")
