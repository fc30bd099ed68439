"""Fixtures: a real sandbox upstream, a shim app wired to it, and clients for both.

Every secret is random per test session, so a test can never pass because a value was
hard-coded, and the secret scans can search for these exact values.

Test modules get all shared setup from the fixtures here (factories where a test needs to
choose: ``make_settings``, ``sandbox_config``, ``legacy_client``, ...), never by importing
this module; the app, store and client ids the contract cases name come from
``shim.record.settings``.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests
from flask import request as flask_request
from flask import request_finished
from isolation import root_logging_kept

from shim import credentials, scopes
from shim.app import create_app
from shim.config import Settings
from shim.record.settings import APP_KEY, OTHER_STORE_ID, STORE_ID, case_settings
from shim.sandbox import SandboxConfig, SandboxServer, SellerAccount
from shim.services import get_services
from shim.serving import LocalServer
from shim.store import Client, Seller, TokenGrant, open_store
from shim.store.crypto import new_key

PG_URL = os.environ.get("SHIM_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

# ``processes``: every child process of a test is stopped with it; ``browsing``: headless
# chromium, the shim on a socket for it, and screenshots kept after the run.
pytest_plugins = ["processes", "browsing"]

# --- every log record of the run, for the secret scan (tests/test_zz_secret_scan.py) --------

SESSION_SECRETS: set[str] = set()  # values that must never appear in any log line
LOG_LINES: list[str] = []
RESPONSES: list[tuple[str, str, int, str, bytes]] = []  # every shim response of the run


def _record_response(sender, response, **extra) -> None:
    # The shim's own app only: the sandbox's answers carry seller tokens by design.
    if (sender.import_name == "shim" and not response.is_streamed
            and not response.direct_passthrough):
        RESPONSES.append((flask_request.method, flask_request.path, response.status_code,
                          str(response.headers), response.get_data()))


class _CollectLogs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            LOG_LINES.append(self.format(record))
        except Exception:  # pragma: no cover - a broken record must not hide the others
            LOG_LINES.append(repr(record.__dict__))


def pytest_configure(config):
    from shim.logs import JsonFormatter, RequestContextFilter
    from shim.upstream import redact

    redact.install()  # the test process's logging setup: urllib3's URL lines redacted

    handler = _CollectLogs(level=logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # every level, urllib3's URL lines included
    request_finished.connect(_record_response)


def pytest_collection_modifyitems(config, items):
    # The scan must see the logs of every other test: run it last.
    items.sort(key=lambda item: "test_zz_secret_scan" in item.nodeid
               or "::TestAfterTheRun::" in item.nodeid)


@pytest.fixture(autouse=True)
def _root_logging_kept():
    """A test that runs ``cli.main`` in this process leaves the run's logging as it was."""
    with root_logging_kept():
        yield


# Options that run part of what the given paths hold: (option's dest, how it is written).
NARROWING_OPTIONS = (("keyword", "-k"), ("markexpr", "-m"), ("deselect", "--deselect"),
                     ("ignore", "--ignore"), ("ignore_glob", "--ignore-glob"),
                     ("lf", "--lf"), ("stepwise", "--sw"))


@pytest.fixture(scope="session")
def run_selection(pytestconfig) -> list[str]:
    """Return what narrowed this run to part of the suite, as given on the command line:
    paths or node ids other than the testpaths, -k, -m, ... Empty when the run is the whole
    suite (``./scripts/test``), the one run in which checks over everything it produced can
    demand volume."""
    root = pytestconfig.rootpath
    whole = {(root / path).resolve() for path in pytestconfig.getini("testpaths") or ["."]}
    here = pytestconfig.invocation_params.dir
    narrowed = [str(arg) for arg in pytestconfig.args if (here / arg).resolve() not in whole]
    for dest, flag in NARROWING_OPTIONS:
        value = getattr(pytestconfig.option, dest, None)
        if value is True:
            narrowed.append(flag)
        elif value:
            narrowed += [f"{flag} {one}" for one in (value if isinstance(value, list) else [value])]
    return narrowed


