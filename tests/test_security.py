"""Security properties across the shim: constant-time secret checks, no plain-text secret at
rest, hostile request shapes refused before anything is signed, and after the run no
response or written file holding a secret.

The throttle on failed client authentication has its own module (test_auth_throttle.py).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests
from isolation import root_logging_kept
from secret_shapes import SHAPES
from served import GUNICORN, clean_env, free_port, running

import shim
from shim import cli, credentials, operator
from shim.app import create_app
from shim.record.settings import APP_KEY
from shim.sandbox import SandboxServer
from shim.serving import LocalServer
from shim.store import App, open_store
from shim.store.crypto import new_key
from shim.store.sql import dump_rows
from shim.upstream import client as upstream_client
from shim.upstream import signing

TOKEN_PATH = "/oauth2/token"
LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Invalid client authentication"}


def token_form(client_id: str, secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


@pytest.fixture(scope="module")
def shared(legacy_client, make_settings, sandbox_config):
    """One sandbox and one shim for the many one-request cases; limits raised, as they
    arrive faster than a client may call. Cases count ledger entries from their own start."""
    with SandboxServer(sandbox_config()) as sandbox:
        app = create_app(make_settings(sandbox.api_url,
                                       rate_limit_per_second=100_000,
                                       pickup_jobs_rate_limit_per_second=100_000))
        with LocalServer(app) as server:
            legacy = legacy_client(server.base_url)
            yield SimpleNamespace(sandbox=sandbox, server=server, token=legacy.token())
            legacy.close()
        app.extensions["shim"].upstream.session.close()


# --- constant time ---------------------------------------------------------------------------

SHIM_SOURCE = Path(shim.__file__).parent
SECRET_WORDS = re.compile(r"secret|token|digest|sign|password|credential", re.IGNORECASE)
# Every ==/!= in the package between a secret-named value and anything but a literal or a
# public constant, reviewed. A new one fails the test until it is reviewed (and uses
# hmac.compare_digest if an attacker could time it).
REVIEWED_COMPARISONS = {
    # The replay upstream stands in for the platform in contract tests and `verify`,
    # on loopback: not an authentication boundary.
    ("record/replay.py", "values['access_token'] != self._access_token"),
}


def _names(node: ast.AST) -> list[str]:
    return [inner.id if isinstance(inner, ast.Name) else inner.attr
            if isinstance(inner, ast.Attribute) else inner.value
            for inner in ast.walk(node)
            if isinstance(inner, ast.Name | ast.Attribute)
            or (isinstance(inner, ast.Constant) and isinstance(inner.value, str))]


def _public(node: ast.AST) -> bool:
    """A literal, or a constant by the naming convention (``SIGN_METHOD``, ``auth.TOKEN_PATH``)."""
    if isinstance(node, ast.Constant):
        return True
    name = node.id if isinstance(node, ast.Name) else node.attr \
        if isinstance(node, ast.Attribute) else ""
    return bool(name) and name.isupper()


def test_no_secret_is_compared_with_equality():
    found = set()
    for path in sorted(SHIM_SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Compare)
                    and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)):
                continue
            sides = (node.left, *node.comparators)
            if any(_public(side) for side in sides):
                continue
            if any(SECRET_WORDS.search(name) for side in sides for name in _names(side)):
                found.add((path.relative_to(SHIM_SOURCE).as_posix(), ast.unparse(node)))
    assert found == REVIEWED_COMPARISONS


@pytest.mark.parametrize("function", [credentials.verify_secret, operator.require_operator,
                                      signing.verify])
def test_secret_checks_use_compare_digest(function):
    """Client secrets, the operator credential and signatures are compared in constant time."""
    calls = [node for node in ast.walk(ast.parse(inspect.getsource(function).lstrip()))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "hmac.compare_digest"]
    assert len(calls) == 1


@pytest.fixture
def scrypt_calls(monkeypatch):
    """The scrypt runs of the test (a spy: the real function still runs)."""
    calls = []
    real = hashlib.scrypt

    def spy(*args, **kwargs):
        calls.append(kwargs.get("salt"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", spy)
    return calls


@pytest.mark.parametrize(("form", "status"), [
    ({"client_id": "full", "client_secret": "right"}, 200),
    ({"client_id": "full", "client_secret": "wrong"}, 400),
    ({"client_id": "nobody", "client_secret": "wrong"}, 400),
    ({"client_id": "nobody", "client_secret": "right"}, 400),
    ({"client_id": "a\x00b", "client_secret": "wrong"}, 400),
])
def test_every_presented_client_id_costs_one_scrypt(shared, test_secrets, scrypt_calls, form,
                                                    status):
    """Known or not, an id costs the same work: the time of the answer does not tell."""
    if form["client_secret"] == "right":
        form = {**form, "client_secret": test_secrets.client_secret}
    answer = requests.post(shared.server.base_url + TOKEN_PATH, timeout=10,
                           data={"grant_type": "client_credentials", **form})
    assert answer.status_code == status
    assert len(scrypt_calls) == 1


def test_a_basic_header_without_secret_still_costs_one_scrypt(shared, scrypt_calls):
    answer = requests.post(shared.server.base_url + TOKEN_PATH, timeout=10,
                           data={"grant_type": "client_credentials"}, auth=("full", ""))
    assert answer.status_code == 401
    assert len(scrypt_calls) == 1


def test_the_unknown_client_digest_matches_nothing():
    assert not credentials.verify_secret("", credentials.UNKNOWN_CLIENT_DIGEST)
    assert not credentials.verify_secret("anything", credentials.UNKNOWN_CLIENT_DIGEST)


# --- no plain-text secret at rest --------------------------------------------------------------


@contextmanager
def operator_env(monkeypatch, env: dict[str, str]):
    """Run CLI commands in this process with ``env`` and its logging restored after."""
    with monkeypatch.context() as patch, root_logging_kept():
        patch.delenv("SHIM_CONFIG", raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def run_cli(*args: str) -> dict:
    """Run a ``--json`` registry command as the operator would; return its document."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        status = cli.main([*args, "--json"])
    assert status == 0, stderr.getvalue()
    return json.loads(stdout.getvalue())


