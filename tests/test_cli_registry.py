"""The registry commands (``redmart-shim apps|sellers|clients``) as an operator runs them.

Commands run as real subprocesses on a real database (the whole operator path on SQLite and
on PostgreSQL), and their effect is checked through a shim served on that database over the
sandbox. Each input matrix (bad arguments, bad token JSON, help pages, declarative writes)
runs one case as a subprocess and the rest through ``cli.main`` in this process: the same
parser and code, without 0.5 s of interpreter start per case. Every output of every run is
scanned for every secret in play.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import datetime
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from isolation import root_logging_kept
from processes import Processes

from shim import authorization, cli, config, scopes
from shim.app import create_app
from shim.authorization import grant_from
from shim.record.settings import APP_KEY, OTHER_STORE_ID, STORE_ID
from shim.services import get_services
from shim.serving import LocalServer
from shim.store import App, Client, Seller, TokenGrant, open_store
from shim.store.crypto import new_key

GROUPS = {"apps": ["add", "list"],
          "sellers": ["add", "list", "remove", "import-tokens", "authorize", "complete"],
          "clients": ["add", "list", "disable", "enable", "rotate"]}


class Operator:
    """Runs ``redmart-shim`` commands like an operator's shell, and keeps every output."""

    def __init__(self, env: dict[str, str], secret_values: list[str],
                 processes: Processes) -> None:
        self.env = env
        self.processes = processes  # starts each command; kills any left when the test ends
        self.secrets = list(secret_values)  # values no output may contain
        self.runs: list[tuple[tuple[str, ...], str, str | None]] = []  # args, output, shown

    def __call__(self, *args: str, stdin: str = "", expect: int = 0,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run one command as a subprocess; assert its exit status."""
        [result] = self.many([(args, stdin, expect, env)])
        return result

    def many(self, commands) -> list[subprocess.CompletedProcess]:
        """Run independent commands side by side: ``(args, stdin, expect[, env])`` each."""
        started = []
        for args, stdin, expect, *rest in commands:
            env = {**self.env, **(rest[0] if rest and rest[0] else {})}
            process = self.processes.start([sys.executable, "-m", "shim", *args], env=env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
            started.append((args, stdin, expect, process))
        results = []
        for args, stdin, _expect, process in started:
            stdout, stderr = process.communicate(stdin, timeout=60)
            results.append(self._record(args, process.returncode, stdout, stderr))
        for (args, _stdin, expect, _process), result in zip(started, results, strict=True):
            assert result.returncode == expect, (args, result.returncode, result.stderr)
        return results

    def here(self, *args: str, stdin: str = "", expect: int = 0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run one command through ``cli.main`` in this process; assert its exit status."""
        stdout, stderr = io.StringIO(), io.StringIO()
        with root_logging_kept(), \
                mock.patch.dict(os.environ, {**self.env, **(env or {})}, clear=True), \
                mock.patch.object(sys, "stdin", io.StringIO(stdin)), \
                redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                status = cli.main(list(args))
            except SystemExit as exit:  # argparse: --help, usage errors
                status = exit.code
        result = self._record(args, status, stdout.getvalue(), stderr.getvalue())
        assert result.returncode == expect, (args, result.returncode, result.stderr)
        return result

    def _record(self, args, status, stdout, stderr) -> subprocess.CompletedProcess:
        self.runs.append((tuple(args), stdout + stderr, None))
        return subprocess.CompletedProcess(args, status, stdout, stderr)

    def json(self, *args: str, stdin: str = "") -> object:
        """Run a ``--json`` command as a subprocess; return its document."""
        return json.loads(self(*args, "--json", stdin=stdin).stdout)

    def json_here(self, *args: str, stdin: str = "") -> object:
        """Run a ``--json`` command in this process; return its document."""
        return json.loads(self.here(*args, "--json", stdin=stdin).stdout)

    def shown_secret(self, result: subprocess.CompletedProcess) -> str:
        """Return the client secret a run made; it must appear once, on stdout."""
        document = json.loads(result.stdout) if result.stdout.startswith("{") else dict(
            line.split(": ", 1) for line in result.stdout.splitlines())
        secret = document["client_secret"]
        assert re.fullmatch(r"[A-Za-z0-9]{32}", secret) and secret not in self.secrets
        assert result.stdout.count(secret) == 1 and secret not in result.stderr
        [index] = [i for i, (_args, output, _shown) in enumerate(self.runs)
                   if output == result.stdout + result.stderr]
        self.runs[index] = (*self.runs[index][:2], secret)
        self.secrets.append(secret)
        return secret

    def assert_no_secret_shown(self) -> None:
        """No run printed a secret, except the one client secret it made."""
        for args, output, shown in self.runs:
            for value in self.secrets:
                if value != shown:
                    assert value not in output, f"a secret appeared in the output of {args}"


@pytest.fixture
def make_operator(test_secrets, sandbox, processes):
    """Return an ``Operator`` on a database URL, with an operator's environment."""
    made = []

    def make(database_url: str) -> Operator:
        key = new_key()
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("SHIM_")}
        env.update(SHIM_DATABASE_URL=database_url, SHIM_ENCRYPTION_KEY=key,
                   SHIM_APP_KEY=APP_KEY, SHIM_APP_SECRET=test_secrets.app_secret,
                   SHIM_API_URL=sandbox.api_url, SHIM_AUTH_URL=sandbox.auth_url,
                   SHIM_READ_RETRIES="0")
        made.append(Operator(env, [*test_secrets.all(), key], processes))
        return made[-1]

    yield make
    for operator in made:
        operator.assert_no_secret_shown()


