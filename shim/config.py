"""Settings: read once at start from a TOML file and the environment, validated, then frozen.

Secrets never sit in the file itself: a secret member is a reference, ``{env = "NAME"}`` or
``{file = "/run/secrets/name"}``, resolved here. Client secrets may instead be given as a
``client_secret_digest`` (from ``redmart-shim hash-secret``), which is safe to commit.

    [upstream]
    app_key = "100001"
    app_secret = { env = "SHIM_APP_SECRET" }
    api_url = "https://api.lazada.sg/rest"      # default
    auth_url = "https://auth.lazada.com/rest"   # default

    [[sellers]]
    name = "main"
    store_id = "414"
    access_token = { env = "SHIM_MAIN_ACCESS_TOKEN" }

    [[clients]]
    client_id = "acme-erp"
    client_secret = { env = "SHIM_ACME_SECRET" }
    scopes = ["read:product", "read:stock-lot", "write:stock-lot"]
    seller = "main"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shim import credentials, scopes
from shim.store.crypto import Sealer
from shim.store.records import Client, Seller
from shim.upstream.client import DEFAULT_API_URL, DEFAULT_AUTH_URL

HEADER_CASES = ("lower", "canonical")
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
DEFAULT_AUTHORIZE_URL = "https://auth.lazada.com/oauth/authorize"
SECRET_FIELDS = ("app_secret", "encryption_key", "operator_token")
_DIGITS = re.compile(r"[0-9]{1,19}")


class ConfigError(ValueError):
    """Raised at start when the settings cannot work; the message says what to fix."""


# The declarative file describes the same records the database stores.
SellerSettings = Seller
ClientSettings = Client


@dataclass(frozen=True)
class Settings:
    """Everything the app needs, validated."""

    app_key: str
    app_secret: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    auth_url: str = DEFAULT_AUTH_URL
    sellers: Mapping[str, SellerSettings] = field(default_factory=dict)
    clients: Mapping[str, ClientSettings] = field(default_factory=dict)
    header_case: str = "lower"
    token_ttl_s: int = 7200
    mandatory_scope: bool = False
    max_body_bytes: int = 16 * 1024
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    read_retries: int = 2
    upstream_pool_size: int = 64  # connections kept per upstream host: one per serving thread
    lock_timeout_s: float = 15.0
    rate_limit_per_second: int = 10
    pickup_jobs_rate_limit_per_second: int = 1
    rate_limit_storage: str = "memory://"  # redis://host:6379/0 to share between instances
    rate_limit_key_prefix: str = "shim"
    database_url: str | None = None  # None: declarative mode (sellers and clients above)
    store_timeout_s: float = 5.0  # wait for a busy SQLite file or a PostgreSQL connection
    store_pool_size: int = 20  # PostgreSQL connections per process for lookups and writes
    lock_pool_size: int = 8  # PostgreSQL connections per process for stock-lot locks (PATCHes)
    encryption_key: str | None = field(default=None, repr=False)
    operator_token: str | None = field(default=None, repr=False)
    public_url: str = "http://127.0.0.1:8080"
    trusted_proxy_hops: int = 0  # proxies in front whose X-Forwarded-For is believed
    authorize_url: str = DEFAULT_AUTHORIZE_URL
    refresh_margin_s: float = 48 * 3600  # Lazada suggests refreshing ~48 h before expiry
    refresh_interval_s: float = 300.0
    auto_migrate: bool = True
    background_tasks: bool = True  # refresher, usage flusher and purger threads (database mode)
    usage_flush_interval_s: float = 10.0
    purge_interval_s: float = 600.0  # deletes expired issued tokens and authorization states

    def __post_init__(self) -> None:
        self._check_types()
        _check(bool(self.app_key), "upstream.app_key is required")
        _check(bool(self.app_secret), "upstream.app_secret is required")
        for name in ("api_url", "auth_url"):
            value = getattr(self, name)
            _check(value.startswith(("https://", "http://")),
                   f"upstream.{name} must be an http(s) URL, got {value!r}")
        _check(self.header_case in HEADER_CASES,
               f"header_case must be one of {', '.join(HEADER_CASES)}")
        _check(self.token_ttl_s > 0, "token_ttl_s must be positive")
        _check(self.store_pool_size >= 1 and self.lock_pool_size >= 1,
               "store_pool_size and lock_pool_size must be at least 1")
        for seller in self.sellers.values():
            _check(bool(_DIGITS.fullmatch(seller.store_id)),
                   f"seller {seller.name!r}: store_id must be digits")
            _check(bool(seller.access_token), f"seller {seller.name!r}: access_token is empty")
        for client in self.clients.values():
            _check(client.seller in self.sellers,
                   f"client {client.client_id!r}: unknown seller {client.seller!r}")
            unknown = sorted(client.scopes - set(scopes.ALL))
            _check(not unknown, f"client {client.client_id!r}: unknown scopes {unknown}")
        if self.database_url:
            _check(self.database_url.startswith(DATABASE_SCHEMES),
                   "database_url must start with sqlite:/// or postgresql://")
            _check(bool(self.encryption_key),
                   "SHIM_ENCRYPTION_KEY is required with a database (make one with: "
                   "redmart-shim new-key)")
            _check(not self.sellers and not self.clients,
                   "sellers and clients come from the database when database_url is set; "
                   "remove them from the file (add them with the CLI)")
        _check(self.refresh_margin_s >= 0, "refresh_margin_s must not be negative")
        for name in POSITIVE_FIELDS:
            _check(getattr(self, name) > 0, f"{name} must be positive")
        for name in ("read_retries", "trusted_proxy_hops"):
            _check(getattr(self, name) >= 0, f"{name} must not be negative")
        for name in ("public_url", "authorize_url"):
            _check(getattr(self, name).startswith(("https://", "http://")),
                   f"{name} must be an http(s) URL, got {getattr(self, name)!r}")
        _check(not self.operator_token or len(self.operator_token) >= 16,
               "SHIM_OPERATOR_TOKEN must be at least 16 characters (it guards /operator and "
               "/metrics; make one with: openssl rand -hex 24)")
        if self.encryption_key:
            try:
                Sealer(self.encryption_key)
            except ValueError:
                raise ConfigError("SHIM_ENCRYPTION_KEY is not a valid key (make one with: "
                                  "redmart-shim new-key)") from None
        for client in self.clients.values():
            _check(credentials.is_digest(client.secret_digest),
                   f"client {client.client_id!r}: client_secret_digest is not a digest made "
                   "by redmart-shim hash-secret")

    def _check_types(self) -> None:
        """Refuse a value of the wrong type: TOML's "false" is text, and text is true."""
        for name, spec in self.__dataclass_fields__.items():
            kind = str(spec.type).replace(" | None", "")
            value = getattr(self, name)
            if value is None and "None" in str(spec.type):
                continue
            expected = {"bool": (bool,), "int": (int,), "float": (int, float),
                        "str": (str,)}.get(kind)
            if expected is None:
                continue
            wrong = not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool))
            _check(not wrong, f"{name} must be {_KIND_NAMES[kind]}, got {value!r}")


