"""What a recording keeps out of its cases: every secret and every personal value.

``RULES`` is the one list, shown as a table in fixtures/README.md. Rules of kind ``drop`` are
applied by the recorder as it builds a case (it imports their constants from here); the others
by ``Scrubber``, over every member name, parameter and string of the case, platform answers
and the shim's answer alike. A replaced value gets a placeholder that is stable for the
whole recording (same input, same placeholder), so relations between fields survive: an order
id in a platform answer and in the shim's answer become the same ``order-3``. Placeholders are
strings; only ``storeId`` keeps its JSON type.

Before a case is written, ``Scrubber.leaks`` looks once more for every secret value the
recorder knows and for anything shaped like a signature: a case that still holds one is not
written at all.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

STORE_ID = "414"  # the store of the seller the runners (verify, contract tests) act for

KEPT_REQUEST_HEADERS = ("Content-Type", "If-Match")
KEPT_RESPONSE_HEADERS = ("content-type", "etag", "retry-after", "allow", "www-authenticate")
# Kong also read the bearer token from this parameter.
LEGACY_TOKEN_PARAM = "access_token"  # noqa: S105 (a parameter name)
DROPPED_PLATFORM_PARAMS = ("app_key", "timestamp", "sign_method", "sign", "access_token",
                           "partner_id")
MIN_SECRET_CHARS = 8  # shorter known values are not secrets; replacing them would garble text
MIN_PERSONAL_CHARS = 5

DROP, STORE, REPLACE, KEEP = "drop", "store", "replace", "keep"
SIGN_LIKE = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")


def normalized(name: str) -> str:
    """Return a member or parameter name as rules compare it: lower case, letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _names(*names: str) -> frozenset[str]:
    return frozenset(normalized(name) for name in names)


@dataclass(frozen=True)
class Rule:
    """One line of the scrub table: what is looked at, what matches, what it becomes."""

    name: str
    kind: str  # DROP (the recorder), STORE, REPLACE (Scrubber) or KEEP (documented only)
    looks_at: str
    matches: str
    becomes: str
    names: frozenset[str] = frozenset()  # normalized member/parameter names
    patterns: tuple[re.Pattern[str], ...] = ()  # matched anywhere inside text
    placeholder: str | None = None  # format with {n}
    known_values: bool = False  # also replaces values registered at run time
    optional: bool = False  # only with --scrub-addresses