class DatabaseSuite:
    """Secrets pass through a database-mode shim; the database never holds one readable.

    Subclasses give ``database_url`` and ``raw_dump`` (what an attacker with the database's
    files or a backup would read).
    """

    @pytest.fixture
    def db(self, database_url, sandbox, make_settings, operator_token, seed_registry):
        """A migrated, seeded database store and the settings of a shim on it."""
        key = new_key()
        settings = make_settings(sandbox.api_url, sellers={},
                                 clients={}, database_url=database_url, encryption_key=key,
                                 operator_token=operator_token)
        store = open_store(settings)
        seed_registry(store)
        yield SimpleNamespace(settings=settings, store=store, key=key, url=database_url)
        store.close()

    def test_a_database_holds_no_secret_in_plain_text(self, db, raw_dump, test_secrets,
                                                      session_secrets, monkeypatch):
        other_app_secret = "app2-" + secrets.token_hex(16)
        session_secrets.add(other_app_secret)
        db.store.put_app(App("100002", other_app_secret))
        # The operator adds one client and rotates another, as documented.
        with operator_env(monkeypatch, {
                "SHIM_APP_KEY": APP_KEY, "SHIM_APP_SECRET": test_secrets.app_secret,
                "SHIM_DATABASE_URL": db.url, "SHIM_ENCRYPTION_KEY": db.key,
                "SHIM_LOG_LEVEL": "WARNING"}):
            added = run_cli("clients", "add", "erp", "--seller", "main")["client_secret"]
            rotated = run_cli("clients", "rotate", "reader")["client_secret"]
        session_secrets.update({added, rotated})
        app = create_app(db.settings, store=db.store)
        tokens = []
        with LocalServer(app) as server, requests.Session() as http:
            for client_id, secret in (("full", test_secrets.client_secret), ("erp", added),
                                      ("reader", rotated)):
                answer = http.post(server.base_url + TOKEN_PATH, timeout=10,
                                   data=token_form(client_id, secret))
                assert answer.status_code == 200, answer.text
                tokens.append(answer.json()["access_token"])
                session_secrets.add(tokens[-1])
                served = http.get(server.base_url + "/v1/pickup-locations", timeout=10,
                                  headers={"Authorization": f"Bearer {tokens[-1]}"})
                assert served.status_code == 200, served.text
            refused = http.post(server.base_url + TOKEN_PATH, timeout=10,
                                data=token_form("reader", test_secrets.client_secret))
            assert refused.status_code == 400  # the secret before the rotation
        app.extensions["shim"].usage.flush()
        app.extensions["shim"].upstream.session.close()
        plain = [*tokens, test_secrets.client_secret, added, rotated, test_secrets.app_secret,
                 other_app_secret, test_secrets.access_token, test_secrets.refresh_token,
                 db.key]
        rows = dump_rows(db.store, tables(db.store))
        raw = raw_dump(db.url)
        for token in tokens:  # the dumps are real: each token is there, as its digest
            assert credentials.token_digest(token) in rows
            assert credentials.token_digest(token).encode() in raw
        for value in plain:
            for form in (value, value.encode().hex()):
                assert form not in rows
                assert form.encode() not in raw

    def test_a_client_id_no_database_can_hold_is_an_unknown_client(self, db):
        """Not a 500 from the driver (PostgreSQL refuses NUL; no driver encodes a surrogate)."""
        app = create_app(db.settings, store=db.store)
        client = app.test_client()
        for client_id in ("a\x00b", "\ud800", "x" * 10_240, "full\n"):
            body = json.dumps(token_form(client_id, "x"))  # JSON: a lone surrogate survives
            answer = client.post(TOKEN_PATH, data=body, content_type="application/json")
            assert (answer.status_code, answer.json) == (400, INVALID_CLIENT), client_id[:20]
        app.extensions["shim"].upstream.session.close()