@pytest.fixture
def op(make_operator, tmp_path) -> Operator:
    return make_operator(f"sqlite:///{tmp_path / 'shim.db'}")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_op(request, make_operator, tmp_path):
    """An ``Operator`` on SQLite, then on PostgreSQL in a throwaway schema."""
    if request.param == "sqlite":
        yield make_operator(f"sqlite:///{tmp_path / 'shim.db'}")
        return
    yield make_operator(request.getfixturevalue("pg_schema").url)


def token_answer(test_secrets, **changes) -> dict:
    """What /auth/token/create answered the integration the seller migrates from."""
    answer = {"access_token": test_secrets.access_token,
              "refresh_token": test_secrets.refresh_token,
              "expires_in": 864000, "refresh_expires_in": "4320000",  # text, as documented
              "country": "sg", "account_platform": "seller_center", "account": "shop@example.com",
              "country_user_info": [{"country": "sg", "user_id": "1", "seller_id": "1",
                                     "short_code": "SG000414RM"}],
              "code": "0", "request_id": "0ba2887315178178017221014"}
    answer.update(changes)
    return {key: value for key, value in answer.items() if value is not None}


class Shim:
    """A shim served on the registry's database, and a legacy client's calls to it."""

    def __init__(self, base_url: str, http: requests.Session) -> None:
        self.base_url = base_url
        self.http = http

    def token(self, client_id: str, secret: str) -> requests.Response:
        return self.http.post(self.base_url + "/oauth2/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret})

    def bearer(self, client_id: str, secret: str) -> str:
        answer = self.token(client_id, secret)
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def products(self, bearer: str) -> requests.Response:
        return self.http.get(self.base_url + "/v1/products", timeout=10,
                             headers={"Authorization": f"Bearer {bearer}"})


@contextmanager
def shim_on(env: dict[str, str]):
    """Serve a shim with the settings the commands used (same database, same sandbox)."""
    app = create_app(config.load(env=env))
    try:
        with LocalServer(app) as server, requests.Session() as http:
            yield Shim(server.base_url, http)
    finally:
        get_services(app).close()


@contextmanager
def registry(env: dict[str, str]):
    """Open the registry's database directly, to arrange it or see what commands stored."""
    store = open_store(config.load(env=env))
    try:
        yield store
    finally:
        store.close()


def seed(op: Operator, test_secrets, client_digest: str, *, app_key: str | None = None,
         client: bool = True) -> None:
    """Register seller "main" with tokens the sandbox knows, and client "erp" (the test secret).

    Through the store API: the commands that do this are tested on the operator's path.
    """
    now = time.time()
    with registry(op.env) as store:
        store.add_seller(Seller(name="main", store_id=STORE_ID, app_key=app_key))
        store.store_grant("main", TokenGrant(test_secrets.access_token,
                                             test_secrets.refresh_token, now + 864000,
                                             now + 4320000))
        if client:
            store.add_client(Client("erp", client_digest, frozenset(scopes.ALL), "main"))


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- the operator's path -----------------------------------------------------------------------

def test_operator_path_from_empty_registry_to_a_legacy_call(any_op, test_secrets):
    op = any_op
    other_secret = "app-" + secrets.token_hex(16)
    op.secrets.append(other_secret)
    # Commands that do not depend on each other run side by side, as two operators might.
    op.many([(("apps", "add", "--app-key", "100002"), other_secret + "\n", 0),
             (("sellers", "add", "main", "--store-id", STORE_ID), "", 0)])
    now = time.time()
    apps, _ = op.many([
        (("apps", "list", "--json"), "", 0),
        (("sellers", "import-tokens", "main"), json.dumps(token_answer(test_secrets)), 0)])
    assert json.loads(apps.stdout) == [{"app_key": APP_KEY, "source": "settings"},
                                       {"app_key": "100002", "source": "database"}]
    sellers, created = op.many([(("sellers", "list", "--json"), "", 0),
                                (("clients", "add", "erp", "--seller", "main", "--json"), "", 0)])
    [seller] = json.loads(sellers.stdout)
    assert {key: seller[key] for key in ("name", "store_id", "region", "app_key", "has_tokens",
                                         "needs_reauthorization", "last_refresh_result")} == {
        "name": "main", "store_id": STORE_ID, "region": "sg", "app_key": None,
        "has_tokens": True, "needs_reauthorization": False, "last_refresh_result": "imported"}
    assert abs(epoch(seller["access_expires_at"]) - (now + 864000)) < 60
    assert abs(epoch(seller["refresh_expires_at"]) - (now + 4320000)) < 60

    secret = op.shown_secret(created)
    assert json.loads(created.stdout) == {"client_id": "erp", "client_secret": secret,
                                          "scopes": sorted(scopes.ALL), "seller": "main"}
    with registry(op.env) as store:  # a generated secret: the fast keyed digest
        assert store.get_client("erp").secret_digest.startswith("hmac-sha256$")

    with shim_on(op.env) as shim:
        answer = shim.products(shim.bearer("erp", secret))
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"]


def test_lists_print_a_table_or_json_and_never_tokens(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest)
    header, row = op.here("sellers", "list").stdout.splitlines()
    assert header.split() == ["NAME", "STORE", "REGION", "APP", "ACCESS_EXPIRES",
                              "REFRESH_EXPIRES", "STATE", "LAST_REFRESH"]
    assert row.split()[:4] == ["main", STORE_ID, "sg", APP_KEY]
    assert row.split()[-2:] == ["ok", "imported"]
    assert op.here("clients", "list").stdout.splitlines()[1].split()[:3] == ["erp", "main", "yes"]
    [client] = op.json_here("clients", "list")
    assert set(client) == {"client_id", "seller", "scopes", "enabled", "created_at"}
    assert abs(epoch(client["created_at"]) - time.time()) < 60


# --- refusals (exit 1) and usage errors (exit 2) -------------------------------------------------

def test_a_seller_with_clients_is_not_removed(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest)
    refused = op("sellers", "remove", "main", expect=1)
    assert "still has clients: erp" in refused.stderr and refused.stdout == ""
    with registry(op.env) as store:
        assert store.get_seller("main") is not None


def test_duplicates_and_unknown_names_are_refused(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest)
    first, second = "app-" + secrets.token_hex(8), "app-" + secrets.token_hex(8)
    op.secrets += [first, second]
    op.here("apps", "add", "--app-key", "100002", stdin=first + "\n")
    refusals = {
        ("sellers", "add", "main", "--store-id", OTHER_STORE_ID): "exists already",
        ("clients", "add", "erp", "--seller", "main"): "exists already",
        ("apps", "add", "--app-key", "100002"): "--replace",
        ("clients", "add", "wms", "--seller", "nobody"): "no seller 'nobody'",
        ("sellers", "add", "other", "--store-id", "415", "--app-key", "100003"): "apps add",
        ("sellers", "remove", "nobody"): "no seller 'nobody'",
        ("sellers", "import-tokens", "nobody"): "no seller 'nobody'",
        ("sellers", "authorize", "nobody"): "no seller 'nobody'",
        ("sellers", "complete", "nobody", "--code", "0_x"): "no seller 'nobody'",
        ("clients", "disable", "nobody"): "no client 'nobody'",
        ("clients", "enable", "nobody"): "no client 'nobody'",
        ("clients", "rotate", "nobody"): "no client 'nobody'",
    }
    for args, reason in refusals.items():
        result = op.here(*args, stdin=second + "\n", expect=1)
        assert reason in result.stderr and result.stdout == "", args
    with registry(op.env) as store:
        assert [seller.name for seller in store.list_sellers()] == ["main"]
        assert [client.client_id for client in store.list_clients()] == ["erp"]
        assert store.get_app("100002").app_secret == first


def test_a_seller_without_clients_is_removed(op):
    op.here("sellers", "add", "spare", "--store-id", OTHER_STORE_ID, "--region", "my")
    assert op.json_here("sellers", "list")[0]["region"] == "my"
    assert op.json_here("sellers", "remove", "spare") == {"name": "spare", "removed": True}
    assert op.json_here("sellers", "list") == []


def test_an_app_secret_comes_from_stdin_or_the_environment_and_can_be_replaced(op):
    first, second = "app-" + secrets.token_hex(8), "app-" + secrets.token_hex(8)
    op.secrets += [first, second]
    op.here("apps", "add", "--app-key", "100002", "--secret-env", "OLD_APP_SECRET",
            env={"OLD_APP_SECRET": first})
    op.here("apps", "add", "--app-key", "100002", "--replace", stdin=second + "\n")
    with registry(op.env) as store:
        assert store.get_app("100002").app_secret == second
    assert "UNSET_VARIABLE" in op.here("apps", "add", "--app-key", "100004", "--secret-env",
                                       "UNSET_VARIABLE", expect=2).stderr
    assert "empty" in op.here("apps", "add", "--app-key", "100004", stdin="\n",
                              expect=2).stderr


def test_malformed_arguments_exit_2_with_the_rule(op, tmp_path):
    unknown = op("clients", "add", "erp", "--seller", "main", "--scopes",
                 "read:product read:orders", expect=2)
    assert "unknown scope(s) read:orders" in unknown.stderr
    assert f"valid scopes: {' '.join(scopes.ALL)}" in unknown.stderr
    cases = {
        ("clients", "add", "bad id", "--seller", "main"): "1 to 64 characters",
        ("clients", "add", "x" * 65, "--seller", "main"): "1 to 64 characters",
        ("clients", "disable", "a/b"): "1 to 64 characters",
        ("clients", "add", "erp", "--seller", "main lane"): "1 to 64 characters",
        ("sellers", "add", "main/1", "--store-id", STORE_ID): "1 to 64 characters",
        ("sellers", "add", "main", "--store-id", "41a"): "digits",
        ("sellers", "add", "main", "--store-id", STORE_ID, "--region", "uk"): "invalid choice",
        ("clients", "add", "erp", "--seller", "main", "--scopes", " "): "no scope given",
        ("sellers", "add", "main"): "--store-id",
        ("clients", "add", "erp"): "--seller",
        ("sellers", "complete", "main", "--code", " "): "no code given",
    }
    for args, reason in cases.items():
        result = op.here(*args, expect=2)
        assert reason in result.stderr and result.stdout == "", args
    broken = op.here("sellers", "list", env={"SHIM_ENCRYPTION_KEY": ""}, expect=2)
    assert "configuration error" in broken.stderr
    # An unreachable database is a refusal, with the reason.
    missing = f"sqlite:///{tmp_path / 'missing' / 'shim.db'}"
    assert "database is unavailable" in op.here("sellers", "list", expect=1,
                                                env={"SHIM_DATABASE_URL": missing}).stderr


# --- importing tokens ----------------------------------------------------------------------------

def test_tokens_with_absolute_expiries_import(op, test_secrets):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    access_at, refresh_at = int(time.time()) + 3 * 86400, int(time.time()) + 30 * 86400
    seller = op.json_here("sellers", "import-tokens", "main", stdin=json.dumps({
        "access_token": test_secrets.access_token, "refresh_token": test_secrets.refresh_token,
        "access_expires_at": access_at, "refresh_expires_at": refresh_at}))
    assert (epoch(seller["access_expires_at"]), epoch(seller["refresh_expires_at"])) == (
        access_at, refresh_at)
    assert seller["last_refresh_result"] == "imported"
    with registry(op.env) as store:
        stored = store.get_seller("main")
    assert (stored.access_token, stored.refresh_token) == (test_secrets.access_token,
                                                           test_secrets.refresh_token)


def test_unusable_token_input_exits_2_without_echoing_it(op, test_secrets):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    not_json = op("sellers", "import-tokens", "main",
                  stdin="access_token=" + test_secrets.access_token, expect=2)
    assert "not JSON" in not_json.stderr
    now = int(time.time())
    pair = {"access_token": test_secrets.access_token,
            "refresh_token": test_secrets.refresh_token}
    cases = [
        (json.dumps([pair]), "JSON object"),
        ("", "nothing on stdin"),
        (json.dumps(token_answer(test_secrets, refresh_token="")), "refresh_token"),
        (json.dumps(token_answer(test_secrets, expires_in="soon")), "expires_in"),
        (json.dumps(token_answer(test_secrets, expires_in=0)), "positive"),
        (json.dumps(token_answer(test_secrets, expires_in=1e300)), "ten years"),
        (json.dumps(token_answer(test_secrets, refresh_expires_in=10**400)), "ten years"),
        (json.dumps({**pair, "access_expires_at": now - 10, "refresh_expires_at": now - 5}),
         "expired"),
        (json.dumps({**pair, "access_expires_at": now * 1000,
                     "refresh_expires_at": (now + 86400) * 1000}), "milliseconds"),
        (json.dumps({**pair, "access_expires_at": "tomorrow", "refresh_expires_at": now + 9}),
         "access_expires_at"),
        (json.dumps({"access_token": test_secrets.access_token, "refresh_token": 7,
                     "access_expires_at": now + 9, "refresh_expires_at": now + 99}),
         "refresh_token"),
        (json.dumps({"code": "InvalidCode", "type": "ISV", "message": "Invalid code"}),
         "error"),
        (json.dumps(token_answer(test_secrets, access_expires_at=now + 86400)), "not both"),
        (json.dumps(pair), "expected a Lazada token answer"),
    ]
    for stdin, reason in cases:
        result = op.here("sellers", "import-tokens", "main", stdin=stdin, expect=2)
        assert reason in result.stderr and result.stdout == "", reason
    with registry(op.env) as store:
        assert store.get_seller("main").access_token is None


def test_a_token_answer_without_user_info_imports(op, test_secrets):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    op.here("sellers", "import-tokens", "main",
            stdin=json.dumps(token_answer(test_secrets, country_user_info=None)))


def test_a_token_answer_with_an_empty_token_is_invalid():
    from marshmallow import ValidationError

    with pytest.raises(ValidationError):
        grant_from({"access_token": "", "refresh_token": "", "expires_in": 5,
                    "refresh_expires_in": 9, "country_user_info": []}, 0)


# --- clients: disable, enable, rotate, an existing secret ----------------------------------------

def test_disabling_a_client_ends_its_tokens_until_enabled(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest)
    with shim_on(op.env) as shim:
        bearer = shim.bearer("erp", test_secrets.client_secret)
        assert shim.products(bearer).status_code == 200
        assert op.json("clients", "disable", "erp") == {"client_id": "erp", "enabled": False}
        assert shim.products(bearer).status_code == 401
        refused = shim.token("erp", test_secrets.client_secret)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_client")
        assert op.json_here("clients", "list")[0]["enabled"] is False
        op.here("clients", "enable", "erp")
        assert shim.products(shim.bearer("erp", test_secrets.client_secret)).status_code == 200


@pytest.mark.parametrize("any_op", ["postgresql"], indirect=True)
def test_a_revocation_a_live_instance_did_not_acknowledge_says_so(any_op, test_secrets,
                                                                  client_digest):
    """The command waits for every live instance's token cache (shim/store/tokencache.py);
    one that stays silent is switched off and its lease waited out, and the operator is told."""
    op = any_op
    seed(op, test_secrets, client_digest)
    with registry(op.env) as store, store.backend.transaction() as tx:
        now = tx.one("SELECT extract(epoch from clock_timestamp())::double precision AS now")
        tx.execute("INSERT INTO token_cache_instances (instance, registered_at, heartbeat_at, "
                   "evicted) VALUES ('stuck', :now, :now, FALSE)", {"now": now["now"]})
    result = op.here("clients", "disable", "erp")
    assert "1 instance(s) did not acknowledge" in result.stderr
    assert "(stuck)" in result.stderr
    assert result.stdout.startswith("client erp disabled")


def test_rotating_a_secret_refuses_the_old_one_and_its_tokens(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest)
    with shim_on(op.env) as shim:
        bearer = shim.bearer("erp", test_secrets.client_secret)
        rotated = op("clients", "rotate", "erp", "--json")
        new = op.shown_secret(rotated)
        assert json.loads(rotated.stdout) == {"client_id": "erp", "client_secret": new,
                                              "scopes": sorted(scopes.ALL), "seller": "main"}
        assert "shown this once" in rotated.stderr
        assert shim.token("erp", test_secrets.client_secret).status_code == 400
        assert shim.products(bearer).status_code == 401
        assert shim.products(shim.bearer("erp", new)).status_code == 200
    with registry(op.env) as store:
        assert store.get_client("erp").secret_digest.startswith("hmac-sha256$")


def test_text_mode_shows_a_new_secret_once(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest, client=False)
    result = op.here("clients", "add", "wms", "--seller", "main", "--scopes",
                     "read:product,read:stock-lot")
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == [
        "client_id", "client_secret"]
    op.shown_secret(result)
    assert "shown this once" in result.stderr
    assert op.json_here("clients", "list")[0]["scopes"] == ["read:product", "read:stock-lot"]


def test_a_client_added_without_an_id_gets_kongs_credential_form(op, test_secrets,
                                                                 client_digest):
    """Kong generated client ids and secrets of 32 ASCII alphanumerics; so does the shim."""
    seed(op, test_secrets, client_digest, client=False)
    result = op.here("clients", "add", "--seller", "main", "--json")
    client_id, secret = json.loads(result.stdout)["client_id"], op.shown_secret(result)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", client_id) and client_id != secret
    assert [client["client_id"] for client in op.json_here("clients", "list")] == [client_id]
    with shim_on(op.env) as shim:
        assert shim.products(shim.bearer(client_id, secret)).status_code == 200


def test_a_migrating_client_keeps_its_existing_secret(op, test_secrets, client_digest):
    seed(op, test_secrets, client_digest, client=False)
    added = op.json_here("clients", "add", "legacy-wms", "--seller", "main", "--secret-stdin",
                         stdin=test_secrets.client_secret + "\n")
    assert "client_secret" not in added and added["client_id"] == "legacy-wms"
    with registry(op.env) as store:  # a secret a person chose keeps the slow hash
        assert store.get_client("legacy-wms").secret_digest.startswith("scrypt$")
    with shim_on(op.env) as shim:
        bearer = shim.bearer("legacy-wms", test_secrets.client_secret)
        assert shim.products(bearer).status_code == 200


# --- seller authorization ------------------------------------------------------------------------

def consent_at_sandbox(http: requests.Session, url: str) -> str:
    """Consent as store 414 in the sandbox; return where the seller's browser is sent."""
    consent = http.get(url + f"&store_id={STORE_ID}", allow_redirects=False, timeout=10)
    assert consent.status_code == 302, consent.text
    return consent.headers["Location"]


def test_a_consent_link_state_is_accepted_once(op, sandbox):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    with shim_on(op.env) as shim:
        op.env.update(SHIM_PUBLIC_URL=shim.base_url,
                      SHIM_AUTHORIZE_URL=sandbox.base_url + "/oauth/authorize")
        result = op("sellers", "authorize", "main")
        url = result.stdout.strip()
        assert url.startswith(sandbox.base_url + "/oauth/authorize?")
        assert parse_qs(urlsplit(url).query)["client_id"] == [APP_KEY]
        assert "sellers complete main" in result.stderr
        callback = consent_at_sandbox(shim.http, url)
        assert callback.startswith(shim.base_url + "/operator/callback?")
        op.secrets.append(parse_qs(urlsplit(callback).query)["code"][0])
        assert shim.http.get(callback, timeout=10).status_code == 200
        assert shim.http.get(callback, timeout=10).status_code == 400
    [seller] = op.json_here("sellers", "list")
    assert seller["last_refresh_result"] == "authorized" and seller["has_tokens"]


def sandbox_code(sandbox, http: requests.Session, store_id: str = STORE_ID) -> str:
    answer = http.post(sandbox.base_url + "/_sandbox/codes", json={"store_id": store_id},
                       timeout=10)
    assert answer.status_code == 201
    return answer.json()["code"]


def test_a_pasted_code_completes_the_authorization(op, test_secrets, sandbox):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    with requests.Session() as http:
        code = sandbox_code(sandbox, http)
    op.secrets.append(code)
    seller = op.json("sellers", "complete", "main", "--code", code)
    assert seller["last_refresh_result"] == "authorized"
    assert seller["account"] and seller["has_tokens"]
    with registry(op.env) as store:
        stored = store.get_seller("main")
    op.secrets += [stored.access_token, stored.refresh_token]
    assert stored.access_token != test_secrets.access_token
    assert sandbox.state.store_for_access_token(stored.access_token) == STORE_ID

    # The platform refuses a used code (read from stdin this time); the tokens stay.
    refused = op.here("sellers", "complete", "main", stdin=code + "\n", expect=1)
    assert "refused the code" in refused.stderr
    with registry(op.env) as store:
        assert store.get_seller("main").access_token == stored.access_token


def test_a_code_from_another_stores_account_is_refused_and_the_tokens_stay(op, sandbox):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    with requests.Session() as http:
        right, wrong = sandbox_code(sandbox, http), sandbox_code(sandbox, http, OTHER_STORE_ID)
    op.secrets += [right, wrong]
    op.json("sellers", "complete", "main", "--code", right)
    with registry(op.env) as store:
        stored = store.get_seller("main")
    op.secrets += [stored.access_token, stored.refresh_token]
    refused = op.here("sellers", "complete", "main", "--code", wrong, expect=1)
    assert f"cannot serve store {STORE_ID}" in refused.stderr
    assert "nothing was changed" in refused.stderr
    with registry(op.env) as store:
        assert store.get_seller("main") == stored
    assert sandbox.state.store_for_access_token(stored.access_token) == STORE_ID  # serving


def test_the_address_the_browser_landed_on_completes_once(op, sandbox):
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    op.here("sellers", "add", "other", "--store-id", OTHER_STORE_ID)
    # The shim's public address is not reachable from the seller's browser: the operator
    # pastes the address the browser shows.
    op.env.update(SHIM_PUBLIC_URL="https://shim.invalid",
                  SHIM_AUTHORIZE_URL=sandbox.base_url + "/oauth/authorize")

    def landed() -> str:
        with requests.Session() as http:
            url = op.here("sellers", "authorize", "main").stdout.strip()
            address = consent_at_sandbox(http, url)
        assert address.startswith("https://shim.invalid/operator/callback?")
        op.secrets.append(parse_qs(urlsplit(address).query)["code"][0])
        return address

    address = landed()
    done = op.json("sellers", "complete", "main", stdin=address + "\n")
    assert done["last_refresh_result"] == "authorized"
    # The state is single use: the same address is refused, and so is another seller's.
    used = op.here("sellers", "complete", "main", stdin=address, expect=1)
    assert "unknown, used or expired" in used.stderr
    mine = landed()
    wrong = op.here("sellers", "complete", "other", stdin=mine, expect=1)
    assert "made for seller 'main'" in wrong.stderr
    assert op.json_here("sellers", "list")[1]["has_tokens"] is False
    # Pasted under the wrong seller, the link is still good for its own.
    again = op.json("sellers", "complete", "main", stdin=mine + "\n")
    assert again["last_refresh_result"] == "authorized"  # exit 0: the exchange went through


def registry_of_a_stored_app(op: Operator, test_secrets, client_digest) -> None:
    """Settings naming another app, and seller "main" of the stored (sandbox) app."""
    settings_secret = "app-" + secrets.token_hex(16)
    op.secrets.append(settings_secret)
    op.env.update(SHIM_APP_KEY="999999", SHIM_APP_SECRET=settings_secret)
    with registry(op.env) as store:
        store.put_app(App(APP_KEY, test_secrets.app_secret))
    seed(op, test_secrets, client_digest, app_key=APP_KEY)


def test_calls_for_a_seller_of_a_stored_app_are_signed_with_that_app(op, test_secrets,
                                                                     client_digest):
    registry_of_a_stored_app(op, test_secrets, client_digest)
    with shim_on(op.env) as shim:
        answer = shim.products(shim.bearer("erp", test_secrets.client_secret))
        assert answer.status_code == 200, answer.text


def test_a_pasted_code_is_exchanged_with_the_app_of_the_seller(op, test_secrets, client_digest,
                                                              sandbox):
    registry_of_a_stored_app(op, test_secrets, client_digest)
    op.env.update(SHIM_AUTHORIZE_URL=sandbox.base_url + "/oauth/authorize")
    url = op.here("sellers", "authorize", "main").stdout.strip()
    assert parse_qs(urlsplit(url).query)["client_id"] == [APP_KEY]
    with requests.Session() as http:
        code = sandbox_code(sandbox, http)
    op.secrets.append(code)
    assert op.json_here("sellers", "complete", "main", "--code", code)[
        "last_refresh_result"] == "authorized"


def test_the_callback_uses_the_app_of_the_seller(op, test_secrets, client_digest, sandbox):
    registry_of_a_stored_app(op, test_secrets, client_digest)
    with shim_on(op.env) as shim, registry(op.env) as store:
        link = authorization.consent_link(
            store, seller="main", app_key=APP_KEY,
            authorize_url=sandbox.base_url + "/oauth/authorize", public_url=shim.base_url,
            now=time.time())
        callback = consent_at_sandbox(shim.http, link.url)
        op.secrets.append(parse_qs(urlsplit(callback).query)["code"][0])
        assert shim.http.get(callback, timeout=10).status_code == 200


# --- declarative mode ----------------------------------------------------------------------------

def test_declarative_mode_is_read_only_and_lists_the_file(op, test_secrets, client_digest,
                                                          tmp_path):
    path = tmp_path / "shim.toml"
    path.write_text(f"""
[[sellers]]
name = "main"
store_id = "{STORE_ID}"
access_token = {{env = "MAIN_ACCESS_TOKEN"}}

[[clients]]
client_id = "erp"
client_secret_digest = "{client_digest}"
scopes = ["read:product"]
seller = "main"
""")
    declarative = {"SHIM_DATABASE_URL": "", "MAIN_ACCESS_TOKEN": test_secrets.access_token}
    write = op("clients", "add", "wms", "--seller", "main", "--config", str(path),
               env=declarative, expect=2)
    assert "read-only in declarative mode" in write.stderr and write.stdout == ""

    declarative["SHIM_CONFIG"] = str(path)  # the default for --config
    for args in [("apps", "add", "--app-key", "100002"),
                 ("sellers", "add", "spare", "--store-id", OTHER_STORE_ID),
                 ("sellers", "remove", "main"), ("sellers", "import-tokens", "main"),
                 ("sellers", "authorize", "main"), ("sellers", "complete", "main"),
                 ("clients", "disable", "erp"), ("clients", "enable", "erp"),
                 ("clients", "rotate", "erp")]:
        result = op.here(*args, stdin="{}", env=declarative, expect=2)
        assert "read-only in declarative mode" in result.stderr and result.stdout == "", args
    assert op.here("apps", "list", "--json", env=declarative).stdout.strip() == json.dumps(
        [{"app_key": APP_KEY, "source": "settings"}], indent=2)
    [seller] = json.loads(op.here("sellers", "list", "--json", env=declarative).stdout)
    assert (seller["name"], seller["store_id"], seller["has_tokens"]) == ("main", STORE_ID, True)
    [client] = json.loads(op.here("clients", "list", "--json", env=declarative).stdout)
    assert (client["client_id"], client["scopes"], client["enabled"]) == (
        "erp", ["read:product"], True)


# --- help ----------------------------------------------------------------------------------------

def test_every_command_has_help(op):
    top = op("--help").stdout
    assert all(group in top for group in GROUPS)
    assert "refresh_expires_at" in op.here("sellers", "import-tokens", "--help").stdout
    for group, names in GROUPS.items():
        listing = op.here(group, "--help").stdout
        assert listing.startswith(f"usage: redmart-shim {group}")
        assert all(name in listing for name in names)
        for name in names:
            page = op.here(group, name, "--help").stdout
            assert page.startswith(f"usage: redmart-shim {group} {name}")
            assert "--config" in page and "--json" in page


def test_operator_mistakes_are_clear_errors_not_tracebacks(op, test_secrets):
    """A review found each of these ending in a traceback."""
    op.here("sellers", "add", "main", "--store-id", STORE_ID)
    op.here("sellers", "import-tokens", "main", stdin=json.dumps(token_answer(test_secrets)))
    wrong_key = op.here("sellers", "list", expect=1, env={"SHIM_ENCRYPTION_KEY": new_key()})
    assert "cannot be decrypted" in wrong_key.stderr and "SHIM_ENCRYPTION_KEY" in wrong_key.stderr
    bad_key = op.here("sellers", "list", expect=2, env={"SHIM_ENCRYPTION_KEY": "notakey"})
    assert "SHIM_ENCRYPTION_KEY is not a valid key" in bad_key.stderr
    down = op.here("migrate", expect=1,
                   env={"SHIM_DATABASE_URL": "postgresql://127.0.0.1:1/nothing",
                        "SHIM_STORE_TIMEOUT_S": "1"})
    assert "the database is unavailable" in down.stderr
    for args in (["serve", "--dev", "--bind", "localhost"],
                 ["record", "--listen", "127.0.0.1:notaport"],
                 ["record", "--listen", "127.0.0.1:99999"],
                 ["sandbox", "--port", "-1", "--credentials-file", "x"]):
        refused = op.here(*args, expect=2)
        assert "port" in refused.stderr
    for result in (wrong_key, bad_key, down, refused):
        assert "Traceback" not in result.stderr
