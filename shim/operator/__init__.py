"""Operator endpoints: the status page and seller authorization (never for legacy clients).

Everything here needs the operator credential (``SHIM_OPERATOR_TOKEN``, as a bearer token or
as the password of HTTP Basic, which browsers prompt for), except the authorization callback:
the seller's browser arrives there from Lazada, and the single-use ``state`` bound to the
seller is what authenticates it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime

from flask import Blueprint, redirect, render_template, request

from shim import authorization
from shim.errors import Problem
from shim.services import get_services
from shim.token_lifecycle import SellerTokens

bp = Blueprint("operator", __name__, url_prefix="/operator", template_folder="templates")
REALM = 'Basic realm="redmart-shim operator"'


@bp.before_request
def require_operator():
    """Admit only the operator credential (the callback authenticates by its state)."""
    if request.endpoint == "operator.callback":
        return
    expected = get_services().settings.operator_token
    given = _presented_secret()
    if not expected or given is None or not hmac.compare_digest(
            given.encode("utf-8"), expected.encode("utf-8")):
        raise Problem(401, "Unauthorized", "the operator credential is required",
                      headers={"WWW-Authenticate": REALM})


def _presented_secret() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8") \
                .partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


@bp.get("/sellers/<name>/authorize")
def authorize(name):
    """Return (or, with ``?redirect=1``, redirect to) a consent link for seller ``name``."""
    services = get_services()
    settings = services.settings
    try:
        link = authorization.consent_link(
            services.store, seller=name, app_key=settings.app_key,
            authorize_url=settings.authorize_url, public_url=settings.public_url,
            now=services.clock())
    except authorization.AuthorizationError as error:
        raise Problem(404, "Not Found", str(error)) from None
    if request.args.get("redirect"):
        return redirect(link.url, code=302)
    return {"url": link.url, "expiresAt": int(link.expires_at)}


@bp.get("/callback")
def callback():
    """Exchange the code Lazada sent back with the seller's browser, then say how it went."""
    services = get_services()
    now = services.clock()
    try:
        seller = authorization.seller_for_state(services.store, request.args.get("state", ""),
                                                now)
        updated = authorization.exchange_code(
            services.store, services.upstream_for(services.store.get_seller(seller)),
            seller=seller,
            code=request.args.get("code", ""), now=now)
    except authorization.AuthorizationError as error:
        return render_template("callback.html", ok=False, message=str(error)), 400
    return render_template("callback.html", ok=True, seller=updated.name,
                           account=updated.account)


@bp.get("/status")
def status():
    """The operator's page: sellers' token state and clients' calls over 24 hours."""
    services = get_services()
    tokens: SellerTokens = services.tokens
    sellers = [
        {
            "seller": seller,
            "expires": _when(seller.access_expires_at),
            "refresh_expires": _when(seller.refresh_expires_at),
            "last_refresh": _when(seller.last_refresh_at),
            "due": tokens.is_due(seller),
        }
        for seller in services.store.list_sellers()
    ]
    usage = services.usage.last_24h()
    clients = [{"client": client, "calls": usage.get(client.client_id, 0)}
               for client in services.store.list_clients()]
    return render_template("status.html", sellers=sellers, clients=clients,
                           generated=_when(services.clock()),
                           read_only=getattr(services.store, "read_only", False))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
