"""OAuth2 client credentials and bearer tokens, as Kong's oauth2 plugin showed them to clients.

Order of checks and every message follow Kong 1.x ``kong/plugins/oauth2/access.lua``: the
token endpoint reads parameters from the query and the body (form or JSON) alike, takes the
client from them or else a Basic header, and answers errors with ``error``/``error_description``
(echoing ``state``); protected routes read the token from the Authorization header or an
``access_token`` parameter.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Request, current_app, request

from shim import credentials, scopes
from shim.current import current_application, current_g, current_request
from shim.errors import OAuthError, Problem
from shim.legacy.ratelimit import get_limiter
from shim.services import get_services
from shim.store import IssuedToken

bp = Blueprint("oauth2", __name__)

TOKEN_PATH = "/oauth2/token"  # noqa: S105 (a path)
GRANT_TYPE = "client_credentials"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BASIC_REALM = 'Basic realm="OAuth2.0"'
BEARER_REALM = 'Bearer realm="service"'
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
INVALID_TOKEN = "The access token is invalid or has expired"  # noqa: S105 (a message)
MAX_CLIENT_ID_CHARS = 256  # the registry's ids are 1 to 64 characters
SECRET_CHECKS = "shim.secret_checks"  # noqa: S105 (an extension name: the hashing semaphore)
SCOPE_ATTRIBUTE = "required_scope"  # set on a view by its route declaration (shim.legacy.routes)


@dataclass(frozen=True)
class Caller:
    """The legacy client behind the current request."""

    client_id: str
    scopes: frozenset[str]
    seller: str


def _token_parameters() -> dict[str, str]:
    """Return the token call's parameters: the query string, overridden by the body.

    Kong read the body as a form (urlencoded or multipart) or as a JSON object alike.
    """
    params = request.args.to_dict()
    if request.is_json:
        document = request.get_json(silent=True)
        if isinstance(document, dict):
            params.update({name: value for name, value in document.items()
                           if isinstance(value, str)})
    else:
        params.update(request.form.to_dict())
    return params


def _client_credentials(params: dict[str, str]) -> tuple[str | None, str | None, bool]:
    """Return (client_id, client_secret, from_authorization_header) as Kong read them."""
    if params.get("client_id") and params.get("client_secret"):
        return params["client_id"], params["client_secret"], False
    header = request.headers.get("Authorization")
    if header is None:
        return None, None, False
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None, True
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text (a ValueError)
        return None, None, True
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:  # Kong's pattern ``([^:]+):(.*)``: no match, no client
        return None, None, True
    return client_id, secret, True


def _invalid_client(from_header: bool, state: str | None) -> OAuthError:
    """Return Kong's ``invalid_client``: 401 with a Basic challenge for a header client."""
    if from_header:
        return OAuthError(401, "invalid_client", "Invalid client authentication", state=state,
                          headers={**NO_STORE, "WWW-Authenticate": BASIC_REALM})
    return OAuthError(400, "invalid_client", "Invalid client authentication", state=state,
                      headers=NO_STORE)


def _requested_scopes(params: dict[str, str], allowed: frozenset[str],
                      state: str | None) -> frozenset[str]:
    """Return the scopes to grant, or raise Kong's ``invalid_scope``."""
    settings = get_services().settings
    requested = (params.get("scope") or "").split()
    if not requested:
        if settings.mandatory_scope and "scope" not in params:  # Kong: absent, not empty
            raise OAuthError(400, "invalid_scope", "You must specify a scope", state=state,
                             headers=NO_STORE)
        return allowed  # the 2018 docs made scope optional: grant what the client may have
    for scope in requested:
        if scope not in scopes.ALL or scope not in allowed:
            raise OAuthError(400, "invalid_scope", f'"{scope}" is an invalid scope',
                             state=state, headers=NO_STORE)
    return frozenset(requested)


@bp.post(TOKEN_PATH)
def issue_token() -> tuple[dict[str, object], int, dict[str, str]]:
    """Issue a bearer token for a client's credentials (client_credentials grant only).

    The checks run, and override each other, in the order of Kong's ``issue_token``: a wrong
    grant type, then an unknown client (for any other grant), then a wrong secret; only then
    an unknown client for this grant (always a plain 400), then the scope. Before all of
    them, a client id that failed too often from this address is refused (``_throttled``).
    """
    services = get_services()
    params = _token_parameters()
    state = params.get("state")
    error = None
    grant_ok = params.get("grant_type") == GRANT_TYPE
    if not grant_ok:
        error = OAuthError(400, "unsupported_grant_type", "Invalid grant_type", state=state,
                           headers=NO_STORE)
    client_id, secret, from_header = _client_credentials(params)
    client, authenticated = None, False
    if client_id:
        throttle = get_limiter().failed_auth
        attempt = throttle.attempt(client_id, request.remote_addr, services.clock())
        if attempt.retry_after is not None:  # refused
            raise _throttled(attempt.retry_after, state)
        client = services.store.get_client(client_id) if _storable(client_id) else None
        slots = _secret_checks()
        if not slots.acquire(blocking=False):  # a fast answer, not a queue of 16 MiB hashes
            throttle.succeeded(attempt)  # nothing was checked: no failure to count
            raise busy(state)
        try:
            # One scrypt for every presented id, known or not, with or without a secret:
            # the time of the answer must not tell which client ids exist.
            # A secret the shim generated has a fast digest (``hash_generated_secret``).
            verified = credentials.verify_secret(
                secret or "",
                client.secret_digest if client else credentials.UNKNOWN_CLIENT_DIGEST,
                services.settings.encryption_key)
        finally:
            slots.release()
        authenticated = client is not None and bool(secret) and verified
        if authenticated:
            throttle.succeeded(attempt)
    if client is None and not grant_ok:
        error = _invalid_client(from_header, state)
    if client is not None and not authenticated:
        error = _invalid_client(from_header, state)
    if error is not None:
        raise error
    if client is None:
        raise _invalid_client(False, state)
    granted = _requested_scopes(params, client.scopes, state)
    token = credentials.new_token()
    ttl = services.settings.token_ttl_s
    services.store.save_token(
        credentials.token_digest(token),
        IssuedToken(client_id=client.client_id, scopes=granted,
                    expires_at=services.clock() + ttl),
    )
    body: dict[str, object] = {"access_token": token, "token_type": "bearer",
                               "expires_in": ttl}
    if state is not None:
        body["state"] = state
    return body, 200, NO_STORE


