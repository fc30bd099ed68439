"""OAuth2 client credentials and bearer tokens, as Kong's oauth2 plugin showed them to clients.

Order of checks and every message follow Kong 1.x ``kong/plugins/oauth2/access.lua``: the
token endpoint reads parameters from the query and the form body alike, takes the client from
the form or else a Basic header, and answers errors with ``error``/``error_description``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from flask import Blueprint, g, request

from shim import credentials, scopes
from shim.errors import OAuthError, Problem
from shim.services import get_services
from shim.store import IssuedToken

bp = Blueprint("oauth2", __name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BEARER_REALM = 'Bearer realm="service"'
INVALID_TOKEN = "The access token is invalid or has expired"  # noqa: S105 (a message)


@dataclass(frozen=True)
class Caller:
    """The legacy client behind the current request."""

    client_id: str
    scopes: frozenset[str]
    seller: str


def _client_credentials(params) -> tuple[str | None, str | None, bool]:
    """Return (client_id, client_secret, from_basic_header) as Kong read them."""
    if params.get("client_id") and params.get("client_secret"):
        return params["client_id"], params["client_secret"], False
    header = request.headers.get("Authorization")
    if not header:
        return None, None, False
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None, True
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None, True
    client_id, _, secret = decoded.partition(":")
    return client_id or None, secret or None, True


def _requested_scopes(params, allowed: frozenset[str]) -> frozenset[str]:
    """Return the scopes to grant, or raise Kong's ``invalid_scope``."""
    settings = get_services().settings
    requested = (params.get("scope") or "").split()
    if not requested:
        if settings.mandatory_scope:
            raise OAuthError(400, "invalid_scope", "You must specify a scope", headers=NO_STORE)
        return allowed  # the 2018 docs made scope optional: grant what the client may have
    for scope in requested:
        if scope not in scopes.ALL or scope not in allowed:
            raise OAuthError(400, "invalid_scope", f'"{scope}" is an invalid scope',
                             headers=NO_STORE)
    return frozenset(requested)


@bp.post("/oauth2/token")
def issue_token():
    """Issue a bearer token for a client's credentials (client_credentials grant only)."""
    services = get_services()
    params = {**request.args.to_dict(), **request.form.to_dict()}
    error = None
    if params.get("grant_type") != "client_credentials":
        error = OAuthError(400, "unsupported_grant_type", "Invalid grant_type", headers=NO_STORE)
    client_id, secret, from_header = _client_credentials(params)
    client = services.store.get_client(client_id) if client_id else None
    secret_ok = bool(client and secret and credentials.verify_secret(secret, client.secret_digest))
    if client and not secret_ok:
        headers = {**NO_STORE, "WWW-Authenticate": 'Basic realm="OAuth2.0"'} if from_header \
            else NO_STORE
        error = OAuthError(401 if from_header else 400, "invalid_client",
                           "Invalid client authentication", headers=headers)
    if error:
        raise error
    if not client:
        raise OAuthError(400, "invalid_client", "Invalid client authentication", headers=NO_STORE)
    granted = _requested_scopes(params, client.scopes)
    token = credentials.new_token()
    ttl = services.settings.token_ttl_s
    services.store.save_token(
        credentials.token_digest(token),
        IssuedToken(client_id=client.client_id, scopes=granted,
                    expires_at=services.clock() + ttl),
    )
    body = {"access_token": token, "token_type": "bearer", "expires_in": ttl}
    if params.get("state"):
        body["state"] = params["state"]
    return body, 200, NO_STORE


def _bearer_token() -> str | None:
    """Return the token from the Authorization header, else the ``access_token`` parameter."""
    header = request.headers.get("Authorization")
    if header is not None:
        parts = header.split()
        if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
            return parts[1]
        return header  # Kong used the raw value, which then fails as an invalid token
    token = request.args.get("access_token")
    if token is None and request.mimetype == "application/x-www-form-urlencoded":
        token = request.form.get("access_token")
    return token


def authenticate() -> Caller:
    """Return the caller of this request, or raise Kong's 401."""
    services = get_services()
    token = _bearer_token()
    if not token:
        raise OAuthError(401, "invalid_request", "The access token is missing",
                         headers={"WWW-Authenticate": BEARER_REALM})
    issued = services.store.find_token(credentials.token_digest(token), services.clock())
    client = services.store.get_client(issued.client_id) if issued else None
    if not issued or not client:
        raise OAuthError(
            401, "invalid_token", INVALID_TOKEN,
            headers={"WWW-Authenticate": f'{BEARER_REALM} error="invalid_token" '
                                         f'error_description="{INVALID_TOKEN}"'},
        )
    return Caller(client_id=client.client_id, scopes=issued.scopes, seller=client.seller)


def requires(scope: str):
    """Mark a view as needing ``scope``; ``check_scope`` enforces it."""

    def mark(view):
        view.required_scope = scope
        return view

    return mark


def check_scope(view) -> None:
    """Raise the service's 403 Problem when the caller's token lacks the view's scope."""
    scope = getattr(view, "required_scope", None)
    if scope and scope not in g.caller.scopes:
        raise Problem(403, "Forbidden", f"the access token does not grant the scope {scope}")