# Settings that only make sense above zero (a limit of 0 or less refuses every call).
POSITIVE_FIELDS = ("token_ttl_s", "max_body_bytes", "connect_timeout_s", "read_timeout_s",
                   "upstream_pool_size", "lock_timeout_s", "rate_limit_per_second",
                   "pickup_jobs_rate_limit_per_second", "store_timeout_s", "refresh_interval_s",
                   "usage_flush_interval_s", "purge_interval_s")
_KIND_NAMES = {"bool": "true or false", "int": "a whole number", "float": "a number",
               "str": "text"}
# Settings the file may hold under [upstream] and [[sellers]] / [[clients]].
UPSTREAM_KEYS = frozenset({"app_key", "app_secret", "api_url", "auth_url"})
SELLER_KEYS = frozenset({"name", "store_id", "access_token", "refresh_token"})
CLIENT_KEYS = frozenset({"client_id", "client_secret", "client_secret_digest", "scopes",
                         "seller", "enabled"})
# Set only in the file (tables), never from one environment variable.
NOT_FROM_ENVIRONMENT = frozenset({"sellers", "clients"})
PASSWORD_URLS = ("database_url", "rate_limit_storage")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
         **overrides: Any) -> Settings:
    """Return settings from the TOML file at ``path`` (or ``$SHIM_CONFIG``) and ``env``."""
    env = os.environ if env is None else env
    path = path or env.get("SHIM_CONFIG")
    document: dict[str, Any] = {}
    if path:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
    upstream = document.get("upstream", {})
    shim = document.get("shim", {})
    _known_keys(document, {"upstream", "shim", "sellers", "clients"}, "the config file")
    _known_keys(upstream, UPSTREAM_KEYS, "[upstream]")
    _known_keys(shim, set(Settings.__dataclass_fields__) - UPSTREAM_KEYS - NOT_FROM_ENVIRONMENT,
                "[shim]")
    sellers = {}
    for entry in document.get("sellers", []):
        _known_keys(entry, SELLER_KEYS, "[[sellers]]")
        seller = SellerSettings(
            name=_required(entry, "name", "sellers[]"),
            store_id=str(_required(entry, "store_id", "sellers[]")),
            access_token=_secret(entry, "access_token", env),
            refresh_token=_secret(entry, "refresh_token", env, required=False),
        )
        _check(seller.name not in sellers, f"seller {seller.name!r} is defined twice")
        sellers[seller.name] = seller
    clients = {}
    for entry in document.get("clients", []):
        _known_keys(entry, CLIENT_KEYS, "[[clients]]")
        client_id = _required(entry, "client_id", "clients[]")
        _check(client_id not in clients, f"client {client_id!r} is defined twice")
        _check(not ("client_secret" in entry and "client_secret_digest" in entry),
               f"client {client_id!r}: give client_secret_digest or client_secret, not both")
        _check(isinstance(entry.get("enabled", True), bool),
               f"client {client_id!r}: enabled must be true or false")
        digest = entry.get("client_secret_digest") or credentials.hash_secret(
            _secret(entry, "client_secret", env))
        clients[client_id] = ClientSettings(
            client_id=client_id,
            secret_digest=digest,
            scopes=frozenset(entry.get("scopes", scopes.ALL)),
            seller=_required(entry, "seller", f"client {client_id!r}"),
            enabled=entry.get("enabled", True),
        )
    values: dict[str, Any] = {
        "app_key": str(env.get("SHIM_APP_KEY") or upstream.get("app_key", "")),
        "app_secret": env.get("SHIM_APP_SECRET") or _secret(upstream, "app_secret", env,
                                                            required=False) or "",
        "api_url": env.get("SHIM_API_URL") or upstream.get("api_url", DEFAULT_API_URL),
        "auth_url": env.get("SHIM_AUTH_URL") or upstream.get("auth_url", DEFAULT_AUTH_URL),
        "sellers": sellers,
        "clients": clients,
    }
    for name in Settings.__dataclass_fields__:
        if name in shim:
            _check(name not in SECRET_FIELDS,
                   f"{name} is a secret: set it in the environment, never in the file")
            _check(name not in PASSWORD_URLS or not _has_password(shim[name]),
                   f"{name} holds a password: set it in SHIM_{name.upper()} instead, "
                   "never in the file")
            values[name] = shim[name]
        env_name = "SHIM_" + name.upper()
        if env_name in env and name not in UPSTREAM_KEYS | NOT_FROM_ENVIRONMENT:
            values[name] = _coerce(env_name, Settings.__dataclass_fields__[name].type,
                                   env[env_name])
    values.update(overrides)
    return Settings(**values)