def _storable(client_id: str) -> bool:
    """Return whether ``client_id`` could be a stored id at all.

    Anything else (a NUL, which PostgreSQL text refuses; a lone surrogate from a JSON body,
    which no driver can encode; kilobytes of text) is an unknown client, not a database error.
    """
    return len(client_id) <= MAX_CLIENT_ID_CHARS and client_id.isprintable()


def _throttled(retry_after: int, state: str | None) -> OAuthError:
    """Return the refusal of a throttled client authentication: 429 ``temporarily_unavailable``.

    Kong had no such throttle, so the answer is ours. 429 with ``Retry-After`` (RFC 6585)
    says "not now" in HTTP terms; the body keeps the token endpoint's OAuth2 shape with
    RFC 6749's ``temporarily_unavailable``, not ``invalid_client``: the secret was not
    checked, and a client with the right secret must not conclude that it is wrong. The
    answer is the same whatever the secret, so it tells a guesser nothing.
    """
    return OAuthError(429, "temporarily_unavailable",
                      f"Too many failed client authentications: retry in {retry_after} s",
                      state=state, headers={**NO_STORE, "Retry-After": str(retry_after)})


def token_rate_limited() -> OAuthError:
    """Return the front's refusal of a token call past its rate: 429 ``temporarily_unavailable``.

    Kong ran its oauth2 plugin before rate-limiting, so its token endpoint never answered 429:
    the answer is ours, and it is the throttle's (``_throttled``), the token endpoint's OAuth2
    shape with Retry-After, whether nginx or the app refuses. nginx cannot echo ``state``.
    """
    return OAuthError(429, "temporarily_unavailable", "Too many token requests: retry in 1 s",
                      headers={**NO_STORE, "Retry-After": "1"})


def _secret_checks() -> threading.BoundedSemaphore:
    """Return this app's (so this process's) semaphore over secret hashing."""
    extensions = current_app.extensions
    slots: threading.BoundedSemaphore | None = extensions.get(SECRET_CHECKS)
    if slots is None:  # setdefault: two first calls at once still share one semaphore
        slots = extensions.setdefault(
            SECRET_CHECKS, threading.BoundedSemaphore(get_services().settings.secret_checks))
    return slots


def busy(state: str | None = None,
         detail: str = "Too many client authentications in progress: retry in 1 s",
         ) -> OAuthError:
    """Return the refusal when every secret-check slot (or, with another ``detail``, the
    process's share for token calls) is taken: 503 ``temporarily_unavailable``.

    RFC 6749 pairs ``temporarily_unavailable`` with a 503 ("temporarily overloaded"), and the
    body keeps the token endpoint's OAuth2 shape, as the throttle's 429 does; the secret was
    not checked, so nothing is said about it.
    """
    return OAuthError(503, "temporarily_unavailable", detail, state=state,
                      headers={**NO_STORE, "Retry-After": "1"})


def _bearer_token(req: Request) -> str | None:
    """Return the token from the Authorization header, else the ``access_token`` parameter.

    As in Kong, a header that is not ``Bearer <t>``/``Token <t>`` is taken whole (and then
    fails as an invalid token), and a body parameter overrides the query's.
    """
    header = req.headers.get("Authorization")
    if header is not None:
        parts = header.split()
        if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
            return parts[1]
        return header
    token = req.args.get("access_token")
    if req.method in BODY_METHODS and req.mimetype in FORM_TYPES:
        token = req.form.get("access_token", token)
    return token


def authenticate() -> Caller:
    """Return the caller of this request, or raise Kong's 401."""
    services = get_services(current_application())
    token = _bearer_token(current_request())
    if token is None:
        raise OAuthError(401, "invalid_request", "The access token is missing",
                         headers={"WWW-Authenticate": BEARER_REALM})
    current_g().bearer_token = token  # whichever way it came, so the record tool can scrub it
    found = services.store.find_caller(credentials.token_digest(token), services.clock())
    if found is None:
        raise OAuthError(
            401, "invalid_token", INVALID_TOKEN,
            headers={"WWW-Authenticate": f'{BEARER_REALM} error="invalid_token" '
                                         f'error_description="{INVALID_TOKEN}"'},
        )
    issued, client = found
    return Caller(client_id=client.client_id, scopes=issued.scopes, seller=client.seller)


def check_scope(view: Callable[..., object]) -> None:
    """Raise the service's 403 Problem when the caller's token lacks the view's scope."""
    scope = getattr(view, SCOPE_ATTRIBUTE, None)
    if scope and scope not in current_g().caller.scopes:
        raise Problem(403, "Forbidden", f"the access token does not grant the scope {scope}")
