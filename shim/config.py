"""Settings: read once at start from a TOML file and the environment, validated, then frozen.

Each setting is declared once, as a field of ``Settings`` with a ``Setting`` in its metadata
(TOML table, environment variable, checks, meaning); coercion, validation, error messages and
the reference (``redmart-shim settings``, docs/settings.md) are all derived from that.

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

The ``[shim]`` table holds how the legacy API is served, ``[serve]`` gunicorn's values;
docs/settings.md lists every key.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tomllib
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, validate
from marshmallow import fields as mfields

from shim import credentials, scopes
from shim.store.crypto import Sealer
from shim.store.records import Client, Seller
from shim.upstream.endpoints import DEFAULT_API_URL, DEFAULT_AUTH_URL

HEADER_CASES = ("lower", "canonical")
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
DEFAULT_AUTHORIZE_URL = "https://auth.lazada.com/oauth/authorize"
SERVE_BIND = "0.0.0.0:8080"  # gunicorn's default: a container publishes it
DEV_BIND = "127.0.0.1:8080"  # Werkzeug's development server stays on this machine
FRONTS = ("nginx", "none")  # what serve puts on the public bind: shim/front.py
DEFAULT_THREADS = 64  # gunicorn threads per worker, unless the settings say otherwise
METRICS_DIR_PREFIX = "redmart-shim-metrics-"  # serve's metric files, in the temp folder
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# What tracing needs: the otel extra (shim.tracing imports these only with tracing on).
OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")
_DIGITS = re.compile(r"[0-9]{1,19}")
# SHIM_* variables that are not settings but are set on purpose: the file's path, the
# image's venv (docker/install.sh) and the test suite's knobs.
OTHER_VARIABLES = frozenset({"SHIM_CONFIG", "SHIM_VENV", "SHIM_TEST_DATABASE_URL",
                             "SHIM_TEST_REDIS_URL", "SHIM_FAULT_SOAK", "SHIM_CRASH_ROUNDS"})
# Seller tokens named as the README names them (SHIM_MAIN_ACCESS_TOKEN): the sandbox's
# credentials file exports them whole, whether or not a file refers to them.
SELLER_TOKEN_VARIABLE = re.compile(r"SHIM_[A-Z0-9_]+_(ACCESS|REFRESH)_TOKEN")


class ConfigError(ValueError):
    """Raised at start when the settings cannot work; the message says what to fix."""


# The declarative file describes the same records the database stores.
SellerSettings = Seller
ClientSettings = Client

Check = Callable[[Any], Any]  # a marshmallow validator; its error text says "must ..."
POSITIVE = validate.Range(min=0, min_inclusive=False, error="must be positive")
NOT_NEGATIVE = validate.Range(min=0, error="must not be negative")
AT_LEAST_ONE = validate.Range(min=1, error="must be at least 1")
HTTP_URL = validate.Regexp(r"https?://", error="must be an http(s) URL")


def host_port(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``:port`` alone means 127.0.0.1); ValueError if it is not one."""
    host, colon, port = text.rpartition(":")
    if not colon or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f"{text!r} is not host:port (port 0-65535)")
    return host or "127.0.0.1", int(port)


def normal_address(text: str) -> str:
    """Return ``host:port`` with the host written out (``:port`` gives 127.0.0.1:port)."""
    host, port = host_port(text)
    return f"{host}:{port}"


class _Address(validate.Validator):
    """``host:port``, as ``--bind`` takes it."""

    error = "must be host:port (port 0-65535; :port alone means 127.0.0.1)"

    def __call__(self, value: Any) -> Any:
        try:
            host_port(value)
        except ValueError:
            raise ValidationError(self.error) from None
        return value


class _SealingKey(validate.Validator):
    """A key ``redmart-shim new-key`` made."""

    error = "is not a valid key (make one with: redmart-shim new-key)"

    def __call__(self, value: Any) -> Any:
        try:
            Sealer(value)
        except ValueError:
            raise ValidationError(self.error) from None
        return value