def tables(store) -> list[str]:
    """Return every table of the store's database (schema)."""
    query = ("SELECT name FROM sqlite_master WHERE type = 'table'"
             if store.backend.name == "sqlite" else
             "SELECT table_name AS name FROM information_schema.tables "
             "WHERE table_schema = current_schema()")
    with store.backend.transaction() as tx:
        names = sorted(row["name"] for row in tx.all(query))
    assert {"apps", "sellers", "clients", "issued_tokens", "usage"} <= set(names)
    return names


class TestSqliteDatabase(DatabaseSuite):
    @pytest.fixture
    def database_url(self, tmp_path):
        return f"sqlite:///{tmp_path / 'shim.db'}"

    @pytest.fixture
    def raw_dump(self):
        def dump(url: str) -> bytes:
            path = Path(url.removeprefix("sqlite:///"))
            # The database file and its write-ahead log: recent commits may be only there.
            files = [path, *path.parent.glob(path.name + "-*")]
            assert len(files) >= 2
            return b"".join(file.read_bytes() for file in files)
        return dump


class TestPostgresDatabase(DatabaseSuite):
    @pytest.fixture
    def database_url(self, pg_schema):
        return pg_schema.url

    @pytest.fixture
    def raw_dump(self, pg_schema, processes):
        def dump(url: str) -> bytes:
            # A backup as an operator makes one: pg_dump, data included (or, without the
            # client tools, the COPY of every table that pg_dump would write).
            if shutil.which("pg_dump"):
                return processes.run(["pg_dump", "--schema", pg_schema.name, "--no-owner",
                                      pg_schema.server_url],
                                     capture_output=True, check=True, timeout=60).stdout
            out = io.BytesIO()
            with psycopg.connect(url) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT table_name FROM information_schema.tables "
                               "WHERE table_schema = current_schema()")
                for (table,) in cursor.fetchall():
                    copy_sql = f"COPY {table} TO STDOUT"  # our own table names
                    with cursor.copy(copy_sql) as copy:
                        for data in copy:
                            out.write(bytes(data))
            return out.getvalue()
        return dump


# --- hostile request shapes: refused before anything is signed ---------------------------------


