"""Lazada's request signature (HMAC-SHA256 over the API path and the sorted parameters)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGN_METHOD = "sha256"


def string_to_sign(api_path: str, params: Mapping[str, str]) -> str:
    """Return the API path followed by every ``name + value`` pair, sorted by name."""
    return api_path + "".join(name + params[name] for name in sorted(params))


def sign(api_path: str, params: Mapping[str, str], secret: str) -> str:
    """Return the uppercase hex HMAC-SHA256 signature Lazada expects in ``sign``.

    ``params`` must already hold text values, without ``sign`` and without empty values:
    the platform's Java side skips empty values, so signing them would never verify.
    """
    message = string_to_sign(api_path, params).encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return digest.upper()


def verify(api_path: str, params: Mapping[str, str], secret: str) -> bool:
    """Return whether ``params["sign"]`` is the uppercase signature of the other parameters."""
    given = params.get("sign", "")
    rest = {name: value for name, value in params.items() if name != "sign" and value != ""}
    # Bytes: compare_digest refuses non-ASCII str, and a caller's sign may be anything.
    return hmac.compare_digest(given.encode("utf-8"), sign(api_path, rest, secret).encode())