@dataclass(frozen=True)
class Setting:
    """How one setting is written, checked and explained; kept in its field's metadata.

    ``secret``: never written in the file; ``reference`` lets the file name where the
    secret is (``{env = "NAME"}`` or ``{file = "PATH"}``) instead. ``password_url``: a URL
    that must not carry a password in the file.
    """

    meaning: str
    table: str = "shim"
    checks: tuple[Check, ...] = ()
    secret: bool = False
    reference: bool = False
    password_url: bool = False


def worker_timeouts(settings: Settings) -> tuple[int, int]:
    """Return gunicorn's worker timeout and graceful timeout, in seconds, for ``settings``.

    Timeouts nest from the inside out: the upstream deadline times the attempts a read may
    take, plus backoff, plus the stock-lot lock wait, stays below the worker timeout.
    """
    budget_s = (settings.read_timeout_s * (1 + settings.read_retries) + 2
                + settings.lock_timeout_s)
    return (settings.worker_timeout_s or int(budget_s) + 10,
            settings.graceful_timeout_s or int(budget_s) + 5)


def about(meaning: str, *checks: Check, table: str = "shim", secret: bool = False,
          reference: bool = False, password_url: bool = False) -> dict[str, Setting]:
    """Return field metadata declaring a setting."""
    return {"setting": Setting(meaning, table, checks, secret, reference, password_url)}