@pytest.fixture(scope="session", autouse=True)
def nginx_installed() -> None:
    """``serve`` runs nginx in front of gunicorn: install it once if missing (apt-get)."""
    from shim.front import find_nginx

    if find_nginx() is None:
        ensure = Path(__file__).resolve().parent.parent / "scripts" / "ensure-nginx"
        subprocess.run([str(ensure)], timeout=900, stdout=subprocess.DEVNULL, check=False)


class FrozenClock:
    """A clock that moves only when told (rate windows, token expiry)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead."""
        self.now += seconds




@dataclass(frozen=True)
class Secrets:
    """Every secret the suite uses, generated per session."""

    app_secret: str = field(default_factory=lambda: "app-" + secrets.token_hex(16))
    access_token: str = field(default_factory=lambda: "at-" + secrets.token_hex(16))
    refresh_token: str = field(default_factory=lambda: "rt-" + secrets.token_hex(16))
    other_access_token: str = field(default_factory=lambda: "at2-" + secrets.token_hex(16))
    other_refresh_token: str = field(default_factory=lambda: "rt2-" + secrets.token_hex(16))
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_hex(16))
    operator_token: str = field(default_factory=lambda: "op-" + secrets.token_hex(16))

    def all(self) -> list[str]:
        """Return every secret value."""
        return list(self.__dict__.values())


@pytest.fixture(scope="session")
def test_secrets() -> Secrets:
    generated = Secrets()
    SESSION_SECRETS.update(generated.all())
    return generated


@pytest.fixture(scope="session")
def client_digest(test_secrets) -> str:
    # scrypt is slow on purpose: hash once per session.
    return credentials.hash_secret(test_secrets.client_secret)


@pytest.fixture(scope="session")
def operator_token(test_secrets) -> str:
    """The operator credential of the database-mode settings."""
    return test_secrets.operator_token


@pytest.fixture(scope="session")
def session_secrets() -> set[str]:
    """Values the secret scans look for: add every secret a test makes up or is issued."""
    return SESSION_SECRETS


@pytest.fixture(scope="session")
def log_lines() -> list[str]:
    """Every log record of the run so far, formatted as the shim's JSON lines."""
    return LOG_LINES


@pytest.fixture(scope="session")
def shim_responses() -> list[tuple[str, str, int, str, bytes]]:
    """Every response of the shim's app in the run so far: method, path, status, headers, body."""
    return RESPONSES


@pytest.fixture(scope="session")
def frozen_clock() -> type[FrozenClock]:
    """The class of clocks that move only when told: ``frozen_clock(now)``."""
    return FrozenClock


def _sandbox_config(test_secrets: Secrets, **knobs) -> SandboxConfig:
    """Return a sandbox config with the two test stores."""
    now = time.time()
    sellers = [
        SellerAccount(store_id=STORE_ID, access_token=test_secrets.access_token,
                      refresh_token=test_secrets.refresh_token,
                      access_expires_at=now + 864000, refresh_expires_at=now + 4320000),
        SellerAccount(store_id=OTHER_STORE_ID, access_token=test_secrets.other_access_token,
                      refresh_token=test_secrets.other_refresh_token,
                      access_expires_at=now + 864000, refresh_expires_at=now + 4320000),
    ]
    return SandboxConfig(app_key=APP_KEY, app_secret=test_secrets.app_secret, sellers=sellers,
                         **knobs)


@pytest.fixture(scope="session")
def sandbox_config(test_secrets) -> Callable[..., SandboxConfig]:
    """Return ``sandbox_config(**knobs)``: a sandbox config with the two test stores."""
    return functools.partial(_sandbox_config, test_secrets)


@pytest.fixture
def sandbox(sandbox_config):
    """A fresh sandbox per test, so stock changes and faults never leak between tests."""
    with SandboxServer(sandbox_config()) as server:
        yield server


