"""Issued-token and client-secret primitives: generation, digests, constant-time checks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping
from types import MappingProxyType

# Kong's oauth2 plugin issued tokens, client ids and client secrets of exactly 32 ASCII
# alphanumerics, and real clients depend on that form (one reads its cached token back with
# the length of the previous one). 32 draws from 62 carry about 190 bits.
KONG_ALPHABET = string.ascii_letters + string.digits
KONG_LENGTH = 32
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD_BYTES = 1 << 20
# What a secret presented for an unknown client id is checked against: a well-formed digest
# (so the check costs a full scrypt, like a real one) that no secret is known to match, so
# the time of an answer does not tell which client ids exist.
UNKNOWN_CLIENT_DIGEST = "scrypt$" + "00" * 16 + "$" + "00" * 32
# Secrets the shim generated (``new_token``: ~190 random bits) need no slow hash: nothing can
# search that space. Their digest is an HMAC-SHA256 under a key derived from each
# SHIM_ENCRYPTION_KEY (named in the digest, so digests made before a key rotation still
# verify while their key is configured); a leaked table without the key tells nothing.
FAST_SCHEME = "hmac-sha256"
_FAST_KEY_LABEL = b"redmart-shim client secret digest v1"


def return_hash_memory_to_the_os() -> None:
    """Make glibc serve each scrypt's 16 MiB by mmap, so it is returned when freed.

    By default glibc raises its mmap threshold after the first such block is freed; later
    blocks then come from per-thread arenas that keep the memory: a token flood left a worker
    at 788 MB. A fixed threshold turns that adjustment off. A no-op without glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def new_token() -> str:
    """Return a fresh bearer token or client secret: 32 ASCII alphanumerics, as Kong issued.

    ``secrets.choice`` draws each character uniformly (rejection sampling, no modulo bias)
    from the operating system's CSPRNG.
    """
    return "".join(secrets.choice(KONG_ALPHABET) for _ in range(KONG_LENGTH))


def new_client_id() -> str:
    """Return a fresh client id in the same form as ``new_token`` (Kong generated both)."""
    return new_token()


def token_digest(token: str) -> str:
    """Return the digest an issued token is stored and looked up by.

    A plain SHA-256 is enough here: the token is about 190 random bits, so there is nothing
    for a slow hash to protect, and the lookup runs on every request. Tokens issued before
    in another form (43 URL-safe characters) are looked up the same way, so they stay valid
    until they expire.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """Return a salted scrypt digest of a client secret, as ``scrypt$<salt>$<digest>``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


@functools.lru_cache(maxsize=8)
def _fast_keys(encryption_keys: str) -> Mapping[str, bytes]:
    """Return the HMAC keys derived from SHIM_ENCRYPTION_KEY's keys, by id, first key first.

    Cached by the key text: the token endpoint checks a fast digest on every call, and the
    derivation (two SHA-256s a key) need not run again for the same keys. A rotated
    SHIM_ENCRYPTION_KEY is other text, so it is derived afresh; the few entries bound what
    stays in memory (a process has one key text; the tests a handful).
    """
    keys = {}
    for part in (p.strip() for p in encryption_keys.split(",")):
        if part:
            key = hmac.new(part.encode("utf-8"), _FAST_KEY_LABEL, hashlib.sha256).digest()
            keys[hashlib.sha256(key).hexdigest()[:8]] = key
    return MappingProxyType(keys)  # shared by every caller: read-only


def hash_generated_secret(secret: str, encryption_keys: str) -> str:
    """Return the fast digest of a secret ``new_token`` made: ``hmac-sha256$<key id>$<mac>``.

    Only for generated secrets: a secret a person chose goes through ``hash_secret``.
    """
    key_id, key = next(iter(_fast_keys(encryption_keys).items()))
    mac = hmac.new(key, secret.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{FAST_SCHEME}${key_id}${mac}"


def is_digest(stored: str) -> bool:
    """Return whether ``stored`` has the shape ``hash_secret`` gives (and could ever match)."""
    parts = stored.split("$") if isinstance(stored, str) else []
    if len(parts) != 3 or parts[0] != "scrypt":
        return False
    try:
        return len(bytes.fromhex(parts[1])) >= 16 and len(bytes.fromhex(parts[2])) >= 32
    except ValueError:
        return False


def verify_secret(secret: str, stored: str, encryption_keys: str | None = None) -> bool:
    """Return whether ``secret`` matches a digest made by ``hash_secret`` or, given the
    encryption keys, ``hash_generated_secret`` (constant time).

    ``UNKNOWN_CLIENT_DIGEST`` takes as long as any slow digest and matches nothing.
    """
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    encoded = secret.encode("utf-8", "surrogatepass")  # a JSON lone surrogate must fail
    if scheme == FAST_SCHEME:
        key = _fast_keys(encryption_keys or "").get(salt_hex)
        if key is None:  # made under a key no longer configured
            return False
        digest = hmac.new(key, encoded, hashlib.sha256).digest()
    elif scheme == "scrypt":
        digest = hashlib.scrypt(encoded, salt=salt, **_SCRYPT)
    else:
        return False
    return hmac.compare_digest(digest, expected) and stored != UNKNOWN_CLIENT_DIGEST
