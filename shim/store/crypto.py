"""Encryption at rest for seller tokens and app secrets (Fernet, from ``cryptography``).

Keys come from the environment (``SHIM_ENCRYPTION_KEY``: one or more Fernet keys separated by
commas, the first used to encrypt, all tried to decrypt, so keys can be rotated).
"""

from __future__ import annotations

from typing import overload

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SealError(Exception):
    """Raised when a stored value cannot be decrypted with any configured key."""


def new_key() -> str:
    """Return a fresh Fernet key (URL-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


class Sealer:
    """Encrypts and decrypts short secrets with the configured keys."""

    def __init__(self, keys: str) -> None:
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise ValueError("no encryption key given")
        try:
            self._fernet = MultiFernet([Fernet(part.encode("ascii")) for part in parts])
        except (ValueError, UnicodeEncodeError):
            raise ValueError("an encryption key is not a valid Fernet key "
                             "(make one with: redmart-shim new-key)") from None

    @overload
    def seal(self, plaintext: str) -> str: ...
    @overload
    def seal(self, plaintext: None) -> None: ...
    def seal(self, plaintext: str | None) -> str | None:
        """Return ``plaintext`` encrypted (``None`` stays ``None``)."""
        if plaintext is None:
            return None
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    @overload
    def open(self, sealed: str) -> str: ...
    @overload
    def open(self, sealed: None) -> None: ...
    def open(self, sealed: str | None) -> str | None:
        """Return the plaintext of a sealed value (``None`` stays ``None``)."""
        if sealed is None:
            return None
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SealError("a stored secret cannot be decrypted with the configured keys") \
                from None