@pytest.fixture(scope="session")
def ledger() -> Callable[..., list[dict]]:
    """Return ``ledger(sandbox, after=0)``: the platform calls a sandbox received."""
    return _ledger


def _ledger(sandbox, after: int = 0) -> list[dict]:
    """Return the platform calls the sandbox received after ``after``, via its control API."""
    answer = requests.get(sandbox.base_url + "/_sandbox/ledger", params={"after": after},
                          timeout=5)
    answer.raise_for_status()
    return answer.json()["entries"]


DECLARATIVE_CONFIG = """\
[upstream]
app_key = "{app_key}"
app_secret = {{ env = "SHIM_APP_SECRET" }}
api_url = "{api_url}"
auth_url = "{api_url}"

[[sellers]]
name = "main"
store_id = "{store_id}"
access_token = {{ env = "SHIM_MAIN_ACCESS_TOKEN" }}

[[clients]]
client_id = "{client_id}"
client_secret_digest = "{digest}"
seller = "main"
"""


@pytest.fixture(scope="session")
def write_declarative_config(client_digest) -> Callable[..., None]:
    """Return ``write_declarative_config(path, api_url, client_id=..., digest=...)``: a
    one-seller, one-client TOML file for a shim process (the "full" client by default); its
    secrets come from SHIM_APP_SECRET and SHIM_MAIN_ACCESS_TOKEN."""
    def write(path: Path, api_url: str, *, client_id: str = "full",
              digest: str | None = None) -> None:
        path.write_text(DECLARATIVE_CONFIG.format(
            app_key=APP_KEY, api_url=api_url, store_id=STORE_ID, client_id=client_id,
            digest=digest or client_digest))

    return write


@pytest.fixture(scope="session")
def make_settings(test_secrets, client_digest) -> Callable[..., Settings]:
    """Return ``make_settings(upstream_url, **overrides)``: settings with the test clients."""
    def make(upstream_url: str, **overrides) -> Settings:
        # A test may override the app secret (or a token) too: overrides win.
        values = {"app_secret": test_secrets.app_secret,
                  "access_token": test_secrets.access_token,
                  "other_access_token": test_secrets.other_access_token,
                  "client_digest": client_digest, **overrides}
        return case_settings(upstream_url=upstream_url, **values)

    return make


@pytest.fixture
def settings(make_settings, sandbox) -> Settings:
    return make_settings(sandbox.api_url)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    get_services(app).close()


@pytest.fixture
def client(app):
    """Flask's test client, for tests of the app in isolation."""
    return app.test_client()


