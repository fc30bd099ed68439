"""Seller authorization: the consent URL (with a ``state`` bound to the seller) and the
exchange of the returned code for tokens at ``/auth/token/create``.

Used by the operator endpoints and by the CLI (which also accepts a pasted code).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from marshmallow import ValidationError

from shim import credentials
from shim.schemas.tokens import RssTokenSchema
from shim.store.base import Store
from shim.store.records import Seller, TokenGrant
from shim.upstream import AccessTokenRefused, BusinessError, GatewayError, UpstreamError
from shim.upstream.client import LazadaClient, SellerCredentials

log = logging.getLogger(__name__)

# The cheapest read that names the store: a token of another store is refused by it.
ACCOUNT_CHECK_API = "/rss/pickupLocations/get"
STATE_TTL_S = 1800  # Lazada's codes live 30 minutes; a state need not outlive them
CALLBACK_PATH = "/operator/callback"
READ_ONLY = ("sellers come from the config file (declarative mode): put the seller's tokens "
             "there instead")


_token_answer = RssTokenSchema()


def grant_from(answer: dict[str, Any], now: float) -> TokenGrant:
    """Return the ``TokenGrant`` in a token answer received at ``now``; ``ValidationError``."""
    loaded = _token_answer.load(answer)
    return TokenGrant(
        access_token=loaded["access_token"],
        refresh_token=loaded["refresh_token"],
        access_expires_at=now + loaded["expires_in"],
        refresh_expires_at=now + loaded["refresh_expires_in"],
        account=loaded["account"],
        country=loaded["country"],
        user_info=loaded["user_info"],
    )


class AuthorizationError(Exception):
    """Raised when an authorization cannot complete; the message is safe to show."""


class PlatformUnreachable(AuthorizationError):
    """The code exchange failed in transport (down, slow, garbled): the code may still work."""


class WrongAccount(AuthorizationError):
    """The consent was given by an account whose token cannot serve the seller's store."""


class AccountUnconfirmed(AuthorizationError):
    """The new token could not be tried on the seller's store (the code is used up)."""


@dataclass(frozen=True)
class Claim:
    """A consumed ``state``: whose it was, and until when (to give it back on a retry)."""

    seller: str
    digest: str
    expires_at: float


@dataclass(frozen=True)
class ConsentLink:
    """Where to send the seller, and until when the link's state is accepted."""

    url: str
    expires_at: float


def consent_link(store: Store, *, seller: str, app_key: str, authorize_url: str, public_url: str,
                 now: float) -> ConsentLink:
    """Return a consent URL for ``seller``; its ``state`` is stored (as a digest), single use."""
    if store.read_only:
        raise AuthorizationError(READ_ONLY)
    if store.get_seller(seller) is None:
        raise AuthorizationError(f"no seller {seller!r}")
    state = secrets.token_urlsafe(32)
    expires_at = now + STATE_TTL_S
    store.save_auth_state(credentials.token_digest(state), seller, expires_at)
    query = urlencode({
        "response_type": "code",
        "force_auth": "true",
        "redirect_uri": public_url.rstrip("/") + CALLBACK_PATH,
        "client_id": app_key,
        "state": state,
    })
    return ConsentLink(f"{authorize_url}?{query}", expires_at)


def claim_state(store: Store, state: str, now: float) -> Claim:
    """Consume a callback's ``state``; return whose it was (``AuthorizationError`` if none)."""
    if store.read_only:
        raise AuthorizationError(READ_ONLY)
    digest = credentials.token_digest(state) if state else ""
    taken = store.take_auth_state(digest, now) if state else None
    if taken is None:
        raise AuthorizationError("this authorization link is unknown, used or expired: "
                                 "ask the operator for a new one")
    return Claim(seller=taken[0], digest=digest, expires_at=taken[1])


def give_back(store: Store, claim: Claim) -> None:
    """Make a claimed state usable again until its own expiry (the exchange can be retried)."""
    store.save_auth_state(claim.digest, claim.seller, claim.expires_at)


def seller_for_state(store: Store, state: str, now: float) -> str:
    """Return the seller a callback's ``state`` was issued for, consuming it."""
    return claim_state(store, state, now).seller


def exchange_code(store: Store, upstream: LazadaClient, *, seller: str, code: str,
                  now: float, claim: Claim | None = None) -> Seller:
    """Trade an authorization ``code`` for tokens and store them for ``seller``.

    ``claim``, the state that brought the code, is given back when the exchange fails in
    transport: the code was not used, so the same link can be tried again. The new token
    must read the seller's store before it replaces the old grant (``check_account``).
    """
    if store.read_only:
        raise AuthorizationError(READ_ONLY)
    record = store.get_seller(seller)
    if record is None:
        raise AuthorizationError(f"no seller {seller!r}")
    if not code or len(code) > 512 or not code.isprintable():
        raise AuthorizationError("the authorization code is missing or malformed")
    try:
        answer = upstream.create_token(code)
        grant = grant_from(answer, now)
    except GatewayError as error:
        log.warning("the platform refused an authorization code for seller %s: %s", seller,
                    error)
        raise AuthorizationError(f"the platform refused the code ({error.code})") from None
    except UpstreamError as error:  # down, slow or garbled: the code has not been used
        log.warning("exchanging an authorization code for seller %s failed: %s", seller, error)
        if claim is not None:
            give_back(store, claim)
        raise PlatformUnreachable(f"the platform could not be reached ({error.code}); "
                                  "reload this page in a minute to try again") from None
    except ValidationError:
        raise AuthorizationError("the platform's token answer was unreadable") from None
    try:
        check_account(upstream, record, grant)
    except AuthorizationError:
        if claim is not None:  # the link may be opened again, signed in as the right account
            give_back(store, claim)
        raise
    updated = store.store_grant(seller, grant, result="authorized")
    log.info("seller %s authorized the shim (account %s)", seller, grant.account)
    return updated


def check_account(upstream: LazadaClient, seller: Seller, grant: TokenGrant) -> None:
    """Refuse a new grant whose token cannot read the seller's store (another store's login).

    Stored, such a grant would replace a working one and fail every call of the seller's
    clients; refused, the old grant stays.
    """
    credentials_ = SellerCredentials(store_id=seller.store_id, access_token=grant.access_token)
    try:
        upstream.rss(ACCOUNT_CHECK_API, credentials_, {"page": 1, "pageSize": 1})
    except (BusinessError, AccessTokenRefused) as error:
        log.error("seller %s: consent given by account %s, whose token cannot serve store %s "
                  "(%s); refused, the previous authorization is kept", seller.name,
                  grant.account or "?", seller.store_id, error.code)
        raise WrongAccount(
            f"the Lazada account that consented ({grant.account or 'unknown'}) cannot serve "
            f"store {seller.store_id} of seller {seller.name!r}: sign in to Lazada as that "
            "store's account and open the authorization link again; nothing was changed"
        ) from None
    except UpstreamError as error:
        log.error("seller %s: could not confirm that the consenting account serves store %s "
                  "(%s); refused, the previous authorization is kept", seller.name,
                  seller.store_id, error)
        raise AccountUnconfirmed(
            f"the platform could not confirm that the consenting account serves store "
            f"{seller.store_id} ({error.code}); nothing was changed: open the authorization "
            "link again in a minute") from None