RULES: tuple[Rule, ...] = (
    Rule("request-headers", DROP, "legacy request headers",
         "every header but " + ", ".join(KEPT_REQUEST_HEADERS)
         + " (Authorization, Cookie, X-Forwarded-For, X-Request-Id, ...)", "not written"),
    Rule("legacy-token", DROP, "legacy query and form parameters",
         f"`{LEGACY_TOKEN_PARAM}` (Kong's other place for the bearer token)",
         "not written (the runner authenticates with a token of its own)"),
    Rule("system-params", DROP, "platform call parameters",
         ", ".join(f"`{name}`" for name in DROPPED_PLATFORM_PARAMS),
         "not written (the replay checks them itself)"),
    Rule("token-calls", DROP, "platform calls",
         "`/auth/token/*` (authorization codes, refresh tokens, token pairs, the account)",
         "never written: a legacy call during which the shim refreshed a token is skipped"),
    Rule("response-headers", DROP, "the shim's answer headers",
         "every header but " + ", ".join(KEPT_RESPONSE_HEADERS)
         + " (x-request-id, date, x-ratelimit-*: volatile or set by the settings)",
         "not written"),
    Rule("store", STORE, "member and parameter names", "`storeId`, `store_id`",
         f'"{STORE_ID}" (the runners\' store; a number stays a number)',
         names=_names("storeId")),
    Rule("secret-names", REPLACE, "member and parameter names",
         "`access_token`, `refresh_token`, `client_secret`, `app_secret`, `sign`, `password`, "
         "`secret`, `token`, `authorization`, `api_key`",
         "`secret-N`",
         names=_names("access_token", "refresh_token", "client_secret", "app_secret", "sign",
                      "password", "secret", "token", "authorization", "api_key"),
         placeholder="secret-{n}"),
    Rule("known-secrets", REPLACE, "all text",
         "the app secret(s), every seller's access and refresh token (settings or database), "
         "the operator token and encryption key, every bearer token a legacy caller sent, "
         "every `access_token` and `sign` the shim sent",
         "`secret-N`; a case still holding one afterwards is not written",
         placeholder="secret-{n}", known_values=True),
    Rule("secret-shapes", REPLACE, "all text",
         "a Lazada token (`5000[01]` + 40 or more letters and digits), an authorization code "
         "(`0_<app key>_<random>`), 64 hex digits (signatures, digests)",
         "`secret-N`",
         patterns=(re.compile(r"\b5000[01][0-9A-Za-z]{40,}\b"),
                   re.compile(r"\b0_\d+_[A-Za-z0-9_-]{20,}"), SIGN_LIKE),
         placeholder="secret-{n}"),
    Rule("account", REPLACE, "member and parameter names; all text",
         "`account`, `account_id`, `email`, `e_mail`, `login`, `username`; the account "
         "e-mail and short codes the database holds for each seller",
         "`account-N`",
         names=_names("account", "account_id", "email", "login", "username"),
         placeholder="account-{n}", known_values=True),
    Rule("seller", REPLACE, "member and parameter names",
         "`seller_id`, `user_id`, `short_code`, `sellerId`, `userId`, `shortCode`",
         "`seller-N`",
         names=_names("seller_id", "user_id", "short_code"), placeholder="seller-{n}"),
    Rule("order", REPLACE, "member and parameter names",
         "`orderId`, `order_id`, `orderNumber` (pickup jobs' `shipmentsInfo`)", "`order-N`",
         names=_names("orderId", "orderNumber", "orderNo"), placeholder="order-{n}"),
    Rule("person", REPLACE, "member and parameter names",
         "`contactName`, `contactPerson`, `customerName`, `buyerName`, `recipientName`, "
         "`firstName`, `lastName`, `fullName`",
         "`person-N`",
         names=_names("contactName", "contactPerson", "customerName", "buyerName",
                      "recipientName", "firstName", "lastName", "fullName"),
         placeholder="person-{n}"),
    Rule("email", REPLACE, "all text", "an e-mail address anywhere",
         "`email-N@example.invalid`",
         patterns=(re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),),
         placeholder="email-{n}@example.invalid"),
    Rule("phone", REPLACE, "member and parameter names; all text",
         "`phone`, `mobile`, `telephone`, `tel`, `fax`, `contactNumber`; a number written "
         "with a `+` country code anywhere (bare digit runs are ids, SKUs and barcodes: kept)",
         "`+000N` (N on 7 digits)",
         names=_names("phone", "phoneNumber", "mobile", "telephone", "tel", "fax",
                      "contactNumber"),
         patterns=(re.compile(r"(?<![\w+])\+\d[\d ().-]{6,}\d"),),
         placeholder="+000{n:07d}"),
    Rule("address", REPLACE, "members of an object holding `addressLine1`",
         "`name`, `addressLine1`, `addressLine2`, `postalCode` of a pickup location",
         "kept by default: a pickup location is the seller's business address, which the "
         "contract shows; `address-N` with `--scrub-addresses` (a home address)",
         names=_names("name", "addressLine1", "addressLine2", "postalCode"),
         placeholder="address-{n}", optional=True),
    Rule("business", KEEP, "everything else",
         "ids of products, pickup locations, stock lots and pickup jobs, SKUs, barcodes, "
         "titles, quantities, dates, the platform's `request_id`",
         "kept: the business data the contract is about"),
)

_BY_NAME = {rule.name: rule for rule in RULES}
_QUOTED_MEMBER = re.compile(r'"([A-Za-z0-9_-]{1,64})"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d+)')


def rule(name: str) -> Rule:
    """Return the rule called ``name``."""
    return _BY_NAME[name]