class LegacyClient:
    """A legacy integration's view of the shim: real HTTP, tokens fetched on demand."""

    def __init__(self, base_url: str, client_secret: str) -> None:
        self.base_url = base_url
        self.client_secret = client_secret
        self.session = requests.Session()
        self._tokens: dict[tuple, str] = {}
        # One fetch per token, as an integration with a token cache does: threads that all
        # missed the cache at once would otherwise meet the token endpoint's hash cap (503).
        self._fetching = threading.Lock()

    def token(self, client_id: str = "full", scope: str | None = None) -> str:
        """Return a bearer token for ``client_id`` (cached per client and scope)."""
        key = (client_id, scope)
        with self._fetching:
            return self._cached_token(key, client_id, scope)

    def _cached_token(self, key: tuple, client_id: str, scope: str | None) -> str:
        if key not in self._tokens:
            form = {"grant_type": "client_credentials", "client_id": client_id,
                    "client_secret": self.client_secret}
            if scope:
                form["scope"] = scope
            answer = self.session.post(self.base_url + "/oauth2/token", data=form, timeout=10)
            assert answer.status_code == 200, answer.text
            self._tokens[key] = answer.json()["access_token"]
            SESSION_SECRETS.add(self._tokens[key])
        return self._tokens[key]

    def request(self, method: str, path: str, *, client_id: str = "full", headers=None,
                **kwargs) -> requests.Response:
        """Send an authenticated request to the shim."""
        headers = {"Authorization": f"Bearer {self.token(client_id)}", **(headers or {})}
        return self.session.request(method, self.base_url + path, headers=headers,
                                    timeout=15, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def close(self) -> None:
        self.session.close()


@pytest.fixture(scope="session")
def legacy_client(test_secrets) -> Iterator[Callable[[str], LegacyClient]]:
    """Return ``legacy_client(base_url)``: a legacy integration of the shim at ``base_url``
    (closed at the end of the run at the latest)."""
    made: list[LegacyClient] = []

    def make(base_url: str) -> LegacyClient:
        made.append(LegacyClient(base_url, test_secrets.client_secret))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def shim_server(app):
    """The shim on a real local socket."""
    with LocalServer(app) as server:
        yield server


@pytest.fixture
def legacy(shim_server, test_secrets):
    """A legacy client talking real HTTP to the shim, which talks to the sandbox."""
    client = LegacyClient(shim_server.base_url, test_secrets.client_secret)
    yield client
    client.close()


# --- database mode --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def seed_registry(test_secrets, client_digest) -> Callable[..., None]:
    """Return ``seed_registry(store, *, access_expires_at=None)``: register the main seller
    (with the sandbox's tokens) and the test clients."""
    return functools.partial(_seed_registry, test_secrets=test_secrets,
                             client_digest=client_digest)


def _seed_registry(store, *, test_secrets: Secrets, client_digest: str,
                   access_expires_at: float | None = None) -> None:
    """Register the main seller (with the sandbox's tokens) and the test clients."""
    now = time.time()
    store.add_seller(Seller(name="main", store_id=STORE_ID))
    store.store_grant("main", TokenGrant(
        access_token=test_secrets.access_token, refresh_token=test_secrets.refresh_token,
        access_expires_at=access_expires_at or now + 864000,
        refresh_expires_at=now + 4320000))
    for client_id, granted in (("full", scopes.ALL),
                               ("reader", [s for s in scopes.ALL if s.startswith("read:")])):
        store.add_client(Client(client_id=client_id, secret_digest=client_digest,
                                scopes=frozenset(granted), seller="main"))


@pytest.fixture
def db_settings(make_settings, operator_token, sandbox, tmp_path) -> Settings:
    """Settings for database mode on a fresh SQLite file, pointing at the sandbox."""
    return make_settings(sandbox.api_url, sellers={}, clients={},
                         database_url=f"sqlite:///{tmp_path / 'shim.db'}",
                         encryption_key=new_key(), operator_token=operator_token,
                         authorize_url=sandbox.base_url + "/oauth/authorize")


@pytest.fixture
def serve_environment(db_settings) -> Callable[..., dict[str, str]]:
    """Build the environment of a real ``serve`` on the test database, pointed at the sandbox.

    None of the caller's own ``SHIM_*`` variables pass through; ``extra`` adds or overrides.
    """
    def build(**extra: str) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("SHIM_")}
        env.update({
            "SHIM_APP_KEY": db_settings.app_key, "SHIM_APP_SECRET": db_settings.app_secret,
            "SHIM_API_URL": db_settings.api_url, "SHIM_AUTH_URL": db_settings.auth_url,
            "SHIM_DATABASE_URL": db_settings.database_url,
            "SHIM_ENCRYPTION_KEY": db_settings.encryption_key})
        env.update(extra)
        return env

    return build


@pytest.fixture
def db_store(db_settings, seed_registry):
    """The database store of ``db_settings``, migrated and seeded."""
    store = open_store(db_settings)
    seed_registry(store)
    yield store
    store.close()


@dataclass(frozen=True)
class PgSchema:
    """A schema of its own on the shared PostgreSQL server, for one test."""

    name: str
    server_url: str  # the server's database, without the schema

    @property
    def url(self) -> str:
        """Return a database URL whose every connection uses the schema (libpq options)."""
        return f"{self.server_url}?options={quote(f'-c search_path={self.name}')}"