@dataclass(frozen=True)
class Settings:
    """Everything the app needs, validated."""

    app_key: str = field(metadata=about(
        "The app key of the Lazada Open Platform app.",
        validate.Length(min=1, error="is required"), table="upstream"))
    app_secret: str = field(repr=False, metadata=about(
        "The app secret that signs every platform call.",
        validate.Length(min=1, error="is required"), table="upstream", secret=True,
        reference=True))
    api_url: str = field(default=DEFAULT_API_URL, metadata=about(
        "The platform's API endpoint (its /rest address).", HTTP_URL, table="upstream"))
    auth_url: str = field(default=DEFAULT_AUTH_URL, metadata=about(
        "The platform's endpoint for token creation and refresh.", HTTP_URL,
        table="upstream"))
    sellers: Mapping[str, SellerSettings] = field(default_factory=dict)  # [[sellers]] tables
    clients: Mapping[str, ClientSettings] = field(default_factory=dict)  # [[clients]] tables
    header_case: str = field(default="lower", metadata=about(
        "Case of response header names: lower (as HTTP/2 delivers them) or canonical.",
        validate.OneOf(HEADER_CASES, error="must be one of " + ", ".join(HEADER_CASES))))
    token_ttl_s: int = field(default=7200, metadata=about(
        "Lifetime of an issued legacy access token, in seconds.", POSITIVE))
    secret_checks: int = field(default=4, metadata=about(
        "Client secrets hashed at once per process (a slow hash takes 16 MiB); past it the "
        "token endpoint answers 503 temporarily_unavailable with Retry-After.",
        AT_LEAST_ONE))
    mandatory_scope: bool = field(default=False, metadata=about(
        "Refuse token requests that name no scope (the legacy API granted every scope)."))
    max_body_bytes: int = field(default=16 * 1024, metadata=about(
        "Largest request body accepted, in bytes.", POSITIVE))
    connect_timeout_s: float = field(default=3.05, metadata=about(
        "Time to connect to the platform, in seconds.", POSITIVE))
    read_timeout_s: float = field(default=10.0, metadata=about(
        "Time to wait for the platform's answer, in seconds; gunicorn's worker timeout is "
        "derived from it.", POSITIVE))
    read_retries: int = field(default=2, metadata=about(
        "Extra attempts for an idempotent platform read that failed in transit.",
        NOT_NEGATIVE))
    breaker_failures: int = field(default=5, metadata=about(
        "Failed platform calls in a row (timeouts, transport failures, 5xx, backend failure "
        "codes; retries of one call count once) that open an API's circuit breaker: its calls "
        "then answer 503 at once. Per worker process.", AT_LEAST_ONE))
    breaker_open_s: float = field(default=10.0, metadata=about(
        "Seconds an open circuit breaker answers 503 (with Retry-After) before one probe call "
        "may close it.", POSITIVE))
    upstream_pool_size: int = field(default=64, metadata=about(
        "Connections kept per platform host: one per serving thread.", POSITIVE))
    lock_timeout_s: float = field(default=15.0, metadata=about(
        "Longest wait for a stock lot's write lock, in seconds.", POSITIVE))
    lot_queue: int = field(default=2, metadata=about(
        "PATCHes of one stock lot that may wait for its lock in each process (besides the "
        "one holding it); one more is answered 503 with Retry-After at once.", NOT_NEGATIVE))
    max_in_flight: int | None = field(default=None, metadata=about(
        "API requests each process serves at once; past it a 503 with Retry-After at once. "
        "Unset: the worker's threads minus a reserve (an eighth, at most 8: 56 of 64), so "
        "/healthz, /readyz and /metrics, which it does not count, always find a thread.",
        AT_LEAST_ONE))
    max_in_flight_per_seller: int | None = field(default=None, metadata=about(
        "API requests for one seller each process serves at once; past it a 503 with "
        "Retry-After. Unset: half of max_in_flight.", AT_LEAST_ONE))
    max_in_flight_per_client: int | None = field(default=None, metadata=about(
        "API requests of one client each process serves at once; past it Kong's 429 with "
        "Retry-After. Unset: a quarter of max_in_flight.", AT_LEAST_ONE))
    rate_limit_per_second: int = field(default=10, metadata=about(
        "Calls per second per client, on every route but pickup jobs.", POSITIVE))
    pickup_jobs_rate_limit_per_second: int = field(default=1, metadata=about(
        "Calls per second per client to the pickup jobs list.", POSITIVE))
    rate_limit_storage: str = field(default="memory://", metadata=about(
        "Where rate counters live: memory:// for one process, redis://host:6379/0 to "
        "share them between instances.", password_url=True))
    rate_limit_key_prefix: str = field(default="shim", metadata=about(
        "Prefix of the rate counters' keys in shared storage."))
    database_url: str | None = field(default=None, metadata=about(
        "sqlite:///path or postgresql://... for sellers, clients and tokens managed with the "
        "CLI; unset: declarative mode ([[sellers]] and [[clients]] in the file).",
        validate.Regexp("|".join(re.escape(scheme) for scheme in DATABASE_SCHEMES),
                        error="must be a sqlite:/// or postgresql:// URL"),
        password_url=True))
    store_timeout_s: float = field(default=5.0, metadata=about(
        "Wait for a busy SQLite file or a PostgreSQL connection, in seconds.", POSITIVE))
    store_pool_size: int = field(default=20, metadata=about(
        "PostgreSQL connections per process for lookups and writes.", AT_LEAST_ONE))
    lock_pool_size: int = field(default=8, metadata=about(
        "PostgreSQL connections per process for stock-lot locks (PATCHes).", AT_LEAST_ONE))
    encryption_key: str | None = field(default=None, repr=False, metadata=about(
        "Seals tokens at rest in the database (make one with: redmart-shim new-key).",
        _SealingKey(), secret=True))
    operator_token: str | None = field(default=None, repr=False, metadata=about(
        "Bearer token for /operator and /metrics; unset: both are closed.",
        validate.Length(min=16, error="must be at least 16 characters (make one with: "
                                      "openssl rand -hex 24)"),
        secret=True))
    public_url: str = field(default="http://127.0.0.1:8080", metadata=about(
        "The shim's public address, where the platform sends sellers back after consent.",
        HTTP_URL))
    trusted_proxy_hops: int = field(default=0, metadata=about(
        "Proxies in front whose X-Forwarded-For is believed.", NOT_NEGATIVE))
    authorize_url: str = field(default=DEFAULT_AUTHORIZE_URL, metadata=about(
        "The platform's seller consent page.", HTTP_URL))
    refresh_margin_s: float = field(default=48 * 3600, metadata=about(
        "Refresh a seller's access token this long before it expires, in seconds "
        "(Lazada suggests about 48 hours).", NOT_NEGATIVE))
    refresh_interval_s: float = field(default=300.0, metadata=about(
        "How often the refresher looks for tokens due, in seconds.", POSITIVE))
    auto_migrate: bool = field(default=True, metadata=about(
        "Apply pending database migrations at start."))
    background_tasks: bool = field(default=True, metadata=about(
        "Run the token refresher, usage flusher and purger threads (database mode)."))
    usage_flush_interval_s: float = field(default=10.0, metadata=about(
        "How often usage counts are written to the database, in seconds.", POSITIVE))
    purge_interval_s: float = field(default=600.0, metadata=about(
        "How often expired issued tokens and authorization states, and usage past its "
        "retention, are deleted, in seconds.", POSITIVE))
    usage_retention_days: int = field(default=90, metadata=about(
        "Keep the daily usage counts (calls per client, route and day) this many days.",
        POSITIVE))
    retire_after_days: int = field(default=14, metadata=about(
        "A legacy client that has not called for this many days is shown as ready to "
        "retire (status page, redmart-shim usage).", POSITIVE))
    tracing: bool = field(default=False, metadata=about(
        "Make an OpenTelemetry span per legacy request and per platform call, continuing "
        "the client's traceparent (needs the otel extra: pip install 'redmart-shim[otel]'); "
        "sent only with otlp_endpoint."))
    otlp_endpoint: str = field(default="", metadata=about(
        "Send the spans there, OTLP over HTTP: the whole URL, e.g. "
        "http://collector:4318/v1/traces (turns tracing on); empty: spans are not sent.",
        validate.Regexp(r"$|https?://", error="must be an http(s) URL"), password_url=True))

    log_level: str = field(default="info", metadata=about(
        "Lowest level of the log lines written (the CLI's, gunicorn's and the app's).",
        validate.Regexp("(?i)(" + "|".join(LOG_LEVELS) + ")$",
                        error="must be one of " + ", ".join(LOG_LEVELS))))
    bind: str | None = field(default=None, metadata=about(
        f"host:port to listen on (:port alone means 127.0.0.1); unset: {SERVE_BIND} with "
        f"gunicorn, {DEV_BIND} with serve --dev. serve --bind overrides it.",
        _Address(), table="serve"))
    workers: int | None = field(default=None, metadata=about(
        "gunicorn worker processes; unset: 2 when the state is shared (PostgreSQL and "
        "Redis), else 1 (more need shared state).", AT_LEAST_ONE, table="serve"))
    worker_class: str = field(default="gthread", metadata=about(
        "gunicorn worker class (gthread: chosen by measurement, bench/README.md).",
        table="serve"))
    threads: int | None = field(default=None, metadata=about(
        "Threads per gunicorn worker; unset: 64, or 1 with the sync worker class.",
        AT_LEAST_ONE, table="serve"))
    worker_connections: int = field(default=1000, metadata=about(
        "Simultaneous clients per worker of the gevent/eventlet classes.", POSITIVE,
        table="serve"))
    worker_timeout_s: int | None = field(default=None, metadata=about(
        "Seconds a worker may spend on one request before gunicorn restarts it; unset: "
        "derived from read_timeout_s, read_retries and lock_timeout_s, plus 10.",
        POSITIVE, table="serve"))
    graceful_timeout_s: int | None = field(default=None, metadata=about(
        "Seconds in-flight requests get to finish on SIGTERM; unset: derived like "
        "worker_timeout_s, plus 5.", POSITIVE, table="serve"))
    access_log: str = field(default="-", metadata=about(
        "Where gunicorn's access lines go: - (standard error, as JSON lines like the "
        "others), a file, or empty for none.", table="serve"))
    forwarded_allow_ips: str = field(default="127.0.0.1", metadata=about(
        "Addresses gunicorn believes X-Forwarded-Proto/-For from (comma separated, * for "
        "any).", table="serve"))
    front: str = field(default="nginx", metadata=about(
        "What faces clients: nginx (serve runs it on bind, buffering each whole request "
        "with header and body deadlines and a per-address connection cap, in front of "
        "gunicorn on a private socket) or none (gunicorn on bind: only behind a proxy of "
        "your own that does the same).",
        validate.OneOf(FRONTS, error="must be one of " + ", ".join(FRONTS)), table="serve"))
    front_nginx: str = field(default="", metadata=about(
        "The nginx executable serve runs as the front; empty: nginx on PATH, else in "
        "/usr/sbin, /usr/local/sbin or /usr/local/nginx/sbin.", table="serve"))
    front_connections_per_address: int = field(default=64, metadata=about(
        "Requests one client address may have in progress at the nginx front (headers "
        "read, answer not yet sent); past it the legacy 429. /healthz, /readyz and /metrics "
        "are neither counted nor refused. Sockets still sending headers are bounded by "
        "front_header_timeout_s instead.", AT_LEAST_ONE, table="serve"))
    front_token_rate_per_address: int = field(default=2, metadata=about(
        "Token calls (POST /oauth2/token) per second one client address may make at the "
        "nginx front, beyond front_token_burst_per_address at once; past it nginx answers "
        "429 temporarily_unavailable with Retry-After and gunicorn never sees the call. A "
        "legacy client fetches a token an hour (or on a 401).", AT_LEAST_ONE, table="serve"))
    front_token_burst_per_address: int = field(default=20, metadata=about(
        "Token calls one client address may make at once above "
        "front_token_rate_per_address (a fleet behind one NAT fetching at the same "
        "moment).", NOT_NEGATIVE, table="serve"))
    front_token_rate: int = field(default=10, metadata=about(
        "Token calls per second the nginx front passes to gunicorn from all addresses "
        "together, beyond front_token_burst at once; past it the same 429. Bounds a flood "
        "from many addresses (an unknown client id still costs a slow hash).",
        AT_LEAST_ONE, table="serve"))
    front_token_burst: int = field(default=40, metadata=about(
        "Token calls from all addresses together passed at once above front_token_rate.",
        NOT_NEGATIVE, table="serve"))
    front_header_timeout_s: int = field(default=10, metadata=about(
        "Seconds the nginx front waits for a request's headers (and between two reads of "
        "them) before closing the connection.", POSITIVE, table="serve"))
    front_body_timeout_s: int = field(default=10, metadata=about(
        "Seconds the nginx front waits between two reads of a request's body (408 after).",
        POSITIVE, table="serve"))

    @property
    def worker_threads(self) -> int:
        """Return gunicorn's threads per worker: the setting, else 64 (1 with sync)."""
        return self.threads or (1 if self.worker_class == "sync" else DEFAULT_THREADS)

    @property
    def in_flight_limits(self) -> tuple[int, int, int]:
        """Return the API requests one process serves at once: in all, per seller, per
        client (the settings, or what they default to)."""
        event_loop = self.worker_class in ("gevent", "eventlet")
        threads = self.worker_connections if event_loop else self.worker_threads
        instance = self.max_in_flight or max(1, threads - min(8, max(1, threads // 8)))
        return (instance, self.max_in_flight_per_seller or max(1, instance // 2),
                self.max_in_flight_per_client or max(1, instance // 4))

    def __post_init__(self) -> None:
        # An empty optional value means unset, as it does in the environment.
        _values, errors = _validate(
            {declared.name: getattr(self, declared.name) or None if declared.optional
             else getattr(self, declared.name) for declared in DECLARED}, from_text=False)
        _check(not errors, "; ".join(errors))
        for seller in self.sellers.values():
            _check(bool(_DIGITS.fullmatch(seller.store_id)),
                   f"seller {seller.name!r}: store_id must be digits")
            _check(bool(seller.access_token), f"seller {seller.name!r}: access_token is empty")
        for client in self.clients.values():
            _check(client.seller in self.sellers,
                   f"client {client.client_id!r}: unknown seller {client.seller!r}")
            unknown = sorted(client.scopes - set(scopes.ALL))
            _check(not unknown, f"client {client.client_id!r}: unknown scopes {unknown}")
            _check(credentials.is_digest(client.secret_digest),
                   f"client {client.client_id!r}: client_secret_digest is not a digest made "
                   "by redmart-shim hash-secret")
        _check(not (self.tracing or self.otlp_endpoint) or all(map(_installed, OTEL_MODULES)),
               "tracing is on but OpenTelemetry is not installed: install the otel extra "
               "(pip install 'redmart-shim[otel]') or turn tracing off")
        if self.database_url:
            _check(bool(self.encryption_key),
                   "SHIM_ENCRYPTION_KEY is required with a database (make one with: "
                   "redmart-shim new-key)")
            _check(not self.sellers and not self.clients,
                   "sellers and clients come from the database when database_url is set; "
                   "remove them from the file (add them with the CLI)")


@dataclass(frozen=True)
class Declared:
    """One setting as the code reads it: its field, type and declaration together."""

    name: str
    kind: type
    optional: bool
    default: Any  # dataclasses.MISSING: required
    setting: Setting

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "SHIM_" + self.name.upper()

    @property
    def in_file(self) -> bool:
        """Whether the file may hold it (as a value, or as a reference for a secret)."""
        return not self.secret or self.setting.reference

    @property
    def secret(self) -> bool:
        """Whether its value must never be shown."""
        return self.setting.secret

    @property
    def label(self) -> str:
        """How messages name it: its place in the file, or its variable if env-only."""
        return f"{self.setting.table}.{self.name}" if self.in_file else self.env

    @property
    def type_name(self) -> str:
        """The kind of value, in words."""
        return _KIND_WORDS[self.kind]


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _declared() -> tuple[Declared, ...]:
    hints = typing.get_type_hints(Settings)
    found = []
    for spec in fields(Settings):
        if "setting" not in spec.metadata:
            continue  # the [[sellers]] and [[clients]] tables
        kinds = typing.get_args(hints[spec.name]) or (hints[spec.name],)
        kind = next(kind for kind in kinds if kind is not type(None))
        found.append(Declared(spec.name, kind, type(None) in kinds, spec.default,
                              spec.metadata["setting"]))
    return tuple(found)


DECLARED = _declared()
BY_NAME = {declared.name: declared for declared in DECLARED}
TABLES = tuple(dict.fromkeys(declared.setting.table for declared in DECLARED))
# Settings the file may hold in [[sellers]] / [[clients]] tables.
SELLER_KEYS = {
    "name": "The seller's name, which clients' seller refers to.",
    "store_id": "The RedMart store id (Seller Center: Switch Store), digits.",
    "access_token": 'The seller\'s access token, as {env = "NAME"} or {file = "PATH"}.',
    "refresh_token": "Its refresh token, as a reference too; optional.",
}
CLIENT_KEYS = {
    "client_id": "The legacy client's id.",
    "client_secret": 'Its secret, as {env = "NAME"} or {file = "PATH"}; or instead:',
    "client_secret_digest": "its digest (redmart-shim hash-secret), safe to commit.",
    "scopes": "Scopes it may be granted; default: every scope.",
    "seller": "The seller (a [[sellers]] name) its calls act for.",
    "enabled": "false refuses its token requests; default true.",
}


class _Boolean(mfields.Boolean):
    """true or false: a TOML boolean, or in the environment 1/true/yes/on or 0/false/no/off."""

    def __init__(self, *, from_text: bool, **kwargs: Any) -> None:
        self.from_text = from_text
        super().__init__(truthy={"1", "true", "yes", "on"}, falsy={"0", "false", "no", "off"},
                         **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        if self.from_text and isinstance(value, str):
            return super()._deserialize(value.strip().lower(), attr, data, **kwargs)
        # TOML's "false" is text, and text is true: only a real boolean counts.
        if not self.from_text and isinstance(value, bool):
            return value
        raise self.make_error("invalid")


class _Float(mfields.Float):
    """A number: TOML's integers and floats, or in the environment a decimal."""

    def __init__(self, *, from_text: bool, **kwargs: Any) -> None:
        self.from_text = from_text
        super().__init__(**kwargs)

    def _validated(self, value: Any) -> float:
        if not self.from_text and not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._validated(value)


def _field(declared: Declared, *, from_text: bool) -> mfields.Field[Any]:
    """The marshmallow field that coerces and checks one setting."""
    wrong = f"must be {declared.type_name}"
    options: dict[str, Any] = {
        "allow_none": declared.optional, "validate": list(declared.setting.checks),
        "error_messages": {"invalid": wrong, "null": wrong, "special": wrong,
                           "too_large": wrong}}
    if declared.kind is bool:
        return _Boolean(from_text=from_text, **options)
    if declared.kind is int:
        return mfields.Integer(strict=not from_text, **options)
    if declared.kind is float:
        return _Float(from_text=from_text, **options)
    return mfields.String(**options)


_SCHEMAS = {from_text: Schema.from_dict(
    {declared.name: _field(declared, from_text=from_text) for declared in DECLARED},
    name="EnvironmentSettings" if from_text else "FileSettings")()
    for from_text in (False, True)}


def _validate(values: Mapping[str, Any], *, from_text: bool,
              labels: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Return the values coerced to their types, and a message for each that is wrong."""
    try:
        return _SCHEMAS[from_text].load(values, partial=True), []
    except ValidationError as error:
        messages = typing.cast(dict[str, list[str]], error.messages)
    found = []
    for declared in DECLARED:
        for message in messages.get(declared.name, []):
            label = (labels or {}).get(declared.name, declared.label)
            value = values[declared.name]
            shown = "" if declared.secret or value in ("", None) else f", got {value!r}"
            found.append(f"{label} {message}{shown}")
    return {}, found


def _installed(module: str) -> bool:
    """Return whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
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
    _known_keys(document, {*TABLES, "sellers", "clients"}, "the config file")
    for table in TABLES:
        _known_keys(document.get(table, {}), {declared.name for declared in DECLARED
                                              if declared.setting.table == table},
                    f"[{table}]")
    _known_variables(env, _references(document))
    values: dict[str, Any] = {"sellers": _sellers(document, env),
                              "clients": _clients(document, env)}
    from_file, file_errors = _validate(_from_file(document, env), from_text=False)
    from_env, env_errors = _validate(
        {declared.name: _env_text(declared, env[declared.env])
         for declared in DECLARED if declared.env in env},
        from_text=True, labels={declared.name: declared.env for declared in DECLARED})
    _check(not file_errors + env_errors, "; ".join(file_errors + env_errors))
    for declared in DECLARED:
        if declared.default is MISSING and declared.name not in values:
            values[declared.name] = ""  # refused as required, with its name
    values.update(from_file)
    values.update(from_env)
    values.update(overrides)
    return Settings(**values)


def from_environment(name: str, env: Mapping[str, str] | None = None) -> Any:
    """Return one setting from the environment alone, checked; its default when unset.

    For what is needed before the settings are loaded (the CLI's logging).
    """
    env = os.environ if env is None else env
    declared = BY_NAME[name]
    if declared.env not in env:
        return declared.default
    values, errors = _validate({name: _env_text(declared, env[declared.env])},
                               from_text=True, labels={name: declared.env})
    _check(not errors, "; ".join(errors))
    return values[name]


def _env_text(declared: Declared, text: str) -> str | None:
    # An empty variable clears an optional setting (SHIM_DATABASE_URL= : declarative mode).
    return None if declared.optional and not text.strip() else text


def _from_file(document: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The settings the file's tables hold, secrets resolved from their references."""
    found: dict[str, Any] = {}
    for declared in DECLARED:
        table = document.get(declared.setting.table, {})
        if declared.name not in table:
            continue
        _check(declared.in_file, f"{declared.name} is a secret: set it in {declared.env}, "
                                 "never in the file")
        if declared.secret:
            if declared.env not in env:  # the variable wins; its reference is not needed
                found[declared.name] = _secret(table, declared.name, env)
            continue
        if declared.name == "app_key" and isinstance(table["app_key"], int):
            found["app_key"] = str(table["app_key"])  # app keys are numbers; TOML may say so
            continue
        _check(not declared.setting.password_url or not _has_password(table[declared.name]),
               f"{declared.name} holds a password: set it in {declared.env} instead, "
               "never in the file")
        found[declared.name] = table[declared.name]
    return found


def _sellers(document: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Seller]:
    sellers: dict[str, Seller] = {}
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
    return sellers


def _clients(document: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Client]:
    clients: dict[str, Client] = {}
    for entry in document.get("clients", []):
        _known_keys(entry, CLIENT_KEYS, "[[clients]]")
        client_id = _required(entry, "client_id", "clients[]")
        _check(client_id not in clients, f"client {client_id!r} is defined twice")
        _check(not ("client_secret" in entry and "client_secret_digest" in entry),
               f"client {client_id!r}: give client_secret_digest or client_secret, not both")
        _check(isinstance(entry.get("enabled", True), bool),
               f"client {client_id!r}: enabled must be true or false")
        digest = entry.get("client_secret_digest") or credentials.hash_secret(
            _secret(entry, "client_secret", env) or "")
        clients[client_id] = ClientSettings(
            client_id=client_id,
            secret_digest=digest,
            scopes=frozenset(entry.get("scopes", scopes.ALL)),
            seller=_required(entry, "seller", f"client {client_id!r}"),
            enabled=entry.get("enabled", True),
        )
    return clients


def _references(document: Mapping[str, Any]) -> set[str]:
    """The environment variables the file's secret references name."""
    entries = [document.get(table, {}) for table in TABLES]
    entries += list(document.get("sellers", [])) + list(document.get("clients", []))
    return {value["env"] for entry in entries if isinstance(entry, dict)
            for value in entry.values()
            if isinstance(value, dict) and isinstance(value.get("env"), str)}


def known_variables() -> frozenset[str]:
    """Every SHIM_* variable the shim reads: the settings' and the few others."""
    return frozenset(declared.env for declared in DECLARED) | OTHER_VARIABLES


def is_known_variable(name: str) -> bool:
    """Whether the shim reads (or expects to find) this SHIM_* variable."""
    return name in known_variables() or bool(SELLER_TOKEN_VARIABLE.fullmatch(name))


def _known_variables(env: Mapping[str, str], referenced: set[str]) -> None:
    """Refuse a SHIM_* variable nothing reads: a typo would otherwise be ignored."""
    known = known_variables() | {name for name in referenced if name.startswith("SHIM_")}
    for name in sorted(env):
        if name.startswith("SHIM_") and name not in known and not is_known_variable(name):
            # Compared without the prefix, which every name shares.
            nearest = difflib.get_close_matches(
                name.removeprefix("SHIM_"), sorted(other[5:] for other in known), n=1)
            hint = f" (did you mean SHIM_{nearest[0]}?)" if nearest else ""
            raise ConfigError(f"unknown environment variable {name}{hint}; the settings "
                              "are listed by: redmart-shim settings")


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


def _known_keys(table: Any, known: Collection[str], where: str) -> None:
    """Refuse a key nothing reads: a typo would otherwise be ignored without a word."""
    _check(isinstance(table, dict), f"{where} must be a table")
    unknown = sorted(set(table) - set(known))
    _check(not unknown, f"{where}: unknown setting(s) {', '.join(unknown)}")


def _has_password(url: Any) -> bool:
    return isinstance(url, str) and urlsplit(url).password is not None
