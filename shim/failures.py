"""The shim's own failures that reach a legacy client (the platform's are ``shim.upstream``'s).

Each has its legacy answer in ``shim.errors.OUTCOMES``; the layers below the legacy surface
raise them and the one error handler renders them. ``shim.locks.LockTimeout`` is one too. This
module imports nothing, so any layer can raise these without loading the web stack.
"""

from __future__ import annotations


class ReauthorizationNeeded(Exception):
    """Raised when only the seller can restore access: authorize the shim again."""

    def __init__(self, seller: str, reason: str) -> None:
        super().__init__(f"seller {seller!r} must authorize the shim again ({reason})")
        self.seller = seller
        self.reason = reason


class TokensUnavailable(Exception):
    """Raised when the access token has expired and a refresh could not be done just now."""


class RefreshUnanswered(TokensUnavailable):
    """Raised when a refresh needed now got no usable answer: the platform may have rotated
    the tokens anyway (then only a new authorization helps), or may not (then a retry does)."""


class Overloaded(Exception):
    """Raised to refuse a request at once, rather than queue it, when a bulkhead is full.

    ``scope`` names the bulkhead: ``instance`` (this worker process), ``seller``, ``client``,
    or ``lot`` (the waiters for one stock lot's lock, ``shim.locks.LockQueueFull``).
    """

    scope = "instance"

    def __init__(self, limit: int) -> None:
        super().__init__(f"{self.scope} at its limit of {limit} requests in flight")
        self.limit = limit


class InstanceBusy(Overloaded):
    """Raised when this process already serves its limit of API requests."""

    scope = "instance"


class SellerBusy(Overloaded):
    """Raised when the caller's seller already has its limit of requests in flight here."""

    scope = "seller"


class ClientBusy(Overloaded):
    """Raised when the calling client already has its limit of requests in flight here."""

    scope = "client"