@pytest.fixture
def upstream_calls(shared, monkeypatch):
    """Return a function giving (signatures made, ledger entries) since the fixture started."""
    signed = []
    real = upstream_client.sign

    def spy(*args, **kwargs):
        signed.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(upstream_client, "sign", spy)
    ledger = shared.sandbox.state.ledger
    start = len(ledger())
    return lambda: (list(signed), [entry["api"] for entry in ledger()[start:]])


@pytest.fixture
def auth(shared):
    return {"Authorization": f"Bearer {shared.token}"}


def now_ms() -> int:
    return int(time.time() * 1000)


TEN_KB_ID = "1" * 10_240
REFUSED_BEFORE_SIGNING = [
    # ids carrying CR LF, NUL, or too many digits: 400, or the route's documented 404
    ("GET", "/v1/products/100150%0D%0AX-Injected:%201", 400),
    ("GET", "/v1/products/100150%00", 400),
    ("GET", "/v1/products/" + "1" * 30, 400),
    ("GET", "/v1/products/" + TEN_KB_ID, 400),
    ("GET", "/v1/pickup-jobs/1%0D%0A", 404),
    ("GET", "/v1/pickup-jobs/" + "9" * 30, 404),
    ("GET", "/v1/pickup-locations/23789%00", 404),
    ("GET", "/v1/pickup-locations/" + "1" * 30, 404),
    ("GET", "/v1/products/100150/pickup-locations/23789%0D%0A/stock-lots", 400),
    ("GET", "/v1/products/100150/pickup-locations/23789/stock-lots/0%00", 404),
    ("PATCH", "/v1/products/100150%0D%0A/pickup-locations/23789/stock-lots/0", 400),
    ("PATCH", "/v1/products/100150/pickup-locations/" + TEN_KB_ID + "/stock-lots/0", 400),
    # query values: CR LF, NUL, encoded separators, over-long, repeated known parameters
    ("GET", "/v1/products?page=1%0D%0A", 400),
    ("GET", "/v1/products?page=1%00", 400),
    ("GET", "/v1/products?page=1&page=2", 400),
    ("GET", "/v1/products?pageSize=" + TEN_KB_ID, 400),
    ("GET", "/v1/products?pickupLocations=23789%26page%3D2", 400),
    ("GET", "/v1/products?pickupLocations=23789%3B23790", 400),
    ("GET", "/v1/products?pickupLocations=23789%00", 400),
    ("GET", "/v1/products?pickupLocations=" + "1" * 30, 400),
    ("GET", "/v1/pickup-jobs?from={now}&from={now}", 400),
    ("GET", "/v1/pickup-jobs?from={now}%0D%0A", 400),
    ("GET", "/v1/pickup-jobs?from={now}&statuses=pending%26x%3D1", 400),
]


@pytest.mark.parametrize(("method", "target", "status"), REFUSED_BEFORE_SIGNING,
                         ids=lambda value: value[:60] if isinstance(value, str) else None)
def test_hostile_ids_and_query_values_are_refused_before_signing(
        shared, auth, upstream_calls, method, target, status):
    answer = requests.request(method, shared.server.base_url + target.format(now=now_ms()),
                              headers={**auth, "If-Match": '"10"'}, timeout=10,
                              json={"quantityAtPickupLocation": 5} if method == "PATCH" else None)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) <= {"title", "detail"}  # the service's Problem
    assert upstream_calls() == ([], [])


@pytest.mark.parametrize("target", ["/v1/products?pickupLocations=23789%0D%0A",
                                    "/v1/pickup-jobs?from={now}&statuses=pending%0D%0A"])
def test_cr_lf_around_a_list_item_is_refused(shared, auth, upstream_calls, target):
    answer = requests.get(shared.server.base_url + target.format(now=now_ms()), headers=auth,
                          timeout=10)
    assert answer.status_code == 400
    assert upstream_calls() == ([], [])


def test_a_repeated_unknown_parameter_is_ignored(shared, auth, upstream_calls):
    """The rule: only parameters the route knows are ambiguous when repeated."""
    answer = requests.get(shared.server.base_url + "/v1/products?foo=1&foo=2%0D%0A", headers=auth,
                          timeout=10)
    assert answer.status_code == 200
    signed, ledger = upstream_calls()
    assert ledger == ["/rss/products/get"] and len(signed) == 1


