"""Fixtures: a real sandbox upstream, a shim app wired to it, and clients for both.

Every secret is random per test session, so a test can never pass because a value was
hard-coded, and the secret scans can search for these exact values.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field

import pytest
import requests
from flask import request as flask_request
from flask import request_finished

from shim import credentials, scopes
from shim.app import create_app
from shim.config import Settings
from shim.record.settings import APP_KEY, OTHER_STORE_ID, STORE_ID, case_settings
from shim.sandbox import SandboxConfig, SandboxServer, SellerAccount
from shim.services import get_services
from shim.serving import LocalServer
from shim.store import Client, Seller, TokenGrant, open_store
from shim.store.crypto import new_key

pytest_plugins = ["processes"]  # the ``processes`` fixture: every child process of a test

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


def sandbox_config(test_secrets: Secrets, **knobs) -> SandboxConfig:
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


@pytest.fixture
def sandbox(test_secrets):
    """A fresh sandbox per test, so stock changes and faults never leak between tests."""
    with SandboxServer(sandbox_config(test_secrets)) as server:
        yield server


def ledger(sandbox, after: int = 0) -> list[dict]:
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
store_id = "414"
access_token = {{ env = "SHIM_MAIN_ACCESS_TOKEN" }}

[[clients]]
client_id = "full"
client_secret_digest = "{digest}"
seller = "main"
"""


def write_declarative_config(path, api_url: str, client_digest: str) -> None:
    """Write a one-seller, one-client TOML file for a shim process; its secrets come from
    SHIM_APP_SECRET and SHIM_MAIN_ACCESS_TOKEN."""
    path.write_text(DECLARATIVE_CONFIG.format(app_key=APP_KEY, api_url=api_url,
                                              digest=client_digest))


def make_settings(test_secrets: Secrets, client_digest: str, upstream_url: str,
                  **overrides) -> Settings:
    """Return shim settings pointing at ``upstream_url`` with the test clients."""
    # A test may override the app secret (or a token) too: overrides win.
    values = {"app_secret": test_secrets.app_secret, "access_token": test_secrets.access_token,
              "other_access_token": test_secrets.other_access_token, **overrides}
    return case_settings(upstream_url=upstream_url, client_digest=client_digest, **values)


@pytest.fixture
def settings(test_secrets, client_digest, sandbox) -> Settings:
    return make_settings(test_secrets, client_digest, sandbox.api_url)


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

    def token(self, client_id: str = "full", scope: str | None = None) -> str:
        """Return a bearer token for ``client_id`` (cached per client and scope)."""
        key = (client_id, scope)
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


@pytest.fixture
def shim_server(app):
    """The shim on a real local socket."""
    with LocalServer(app) as server:
        yield server


@pytest.fixture
def legacy(shim_server, test_secrets):
    """A legacy client talking real HTTP to the shim, which talks to the sandbox."""
    legacy_client = LegacyClient(shim_server.base_url, test_secrets.client_secret)
    yield legacy_client
    legacy_client.close()


# --- database mode --------------------------------------------------------------------------

OPERATOR_TOKEN = "op-" + secrets.token_hex(16)
SESSION_SECRETS.add(OPERATOR_TOKEN)


def seed_registry(store, test_secrets: Secrets, client_digest: str, *,
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
def db_settings(test_secrets, client_digest, sandbox, tmp_path) -> Settings:
    """Settings for database mode on a fresh SQLite file, pointing at the sandbox."""
    return make_settings(test_secrets, client_digest, sandbox.api_url, sellers={}, clients={},
                         database_url=f"sqlite:///{tmp_path / 'shim.db'}",
                         encryption_key=new_key(), operator_token=OPERATOR_TOKEN,
                         authorize_url=sandbox.base_url + "/oauth/authorize")


@pytest.fixture
def db_store(db_settings, test_secrets, client_digest):
    """The database store of ``db_settings``, migrated and seeded."""
    store = open_store(db_settings)
    seed_registry(store, test_secrets, client_digest)
    yield store
    store.close()
