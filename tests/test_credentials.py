"""Client-secret digests and bearer-token primitives (shim.credentials)."""

from __future__ import annotations

import hmac
import re
import string
from collections import Counter

import pytest

from shim import credentials

DIGEST = re.compile(r"scrypt\$[0-9a-f]{32}\$[0-9a-f]{64}")


@pytest.fixture(scope="module")
def stored():
    """One digest of a known secret (scrypt is slow on purpose: hash once)."""
    return credentials.hash_secret("s3cret-value")


def test_hash_then_verify_round_trip(stored):
    """A digest verifies the secret it was made from, and has the documented shape."""
    assert DIGEST.fullmatch(stored)
    assert "s3cret-value" not in stored
    assert credentials.verify_secret("s3cret-value", stored)


def test_hashes_are_salted():
    """Two digests of one secret differ, and both verify it."""
    first, second = (credentials.hash_secret("same") for _ in range(2))
    assert first != second
    assert credentials.verify_secret("same", first)
    assert credentials.verify_secret("same", second)


def test_explicit_salt_gives_a_repeatable_digest():
    """With a given salt the digest is deterministic (what ``hash-secret`` tests rely on)."""
    salt = bytes(range(16))
    digest = credentials.hash_secret("abc", salt=salt)
    assert digest == credentials.hash_secret("abc", salt=salt)
    assert digest.split("$")[1] == salt.hex()


@pytest.mark.parametrize("wrong", ["s3cret-valuE", "s3cret-value ", "", "s3cret"])
def test_wrong_secret_is_refused(stored, wrong):
    assert not credentials.verify_secret(wrong, stored)


@pytest.mark.parametrize("malformed", [
    "",
    "scrypt",
    "scrypt$00",
    "scrypt$zz$00",
    "scrypt$00$zz",
    "scrypt$0$00",  # odd-length hex
    "scrypt$00$00$00",
    "bcrypt$" + "00" * 16 + "$" + "00" * 32,
    "s3cret-value",  # a plain secret where a digest belongs
])
def test_malformed_digest_is_refused_without_raising(malformed):
    assert credentials.verify_secret("s3cret-value", malformed) is False


def test_truncated_digest_is_refused(stored):
    """A digest cut short (same salt) never matches."""
    assert not credentials.verify_secret("s3cret-value", stored[:-2])


def test_verify_compares_in_constant_time(stored, monkeypatch):
    """The digest comparison goes through ``hmac.compare_digest``, for right and wrong secrets."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(credentials.hmac, "compare_digest", spy)
    assert credentials.verify_secret("s3cret-value", stored)
    assert not credentials.verify_secret("other", stored)
    assert len(calls) == 2
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_new_tokens_have_kongs_form():
    """Kong issued exactly 32 ASCII alphanumerics; every token and secret has that form."""
    tokens = {credentials.new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9]{32}", token)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", credentials.new_client_id())


def test_token_characters_are_uniform_over_the_62():
    """Every one of the 62 characters turns up about equally often: no modulo bias.

    62 does not divide 256, so a byte taken modulo 62 would make the first 8 characters
    (``a``-``h``) about 25% more frequent than the rest. Over 64,000 characters each
    expected count is about 1,032 (standard deviation ~32); a bias of that size moves the
    first eight counts to ~1,250, far outside the 5-sigma band checked here, while an
    unbiased source stays inside it except with negligible probability.
    """
    counts = Counter("".join(credentials.new_token() for _ in range(2000)))
    assert set(counts) == set(string.ascii_letters + string.digits)
    expected = 64_000 / 62
    sigma = (expected * (1 - 1 / 62)) ** 0.5
    assert all(abs(count - expected) < 5 * sigma for count in counts.values()), counts


def test_token_digest_is_stable_and_hides_the_token():
    token = credentials.new_token()
    digest = credentials.token_digest(token)
    assert digest == credentials.token_digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert token not in digest
    assert digest != credentials.token_digest(token + "x")


# Secrets the shim generated: a fast keyed digest

KEY = "a" * 43 + "="  # the key text only seeds the HMAC key; any Fernet key has this form
OTHER_KEY = "b" * 43 + "="
FAST = re.compile(r"hmac-sha256\$[0-9a-f]{8}\$[0-9a-f]{64}")


def test_a_generated_secret_has_a_fast_keyed_digest_that_verifies():
    secret = credentials.new_token()
    digest = credentials.hash_generated_secret(secret, KEY)
    assert FAST.fullmatch(digest) and secret not in digest
    assert credentials.verify_secret(secret, digest, KEY)
    assert not credentials.verify_secret(secret[:-1] + "!", digest, KEY)
    assert not credentials.verify_secret(secret, digest)  # without the key: no match
    assert not credentials.verify_secret(secret, digest, OTHER_KEY)  # another key's digest


def test_a_fast_digest_costs_no_scrypt(monkeypatch):
    secret = credentials.new_token()
    digest = credentials.hash_generated_secret(secret, KEY)

    def no_scrypt(*args, **kwargs):
        raise AssertionError("a generated secret must not be checked with scrypt")

    monkeypatch.setattr(credentials.hashlib, "scrypt", no_scrypt)
    assert credentials.verify_secret(secret, digest, KEY)


def test_fast_digests_survive_a_key_rotation():
    """New key first, old key kept: digests made under the old key still verify."""
    secret = credentials.new_token()
    old = credentials.hash_generated_secret(secret, KEY)
    rotated = f"{OTHER_KEY},{KEY}"
    assert credentials.verify_secret(secret, old, rotated)
    new = credentials.hash_generated_secret(secret, rotated)
    assert new != old and credentials.verify_secret(secret, new, rotated)


def test_slow_digests_still_verify_with_keys_given(stored):
    assert credentials.verify_secret("s3cret-value", stored, KEY)
    assert not credentials.verify_secret("s3cret-valuE", stored, KEY)


def test_a_fast_digest_is_not_a_declarative_digest():
    """Settings files hold digests of chosen secrets (hash-secret): scrypt only."""
    assert not credentials.is_digest(credentials.hash_generated_secret("x" * 32, KEY))


def test_the_fast_keys_are_derived_once_per_key_text(monkeypatch):
    """The token endpoint checks fast digests on every call: no derivation after the first."""
    key = credentials.new_token()  # text no other test used, so nothing is cached for it yet
    secret = credentials.new_token()
    digest = credentials.hash_generated_secret(secret, key)
    real = hmac.new
    derivations = []

    def spy(key_bytes, msg=None, digestmod=""):
        if msg == credentials._FAST_KEY_LABEL:
            derivations.append(key_bytes)
        return real(key_bytes, msg, digestmod)

    monkeypatch.setattr(credentials.hmac, "new", spy)
    assert credentials.verify_secret(secret, digest, key)
    assert credentials.verify_secret(secret, digest, key)
    assert derivations == []
    rotated = f"{OTHER_KEY},{key}"  # a rotation is new text: derived, and the old digest holds
    assert credentials.verify_secret(secret, digest, rotated)
    assert len(derivations) == 2