@dataclass
class Scrubber:
    """Applies ``RULES`` to the parts of cases; one per recording, so placeholders are stable."""

    scrub_addresses: bool = False
    _placeholders: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _known: dict[str, Rule] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def add_secrets(self, values: Iterable[str | None]) -> None:
        """Register secret values: replaced wherever they occur, and checked by ``leaks``."""
        self._add(values, rule("known-secrets"), MIN_SECRET_CHARS)

    def add_personal(self, values: Iterable[str | None]) -> None:
        """Register personal values (account e-mails, short codes) to replace anywhere."""
        self._add(values, rule("account"), MIN_PERSONAL_CHARS)

    def _add(self, values: Iterable[str | None], owner: Rule, minimum: int) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value) >= minimum:
                    self._known.setdefault(value, owner)

    # --- the parts of a case ----------------------------------------------------------------

    def json(self, value: Any) -> Any:
        """Return a JSON value with every rule applied to its members and strings."""
        if isinstance(value, dict):
            location = self.scrub_addresses and any(
                normalized(key) == "addressline1" for key in value)
            return {key: self.member(key, item, location=location)
                    for key, item in value.items()}
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def member(self, name: str, value: Any, *, location: bool = False) -> Any:
        """Return the value of member or parameter ``name`` after the name rules and text rules."""
        if isinstance(value, (dict, list)):
            return self.json(value)
        if value is None or isinstance(value, bool):
            return value
        key = normalized(name)
        if key in rule("store").names:
            return int(STORE_ID) if isinstance(value, int) else STORE_ID
        for candidate in RULES:
            if candidate.kind != REPLACE or key not in candidate.names:
                continue
            if candidate.optional and not location:
                continue
            return self._placeholder(candidate, str(value))
        return self.text(value) if isinstance(value, str) else value

    def params(self, values: dict[str, str]) -> dict[str, str]:
        """Return query or platform parameters (all text) after the rules."""
        return {name: str(self.member(name, value)) for name, value in values.items()}

    def text(self, text: str) -> str:
        """Return ``text`` with known values and every text pattern replaced."""
        with self._lock:
            for value in sorted(self._known, key=len, reverse=True):
                if value in text:
                    text = text.replace(value, self._placeholder(self._known[value], value))
        for candidate in RULES:
            for pattern in candidate.patterns:
                text = pattern.sub(self._replacer(candidate), text)
        return text

    def _replacer(self, owner: Rule) -> Callable[[re.Match[str]], str]:
        return lambda match: self._placeholder(owner, match.group(0))

    def body_text(self, text: str) -> str:
        """Return a body that is not JSON (HTML, a cut-off answer) after the rules.

        Members still readable in it (``"name": "value"``) get the name rules.
        """
        def member(match: re.Match[str]) -> str:
            name, colon, raw = match.groups()
            try:
                value = json.loads(raw)
            except ValueError:
                return match.group(0)
            replaced = self.member(name, value)
            if replaced == value:
                return match.group(0)
            return f'"{name}"{colon}{json.dumps(replaced, ensure_ascii=False)}'

        return self.text(_QUOTED_MEMBER.sub(member, text))

    def leaks(self, text: str) -> list[str]:
        """Return what in ``text`` must never be written: known secrets, signature shapes."""
        with self._lock:
            found = ["a known secret" for value, owner in self._known.items()
                     if owner.name == "known-secrets" and value in text]
        if SIGN_LIKE.search(text):
            found.append("64 hex digits (a signature or digest)")
        return found

    def _placeholder(self, owner: Rule, original: str) -> str:
        template = owner.placeholder
        if template is None:
            raise ValueError(f"scrub rule {owner.name} has no placeholder to replace with")
        with self._lock:
            placeholder = self._placeholders.get(original)
            if placeholder is None:
                count = self._counts.get(template, 0) + 1
                self._counts[template] = count
                placeholder = template.format(n=count)
                self._placeholders[original] = placeholder
            return placeholder


def table() -> str:
    """Return ``RULES`` as the Markdown table fixtures/README.md shows."""
    lines = ["| rule | looks at | matches | becomes |", "|---|---|---|---|"]
    lines += [f"| `{r.name}` | {r.looks_at} | {r.matches} | {r.becomes} |" for r in RULES]
    return "\n".join(lines)