@pytest.fixture
def pg_schema(request) -> Iterator[PgSchema]:
    """A fresh PostgreSQL schema, named after the test module, dropped with what it holds."""
    module = request.module.__name__.removeprefix("test_")
    name = f"shim_{module}_{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield PgSchema(name, PG_URL)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


# --- a whole stack for modules that share one (client-secret checks are slow) ----------------

DOC_LOT = (100150, 23789)  # the legacy documentation's stock lot, in the sandbox's seed


class Stack:
    """A sandbox, a shim wired to it, and a legacy client, with the sandbox's control API."""

    def __init__(self, sandbox: SandboxServer, settings: Settings, store, legacy_secret: str,
                 ) -> None:
        self.sandbox, self.settings, self.store = sandbox, settings, store
        self.app = create_app(settings, store=store)
        self.shim = LocalServer(self.app).start()
        self.legacy = LegacyClient(self.shim.base_url, legacy_secret)
        self.control_session = requests.Session()
        self.closed = False

    @property
    def upstream(self):
        """Return the shim's platform client."""
        return self.app.extensions["shim"].upstream

    def control(self, method: str, path: str, body=None, params=None) -> dict:
        """Call the sandbox's control API; return its JSON answer."""
        answer = self.control_session.request(method, self.sandbox.base_url + "/_sandbox" + path,
                                              json=body, params=params, timeout=10)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    def fault(self, **rule) -> None:
        """Add a fault rule to the sandbox."""
        self.control("POST", "/faults", rule)

    def ledger(self, after: int = 0) -> list[dict]:
        """Return the platform calls the sandbox received after ``after``."""
        return self.control("GET", "/ledger", params={"after": after})["entries"]

    def last_seq(self) -> int:
        """Return the sequence number of the sandbox's last ledger entry."""
        return self.control("GET", "/ledger", params={"after": 0})["last_seq"]

    def lot(self, product: int = DOC_LOT[0], location: int = DOC_LOT[1], *,
            store_id: str = STORE_ID) -> dict:
        """Return a stock lot as the sandbox holds it."""
        return self.control("GET", "/stock", params={
            "storeId": store_id, "productId": product, "pickupLocationId": location})

    def set_lot(self, product: int, location: int, **quantities) -> dict:
        """Change a lot's quantities as an outside writer would."""
        return self.control("POST", "/stock", {"storeId": STORE_ID, "productId": product,
                                               "pickupLocationId": location, **quantities})

    def session(self) -> requests.Session:
        """Return a new legacy session (one per thread) carrying the client's bearer token."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.legacy.token()}"
        return session

    def close(self) -> None:
        """Stop the shim and the sandbox, and close what they opened (once)."""
        if self.closed:
            return
        self.closed = True
        self.control_session.close()
        self.legacy.close()
        self.shim.stop()
        self.upstream.close()
        if hasattr(self.store, "close"):  # the declarative store holds nothing to close
            self.store.close()
        self.sandbox.stop()


@pytest.fixture(scope="session")
def make_stack(sandbox_config, make_settings, seed_registry, operator_token,
               test_secrets) -> Iterator[Callable[..., Stack]]:
    """Return ``make_stack(*, database=None, sandbox_knobs=None, **settings)``: a running
    stack, declarative unless ``database`` names an SQLite file for a seeded registry. Close
    it when done (what is left open is closed at the end of the run)."""
    made: list[Stack] = []

    def make(*, database: Path | None = None, sandbox_knobs: dict | None = None,
             **overrides) -> Stack:
        sandbox = SandboxServer(sandbox_config(**(sandbox_knobs or {}))).start()
        if database is not None:
            overrides = {"sellers": {}, "clients": {}, "encryption_key": new_key(),
                         "database_url": f"sqlite:///{database}",
                         "operator_token": operator_token,
                         **overrides}
        settings = make_settings(sandbox.api_url, **overrides)
        store = open_store(settings)
        if database is not None:
            seed_registry(store)
        made.append(Stack(sandbox, settings, store, test_secrets.client_secret))
        return made[-1]

    yield make
    for stack in made:
        stack.close()