def test_an_injected_request_id_is_replaced_never_echoed(shared, auth):
    for given in ("abc%0D%0ASet-Cookie:%20pwn=1", "a b", "x" * 65, "id\tpwn"):
        answer = requests.get(shared.server.base_url + "/v1/products/100150", timeout=10,
                              headers={**auth, "X-Request-Id": given})
        assert answer.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
        assert "set-cookie" not in answer.headers


def test_a_malformed_if_match_is_refused_before_signing(shared, auth, upstream_calls):
    answer = requests.patch(shared.server.base_url + LOT, timeout=10,
                            json={"quantityAtPickupLocation": 5},
                            headers={**auth, "If-Match": '"10"%0D%0AX-Injected: 1'})
    assert answer.status_code == 400
    assert upstream_calls() == ([], [])


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection; return everything read until the server closes."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(data)
            while chunk := connection.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):  # refused before it was all sent
            received += _rest(connection)
    return received


def _rest(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except OSError:
        return b""


def status_lines(received: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.[01] \d{3}", received)


def smuggling(token: str) -> dict[str, bytes]:
    """Raw requests a conforming server refuses, or answers without ever serving their tail."""
    bearer = f"Authorization: Bearer {token}\r\n".encode()
    hidden = b"GET /v1/products/100150 HTTP/1.1\r\nHost: x\r\n" + bearer + b"\r\n"
    patch = (b"PATCH " + LOT.encode() + b" HTTP/1.1\r\nHost: x\r\n" + bearer
             + b'If-Match: "10"\r\nContent-Type: application/json\r\n')
    body = b'{"quantityAtPickupLocation": 5}'
    return {
        "cl-te token call": b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/x-www-form-urlencoded\r\n"
                            b"Content-Length: 200\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"0\r\n\r\n" + hidden,
        "cl-te patch": patch + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" + hidden,
        "two content lengths": patch + f"Content-Length: {len(body)}\r\n".encode()
                               + b"Content-Length: 4\r\nConnection: close\r\n\r\n" + body,
        "nul in if-match": patch.replace(b'"10"', b'"10\x00"') + b"Connection: close\r\n"
                           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body,
        "header line over 64 KB": b"GET /v1/products/100150 HTTP/1.1\r\nHost: x\r\n" + bearer
                                  + b"X-Long: " + b"a" * 70_000 + b"\r\nConnection: close\r\n\r\n",
    }


def test_werkzeug_never_serves_a_request_hidden_behind_a_cl_te_conflict(shared, upstream_calls):
    """The development server goes by Transfer-Encoding and then closes the connection."""
    received = exchange(shared.server.port, smuggling(shared.token)["cl-te token call"])
    assert status_lines(received) == [b"HTTP/1.1 400"]
    assert upstream_calls() == ([], [])


def test_werkzeug_refuses_a_header_line_over_64_kb(shared, upstream_calls):
    received = exchange(shared.server.port, smuggling(shared.token)["header line over 64 KB"])
    assert status_lines(received) == [b"HTTP/1.1 431"]
    assert upstream_calls() == ([], [])


def test_werkzeug_refuses_a_cl_te_conflict(shared, upstream_calls):
    received = exchange(shared.server.port, smuggling(shared.token)["cl-te patch"])
    assert status_lines(received) == [b"HTTP/1.1 400"]
    assert upstream_calls() == ([], [])




@pytest.fixture
def declarative_env(write_declarative_config, sandbox, test_secrets, tmp_path
                    ) -> Callable[..., dict[str, str]]:
    """Return ``declarative_env(port, **extra)``: the environment of a shim process (one
    worker) on a one-seller TOML config pointing at the sandbox, bound to ``port``."""
    config = tmp_path / "shim.toml"
    write_declarative_config(config, sandbox.api_url)

    def build(port: int, **extra: str) -> dict[str, str]:
        return clean_env(SHIM_CONFIG=str(config), SHIM_APP_SECRET=test_secrets.app_secret,
                         SHIM_MAIN_ACCESS_TOKEN=test_secrets.access_token,
                         SHIM_BIND=f"127.0.0.1:{port}", SHIM_WORKERS="1",
                         SHIM_READ_RETRIES="0", SHIM_LOG_LEVEL="info", **extra)

    return build


@pytest.fixture
def gunicorn(declarative_env, tmp_path):
    """The shim as production serves it (gunicorn, shim/gunicorn_conf.py); its log in tmp_path."""
    port = free_port()
    with running(GUNICORN, declarative_env(port), port, tmp_path / "gunicorn.log",
                 module="gunicorn"):
        yield port


def test_gunicorn_refuses_smuggling_shapes_before_the_app(
        session_secrets, gunicorn, sandbox, test_secrets):
    """In production the server itself refuses each shape: nothing reaches the platform."""
    answer = requests.post(f"http://127.0.0.1:{gunicorn}{TOKEN_PATH}", timeout=10,
                           data=token_form("full", test_secrets.client_secret))
    assert answer.status_code == 200
    session_secrets.add(answer.json()["access_token"])
    start = len(sandbox.state.ledger())  # the gunicorn worker signs in its own process
    shapes = smuggling(answer.json()["access_token"])
    shapes["bare cr in x-request-id"] = (b"GET /v1/products/100150 HTTP/1.1\r\nHost: x\r\n"
                                         b"X-Request-Id: a\rSet-Cookie: pwn=1\r\n\r\n")
    shapes["request line over 4 KB"] = (b"GET /v1/products/" + TEN_KB_ID.encode()
                                        + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    expected = {name: b"HTTP/1.1 400" for name in shapes}
    expected["header line over 64 KB"] = b"HTTP/1.1 431"
    expected["request line over 4 KB"] = b"HTTP/1.1 414"
    answered = {name: status_lines(exchange(gunicorn, raw)) for name, raw in shapes.items()}
    assert answered == {name: [status] for name, status in expected.items()}
    assert sandbox.state.ledger()[start:] == []


def test_gunicorn_never_logs_a_token_from_a_malformed_request_line(
        session_secrets, gunicorn, tmp_path):
    """gunicorn logs a request line it cannot parse verbatim, query string and all."""
    token = "canary-" + secrets.token_urlsafe(16)
    session_secrets.add(token)
    answer = exchange(gunicorn, f"GET /v1/products?access_token={token}\r\n\r\n".encode())
    assert status_lines(answer) == [b"HTTP/1.1 400"]
    log, deadline = "", time.monotonic() + 10
    while "Invalid request" not in log and time.monotonic() < deadline:
        time.sleep(0.05)
        log = (tmp_path / "gunicorn.log").read_text()
    assert "access_token=[REDACTED]" in log
    assert token not in log


# --- after the run: no response or written file holds a secret --------------------------------


SOFTWARE_SUFFIXES = frozenset({".py", ".pyc", ".md"})


def _findings(label: str, data: bytes, session_secrets: set[str], *,
              shapes: bool = True) -> list[tuple[str, str]]:
    text = data.decode("latin-1")
    found = [("session secret", label) for secret in session_secrets
             if len(secret) >= 8 and secret in text]
    if shapes:
        found += [(name, label) for name, shape in SHAPES.items() if shape.search(text)]
    return found


class TestAfterTheRun:
    """Run last (conftest orders them with the log scan), over what the whole run produced."""

    def test_the_recorder_saw_the_whole_run(self, shim_responses, run_selection):
        """Only the whole suite answers enough to demand a number; a part of it may not."""
        if run_selection:
            pytest.skip("the recorder's volume is checked on the whole suite only; this run "
                        f"was narrowed by: {' '.join(run_selection)}")
        assert len(shim_responses) > 1000, "the recorder saw almost nothing: is it connected?"

    def test_no_response_of_the_run_holds_a_secret(self, shim_responses, session_secrets):
        found = []
        for method, path, status, headers, body in shim_responses:
            if (method, path, status) == ("POST", TOKEN_PATH, 200):
                # The one place a secret belongs: the token just issued, once, in its member.
                token = json.loads(body)["access_token"]
                assert body.count(token.encode()) == 1
                body = body.replace(token.encode(), b"[ISSUED]")
            found += _findings(f"{method} {path} -> {status}", headers.encode() + b"\n" + body,
                               session_secrets)
        assert found == []

    def test_no_file_written_during_the_run_holds_a_secret(self, tmp_path_factory,
                                                           session_secrets):
        """Every file under the run's tmp paths: databases, configs, logs, built images."""
        base = tmp_path_factory.getbasetemp()
        # Copies of software (the image's venv, its build context: code, docs, binaries) are
        # full of hex and ``access_token=`` arguments that look like secrets: there only the
        # exact secrets are searched; the shapes are for what the shim and the tests wrote.
        venvs = [marker.parent for marker in base.rglob("pyvenv.cfg")]

        def software(path: Path) -> bool:
            return (path.suffix in SOFTWARE_SUFFIXES or path.name == "PKG-INFO"
                    or any(path.is_relative_to(venv) for venv in venvs))

        found, scanned = [], 0
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                found += _findings(str(path), path.read_bytes(), session_secrets,
                                   shapes=not software(path))
        assert scanned > 0
        assert found == []


@pytest.fixture
def front(declarative_env, tmp_path):
    """The shim as ``serve`` runs it: nginx in front of gunicorn (shim/front.py)."""
    port = free_port()
    with running(["serve"], declarative_env(port, TMPDIR=str(tmp_path)), port,
                 tmp_path / "serve.log"):
        yield port


def test_the_front_refuses_smuggling_shapes_before_gunicorn(
        session_secrets, front, sandbox, test_secrets, tmp_path):
    """serve's nginx refuses each shape with the legacy 400 (414 for a long line)."""
    answer = requests.post(f"http://127.0.0.1:{front}{TOKEN_PATH}", timeout=10,
                           data=token_form("full", test_secrets.client_secret))
    assert answer.status_code == 200
    session_secrets.add(answer.json()["access_token"])
    start = len(sandbox.state.ledger())
    shapes = smuggling(answer.json()["access_token"])
    shapes["bare cr in x-request-id"] = (b"GET /v1/products/100150 HTTP/1.1\r\nHost: x\r\n"
                                         b"X-Request-Id: a\rSet-Cookie: pwn=1\r\n\r\n")
    shapes["request line over 8 KB"] = (b"GET /v1/products/" + TEN_KB_ID.encode()
                                        + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    canary = "canary-" + secrets.token_urlsafe(16)
    session_secrets.add(canary)
    shapes["token in a refused request"] = (f"GET /v1/products?access_token={canary} HTTP/1.1"
                                            "\r\nHost: x\r\nNo colon here\r\n\r\n").encode()
    expected = {name: b"HTTP/1.1 400" for name in shapes}
    expected["request line over 8 KB"] = b"HTTP/1.1 414"
    answered = {name: exchange(front, raw) for name, raw in shapes.items()}
    assert {name: status_lines(raw) for name, raw in answered.items()} == {
        name: [status] for name, status in expected.items()}
    for raw in answered.values():  # the legacy body, as JSON, never nginx's HTML page
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Content-Type: application/json" in head
        assert json.loads(body)["title"] in ("Bad Request", "URI Too Long")
    # Between gunicorn's usual 4 KiB and nginx's 8 KiB, the line reaches the app (no token:
    # its 401), never gunicorn's plain-text 414.
    longish = exchange(front, b"GET /v1/products/" + TEN_KB_ID[:6000].encode()
                       + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_lines(longish) == [b"HTTP/1.1 401"]
    assert sandbox.state.ledger()[start:] == []
    log, deadline = "", time.monotonic() + 10
    while log.count("shim.front") < len(shapes) and time.monotonic() < deadline:
        time.sleep(0.05)  # nginx writes its line once the connection is closed
        log = (tmp_path / "serve.log").read_text()
    assert "/v1/products" in log  # nginx's own answers are logged, without their queries
    assert canary not in log
