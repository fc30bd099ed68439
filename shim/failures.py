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