def _required(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry or entry[key] in ("", None):
        raise ConfigError(f"{where}: {key} is required")
    return entry[key]


def _secret(entry: Mapping[str, Any], key: str, env: Mapping[str, str], *,
            required: bool = True) -> str | None:
    """Resolve a secret reference: ``{env = NAME}`` or ``{file = PATH}``, never a literal."""
    reference = entry.get(key)
    if reference is None:
        if required:
            raise ConfigError(f"{key} is required (as {{env = \"NAME\"}} or {{file = \"PATH\"}})")
        return None
    if not isinstance(reference, dict) or set(reference) not in ({"env"}, {"file"}) \
            or not isinstance(next(iter(reference.values())), str):
        raise ConfigError(f"{key} must be {{env = \"NAME\"}} or {{file = \"PATH\"}}: "
                          "secrets are never written into the config file")
    if "env" in reference:
        value = env.get(reference["env"])
        if not value:
            raise ConfigError(f"{key}: environment variable {reference['env']} is not set")
        return value
    try:
        value = Path(reference["file"]).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {reference['file']}: {error.strerror}") from None
    if not value:
        raise ConfigError(f"{key}: {reference['file']} is empty")
    return value


def _coerce(env_name: str, kind: Any, text: str) -> Any:
    kind = str(kind).replace(" | None", "")
    word = text.strip().lower()
    if kind == "bool":
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{env_name} must be true or false, got {text!r}")
    try:
        if kind == "int":
            return int(word)
        if kind == "float":
            return float(word)
    except ValueError:
        raise ConfigError(f"{env_name} must be {_KIND_NAMES[kind]}, got {text!r}") from None
    return text


def _known_keys(table: Any, known: set[str] | frozenset[str], where: str) -> None:
    """Refuse a key nothing reads: a typo would otherwise be ignored without a word."""
    _check(isinstance(table, dict), f"{where} must be a table")
    unknown = sorted(set(table) - set(known))
    _check(not unknown, f"{where}: unknown setting(s) {', '.join(unknown)}")


def _has_password(url: Any) -> bool:
    return isinstance(url, str) and urlsplit(url).password is not None
