"""Operator endpoints: the status page and seller authorization (never for legacy clients).

Everything here needs the operator credential (``SHIM_OPERATOR_TOKEN``, as a bearer token or
as the password of HTTP Basic, which browsers prompt for), except the authorization callback:
the seller's browser arrives there from Lazada, and the single-use ``state`` bound to the
seller is what authenticates it. Failed operator credentials are throttled per source address
by the token endpoint's failed-authentication throttle (the same shared counters), which the
app factory hands over (``init_app``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from shim import authorization
from shim.errors import Problem
from shim.operator import status_page
from shim.services import get_services

bp = Blueprint("operator", __name__, url_prefix="/operator", template_folder="templates")
log = logging.getLogger(__name__)
REALM = 'Basic realm="redmart-shim operator"'
THROTTLE = "shim.operator.throttle"
# The throttle's "client id" for operator credentials: a NUL cannot start a registered id.
OPERATOR_KEY = "\0operator"
# Pages here show operator data, and the callback's address holds a code: nothing is cached,
# framed, sent on as a referrer, or allowed to run a script even if a value slipped through.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Throttle(Protocol):
    """Counts failed credentials per source address (``FailedAuthThrottle``'s interface)."""

    def attempt(self, client_id: str, address: str | None, now: float) -> Any:
        """Count an attempt; its ``retry_after`` is set when it must be refused."""

    def succeeded(self, attempt: Any) -> None:
        """Give back the place of an attempt whose credential was right."""


def init_app(app: Flask, throttle: Throttle) -> None:
    """Register the blueprint, throttling failed credentials with ``throttle``."""
    app.extensions[THROTTLE] = throttle
    app.register_blueprint(bp)


@bp.before_request
def require_operator() -> None:
    """Admit only the operator credential (the callback authenticates by its state)."""
    if request.endpoint == "operator.callback":
        return
    expected = get_services().settings.operator_token
    if not expected:
        # Closed whatever is presented; say why, or an operator hunts for a typo in the token.
        raise Problem(401, "Unauthorized", "no operator credential is configured: set "
                      "SHIM_OPERATOR_TOKEN (operator_token) to open /operator and /metrics",
                      headers={"WWW-Authenticate": REALM})
    given = _presented_secret()
    if given is None:  # nothing was guessed (a browser's first visit): nothing to count
        raise _unauthorized()
    # Counted before the comparison and refused over the limit whatever was presented, so a
    # guesser learns nothing from a throttled answer (as at the token endpoint).
    throttle: Throttle = current_app.extensions[THROTTLE]
    attempt = throttle.attempt(OPERATOR_KEY, request.remote_addr, get_services().clock())
    if attempt.retry_after is not None:
        raise Problem(429, "Too Many Requests", "too many failed operator credentials from "
                      f"this address: retry in {attempt.retry_after} s",
                      headers={"Retry-After": str(attempt.retry_after)})
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise _unauthorized()
    throttle.succeeded(attempt)


def _unauthorized() -> Problem:
    return Problem(401, "Unauthorized", "the operator credential is required",
                   headers={"WWW-Authenticate": REALM})


@bp.after_request
def page_headers(response: Response) -> Response:
    """Put ``PAGE_HEADERS`` on every operator response, refusals included."""
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


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


@bp.post("/sellers/<path:name>/authorize")
def authorize(name: str) -> BaseResponse | dict[str, object]:
    """Mint a consent link for seller ``name``: return it, or with ``?redirect=1`` go there.

    A state change, so POST only, and never from another site's page: a browser holding the
    operator's Basic credential would otherwise mint links for whoever asks it to.
    """
    _refuse_cross_origin()
    services = get_services()
    settings = services.settings
    seller = services.store.get_seller(name)
    if seller is None:
        raise Problem(404, "Not Found", f"no seller {name!r}")
    try:
        # The seller consents to the app it is registered with, which must also be the
        # app that exchanges the code on the callback.
        app_key = services.upstream_for(seller).app_key
        link = authorization.consent_link(
            services.store, seller=name, app_key=app_key,
            authorize_url=settings.authorize_url, public_url=settings.public_url,
            now=services.clock())
    except (authorization.AuthorizationError, LookupError) as error:
        raise Problem(409, "Conflict", str(error)) from None
    if request.args.get("redirect"):
        return redirect(link.url, code=303)  # the browser GETs the consent page
    return {"url": link.url, "expiresAt": int(link.expires_at)}


def _refuse_cross_origin() -> None:
    """Refuse a request a browser sent from another origin (403); tools send no Origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        # A browser that leaves Origin out still says where the request came from.
        if request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none"):
            return
    elif origin in _own_origins():
        return
    raise Problem(403, "Forbidden", "consent links are minted only from the shim's own pages")


def _own_origins() -> set[str]:
    own = {_origin(request.host_url)}
    public_url = get_services().settings.public_url
    if public_url:
        own.add(_origin(public_url))
    return own


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@bp.get("/callback")
def callback() -> str | tuple[str, int]:
    """Exchange the code Lazada sent back with the seller's browser, then say how it went."""
    services = get_services()
    now = services.clock()
    try:
        claim = authorization.claim_state(services.store, request.args.get("state", ""), now)
        name = claim.seller
        seller = services.store.get_seller(name)
        if seller is None:
            raise authorization.AuthorizationError(f"seller {name!r} was removed meanwhile")
        updated = authorization.exchange_code(
            services.store, services.upstream_for(seller), seller=name,
            code=request.args.get("code", ""), now=now, claim=claim)
    except authorization.PlatformUnreachable as error:  # the link works on a reload
        return render_template("callback.html", ok=False, message=str(error)), 503
    except authorization.AccountUnconfirmed as error:  # the platform failed the account check
        return render_template("callback.html", ok=False, message=str(error)), 503
    except authorization.AuthorizationError as error:
        return render_template("callback.html", ok=False, message=str(error)), 400
    except LookupError:  # the seller names an app the store lacks: the operator must fix it
        log.error("seller %s names an app that is not stored; authorization not completed",
                  name)
        return render_template("callback.html", ok=False,
                               message="the shim is not set up for this seller's app: "
                                       "tell the operator"), 400
    return render_template("callback.html", ok=True, seller=updated.name,
                           account=updated.account)


@bp.get("/status")
def status() -> Response:
    """The operator's page: at a glance, sellers' tokens, platform APIs, clients' usage."""
    services = get_services()
    refresh_s = _refresh_seconds(request.args.get("refresh"))
    page = Response(render_template("status.html", refresh_s=refresh_s,
                                    **status_page.context(services)), mimetype="text/html")
    # Its consent buttons post here, and the answer sends the browser on to the platform.
    page.headers["Content-Security-Policy"] = PAGE_HEADERS["Content-Security-Policy"].replace(
        "form-action 'none'", f"form-action 'self' {_origin(services.settings.authorize_url)}")
    # "no-referrer" would make a browser send ``Origin: null`` with the form, which the
    # Origin check refuses; "same-origin" still tells other sites nothing.
    page.headers["Referrer-Policy"] = "same-origin"
    return page


def _refresh_seconds(given: str | None) -> int:
    """Return how often the page reloads itself: ``?refresh=N`` seconds (0: never), else 30."""
    if given is None or not given.isdigit():
        return status_page.REFRESH_S
    return 0 if int(given) == 0 else min(max(int(given), 5), 3600)
