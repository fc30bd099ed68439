"""Registry commands of ``redmart-shim``: apps, sellers and legacy clients in the database.

    redmart-shim apps     add | list
    redmart-shim sellers  add | list | remove | import-tokens | authorize | complete
    redmart-shim clients  add | list | disable | enable | rotate

Exit status: 0 done, 1 refused (exists, not found, in use, the platform said no, the
database is unreachable), 2 usage or configuration error, which includes any write in
declarative mode (no ``database_url``: the config file is the registry, read-only like
Kong's DB-less mode). Messages go to stderr, data to stdout (one JSON document with
``--json``). No secret is ever printed except a client secret this command just made, once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from marshmallow import ValidationError

from shim import authorization, config, credentials, scopes, usage
from shim.store import open_store
from shim.store.crypto import SealError
from shim.store.errors import StoreError, StoreUnavailable
from shim.store.records import DAY_S, App, Client, Seller, TokenGrant

if TYPE_CHECKING:
    from shim.config import Settings
    from shim.store.memory import MemoryStore
    from shim.store.sql import SqlStore
    from shim.store.tokencache import Revocation

    AnyStore = MemoryStore | SqlStore  # what a command that only reads gets

    # What add_parser is called on: the object argparse's add_subparsers returns.
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

# A command: the parsed arguments, the settings and a store (an SqlStore for commands that
# write, decided at run time by _runner) in, the exit status out.
Command = Callable[[argparse.Namespace, "Settings", Any], int]

REGIONS = ("sg", "my", "th", "vn", "ph", "id")
MAX_INPUT_CHARS = 64 * 1024  # a token answer is ~1 KiB; anything this big is a mistake
READ_ONLY = ("the registry is read-only in declarative mode (no database_url): edit the "
             "config file and restart, or set database_url to manage it with these commands")
_IDENTIFIER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MILLISECONDS = 1e11  # epoch seconds pass this in the year 5138; epoch milliseconds did in 1973


class UsageError(Exception):
    """Raised for input the command cannot use (exit 2); the message says what to fix."""


class Refused(Exception):
    """Raised when the registry refuses the operation (exit 1)."""


# --- argument types (argparse turns their errors into exit 2 with the usage line) --------------

def _identifier(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not _IDENTIFIER.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"a {kind} is 1 to 64 characters of A-Z a-z 0-9 . _ -")
        return text
    return check


def _days(text: str) -> int:
    match = re.fullmatch(r"([0-9]{1,4})d?", text.strip())
    if not match or not 1 <= int(match[1]) <= 3660:
        raise argparse.ArgumentTypeError("a number of days from 1 to 3660, like 30d or 30")
    return int(match[1])


def _store_id(text: str) -> str:
    if not _DIGITS.fullmatch(text):
        raise argparse.ArgumentTypeError("a store id is 1 to 19 digits")
    return text


def _scope_list(text: str) -> frozenset[str]:
    granted = frozenset(text.replace(",", " ").split())
    unknown = sorted(granted - set(scopes.ALL))
    if unknown or not granted:
        what = f"unknown scope(s) {', '.join(unknown)}" if unknown else "no scope given"
        raise argparse.ArgumentTypeError(f"{what}; valid scopes: {' '.join(scopes.ALL)}")
    return granted


def _env_name(text: str) -> str:
    if not _ENV_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError("not an environment variable name")
    return text


# --- the parser --------------------------------------------------------------------------------

def add_commands(commands: _SubParsers) -> None:
    """Add the registry sub-commands to the ``redmart-shim`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (default: $SHIM_CONFIG)")
    common.add_argument("--json", action="store_true",
                        help="print the result as one JSON document")

    def group(name: str, help_text: str) -> _SubParsers:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        return parser.add_subparsers(dest=f"{name}_command", required=True,
                                     metavar="COMMAND")

    def command(group_parsers: _SubParsers, name: str, help_text: str, run: Command, *,
                writes: bool, description: str | None = None) -> argparse.ArgumentParser:
        parser = group_parsers.add_parser(name, help=help_text,
                                          description=description or help_text,
                                          parents=[common])
        parser.set_defaults(run=_runner(run, writes=writes))
        return parser

    apps = group("apps", "Lazada apps whose secrets the shim keeps (beside the settings' app)")
    add = command(apps, "add", "store an app and its secret (read from stdin)", _apps_add,
                  writes=True)
    add.add_argument("--app-key", required=True, type=_identifier("app key"),
                     help="the app's key on the Lazada Open Platform")
    add.add_argument("--secret-env", metavar="NAME", type=_env_name,
                     help="read the app secret from this environment variable, not stdin")
    add.add_argument("--replace", action="store_true",
                     help="replace the secret of an app already stored")
    command(apps, "list", "list the apps (never their secrets)", _apps_list, writes=False)

    sellers = group("sellers", "sellers (RedMart stores) the shim calls the platform for")
    add = command(sellers, "add", "register a seller (then import its tokens or authorize it)",
                  _sellers_add, writes=True)
    add.add_argument("name", metavar="NAME", type=_identifier("seller name"),
                     help="the seller's name in the shim (clients name it with --seller)")
    add.add_argument("--store-id", required=True, type=_store_id,
                     help="the seller's RedMart store id (Seller Center: Switch Store)")
    add.add_argument("--region", choices=REGIONS, default="sg",
                     help="the seller's Lazada region (default: %(default)s)")
    add.add_argument("--app-key", type=_identifier("app key"),
                     help="the app the seller authorized (default: the settings' app)")
    command(sellers, "list", "list sellers and their token state (never the tokens)",
            _sellers_list, writes=False)
    remove = command(sellers, "remove", "remove a seller no client acts for", _sellers_remove,
                     writes=True)
    remove.add_argument("name", metavar="NAME", type=_identifier("seller name"),
                        help="the seller to remove")
    imports = command(
        sellers, "import-tokens", "store the tokens of an existing integration (JSON on stdin)",
        _sellers_import, writes=True,
        description="Store the tokens of a seller migrating from an existing integration, "
                    "read as JSON from stdin: a Lazada token answer (access_token, "
                    "refresh_token, expires_in, refresh_expires_in, ...) as /auth/token/create "
                    "returned it, or access_token, refresh_token, access_expires_at and "
                    "refresh_expires_at (epoch seconds).")
    imports.add_argument("name", metavar="NAME", type=_identifier("seller name"),
                         help="the seller whose tokens these are")
    authorize = command(sellers, "authorize",
                        "print a single-use consent link to send to the seller",
                        _sellers_authorize, writes=True)
    authorize.add_argument("name", metavar="NAME", type=_identifier("seller name"),
                           help="the seller to send the link to")
    complete = command(
        sellers, "complete", "exchange a pasted authorization code for the seller's tokens",
        _sellers_complete, writes=True,
        description="Exchange an authorization code for the seller's tokens. The code comes "
                    "from --code or stdin; the whole address the seller's browser landed on "
                    "(with code= and state=) works too, and its state is checked.")
    complete.add_argument("name", metavar="NAME", type=_identifier("seller name"),
                          help="the seller who gave consent")
    complete.add_argument("--code", help="the code (default: read from stdin)")

    planner = commands.add_parser(
        "usage", parents=[common],
        help="which legacy clients still call, what and how often (the retirement planner)",
        description="Print each legacy client's calls per route over the last days (from the "
                    "daily counts in the database, all instances added up): calls, share of "
                    "errors, first and last call, and whether it is ready to retire (no call "
                    "for retire_after_days). With --json: the calls and errors of every day.")
    planner.add_argument("--since", type=_days, default=30, metavar="DAYS",
                       help="how many days back, today included: 30d or 30 (default: 30d)")
    planner.set_defaults(run=_runner(_usage, writes=False))

    clients = group("clients", "legacy API clients")
    add = command(clients, "add", "add a client; its new secret is printed once", _clients_add,
                  writes=True)
    add.add_argument("client_id", metavar="CLIENT_ID", type=_identifier("client id"),
                     nargs="?", help="the client's id (default: a new one in Kong's form, "
                                     "32 letters and digits)")
    add.add_argument("--seller", required=True, type=_identifier("seller name"),
                     help="the seller the client acts for")
    add.add_argument("--scopes", type=_scope_list, default=frozenset(scopes.ALL),
                     help=f"scopes the client may ask for (default all: {' '.join(scopes.ALL)})")
    add.add_argument("--secret-stdin", action="store_true",
                     help="keep the client's existing secret, read from stdin, instead of "
                          "making one (migrating a client without touching its configuration)")
    command(clients, "list", "list clients (never their secrets)", _clients_list, writes=False)
    for name, help_text, run in (
            ("disable", "disable a client; its issued tokens stop working", _clients_disable),
            ("enable", "enable a disabled client", _clients_enable),
            ("rotate", "give a client a new secret, printed once; its tokens stop working",
             _clients_rotate)):
        parser = command(clients, name, help_text, run, writes=True)
        parser.add_argument("client_id", metavar="CLIENT_ID", type=_identifier("client id"),
                            help="the client's id")


def _runner(function: Command, *,
            writes: bool) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: settings, the store, and the exit status for each kind of failure."""
    def run(args: argparse.Namespace) -> int:
        settings = config.load(args.config)  # ConfigError: the caller exits 2
        if writes and not settings.database_url:
            return _fail(READ_ONLY, 2)
        store = None
        try:
            store = open_store(settings)
            return function(args, settings, store)
        except UsageError as error:
            return _fail(str(error), 2)
        except Refused as error:
            return _fail(str(error), 1)
        except StoreUnavailable as error:
            return _fail(f"the database is unavailable: {error}", 1)
        except SealError as error:
            return _fail(f"{error}: is SHIM_ENCRYPTION_KEY the key the database was written "
                         "with?", 1)
        except StoreError as error:  # exists, not found, in use
            return _fail(str(error), 1)
        finally:
            if store is not None and hasattr(store, "close"):
                store.close()
    return run


def _fail(message: str, status: int) -> int:
    print(f"redmart-shim: {message}", file=sys.stderr)
    return status


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _note_revocation(revocation: Revocation | None) -> None:
    """Say when instances missed the acknowledgement deadline (their caches were emptied)."""
    if revocation is not None and revocation.evicted:
        _note(f"{len(revocation.evicted)} instance(s) did not acknowledge within the deadline: "
              f"their token caches were switched off until they re-register; waited "
              f"{revocation.waited_s:.1f} s for their leases to end "
              f"({', '.join(revocation.evicted)})")


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _when(epoch: float | None) -> str | None:
    """Return an epoch time as ISO 8601 UTC, or ``None``."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [header, *[tuple("-" if value is None else str(value) for value in row)
                       for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths,
                                                                          strict=True)).rstrip()
                     for row in cells)


def _read_stdin(what: str) -> str:
    """Return stdin, stripped (a prompt first on a terminal); ``UsageError`` when empty."""
    if sys.stdin.isatty():
        _note(f"paste {what}, then press Ctrl-D on a new line:")
    text = sys.stdin.read(MAX_INPUT_CHARS + 1)
    if len(text) > MAX_INPUT_CHARS:
        raise UsageError(f"{what} is too long (more than {MAX_INPUT_CHARS} characters)")
    text = text.strip()
    if not text:
        raise UsageError(f"nothing on stdin: expected {what}")
    return text


def _read_secret(prompt: str) -> str:
    """Return a secret from stdin (hidden prompt on a terminal), one line, stripped."""
    secret = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()
    secret = secret.strip()
    if not secret or len(secret) > 512 or not secret.isprintable():
        raise UsageError("the secret on stdin is empty or malformed (one line of text)")
    return secret


# --- apps --------------------------------------------------------------------------------------

def _apps_add(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    if args.secret_env:
        secret = os.environ.get(args.secret_env, "").strip()
        if not secret:
            raise UsageError(f"environment variable {args.secret_env} is not set or empty")
    else:
        secret = _read_secret(f"app secret of {args.app_key}: ")
    if store.get_app(args.app_key) is not None and not args.replace:
        raise Refused(f"app {args.app_key!r} exists already (--replace changes its secret)")
    store.put_app(App(args.app_key, secret))
    if args.app_key == settings.app_key:
        _note(f"note: {args.app_key} is also the settings' app, whose secret from the "
              "settings is the one used")
    return _emit(args, {"app_key": args.app_key, "stored": True},
                 f"app {args.app_key} stored (its secret is sealed in the database)")


def _apps_list(args: argparse.Namespace, settings: Settings, store: AnyStore) -> int:
    listed = [{"app_key": settings.app_key, "source": "settings"}]
    stored = store.list_apps() if hasattr(store, "list_apps") else []
    listed += [{"app_key": key, "source": "database"} for key in stored]
    return _emit(args, listed, _table(("APP_KEY", "SOURCE"),
                                      [(app["app_key"], app["source"]) for app in listed]))


# --- sellers -----------------------------------------------------------------------------------

def _sellers_add(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    if args.app_key not in (None, settings.app_key) and store.get_app(args.app_key) is None:
        raise Refused(f"no app {args.app_key!r}: store it first with: redmart-shim apps add "
                      f"--app-key {args.app_key}")
    store.add_seller(Seller(name=args.name, store_id=args.store_id, region=args.region,
                            app_key=args.app_key))
    _note(f"next: redmart-shim sellers import-tokens {args.name} (tokens of an existing "
          f"integration) or redmart-shim sellers authorize {args.name}")
    return _emit(args, _seller_view(_existing_seller(store, args.name)),
                 f"seller {args.name} added (store {args.store_id}, region {args.region})")


def _seller_view(seller: Seller) -> dict[str, Any]:
    """What may be shown of a seller: everything but its tokens."""
    return {
        "name": seller.name,
        "store_id": seller.store_id,
        "region": seller.region,
        "app_key": seller.app_key,
        "has_tokens": bool(seller.access_token),
        "access_expires_at": _when(seller.access_expires_at),
        "refresh_expires_at": _when(seller.refresh_expires_at),
        "needs_reauthorization": bool(seller.needs_reauth),
        "reauthorization_reason": seller.reauth_reason,
        "last_refresh_at": _when(seller.last_refresh_at),
        "last_refresh_result": seller.last_refresh_result,
        "account": seller.account,
    }


def _token_state(seller: Seller, now: float) -> str:
    if seller.needs_reauth:
        return f"re-authorize ({seller.reauth_reason or 'refresh refused'})"
    if not seller.access_token:
        return "no tokens"
    if seller.refresh_expires_at is not None and seller.refresh_expires_at <= now:
        return "re-authorize (refresh token expired)"
    return "ok"


def _sellers_list(args: argparse.Namespace, settings: Settings, store: AnyStore) -> int:
    sellers = store.list_sellers()
    now = time.time()
    rows = [(seller.name, seller.store_id, seller.region, seller.app_key or settings.app_key,
             _when(seller.access_expires_at), _when(seller.refresh_expires_at),
             _token_state(seller, now), seller.last_refresh_result)
            for seller in sellers]
    return _emit(args, [_seller_view(seller) for seller in sellers], _table(
        ("NAME", "STORE", "REGION", "APP", "ACCESS_EXPIRES", "REFRESH_EXPIRES", "STATE",
         "LAST_REFRESH"), rows))


def _sellers_remove(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    _note_revocation(store.remove_seller(args.name))
    return _emit(args, {"name": args.name, "removed": True}, f"seller {args.name} removed")


def _sellers_import(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    if store.get_seller(args.name) is None:
        raise Refused(f"no seller {args.name!r}")
    now = time.time()
    grant = grant_from_input(_read_stdin("the token JSON"), now)
    seller = store.store_grant(args.name, grant, result="imported")
    if grant.access_expires_at <= now:
        _note("note: the access token has expired; the shim refreshes it before the first call")
    return _emit(args, _seller_view(seller),
                 f"seller {args.name}: tokens imported (access token until "
                 f"{_when(seller.access_expires_at)}, refresh token until "
                 f"{_when(seller.refresh_expires_at)})")


def grant_from_input(text: str, now: float) -> TokenGrant:
    """Return the tokens in pasted JSON: a Lazada token answer or tokens with absolute expiries.

    Error messages name fields, never values: the input is full of secrets.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"the input is not JSON (line {error.lineno}, column {error.colno})"
                         ) from None
    if not isinstance(document, dict):
        raise UsageError("expected a JSON object")
    if document.get("code") not in (None, "0", 0):
        raise UsageError("this token answer is an error (its code is not \"0\"), not tokens")
    relative = {"expires_in", "refresh_expires_in"} & document.keys()
    absolute = {"access_expires_at", "refresh_expires_at"} & document.keys()
    if relative and absolute:
        raise UsageError("give either expires_in/refresh_expires_in (a token answer) or "
                         "access_expires_at/refresh_expires_at, not both")
    if relative:
        from shim.authorization import grant_from

        try:
            grant = grant_from(document, now)
        except ValidationError as error:
            raise UsageError(f"not a usable token answer: {_fields_wrong(error)}") from None
        for name in ("access_token", "refresh_token"):
            if not getattr(grant, name).strip():
                raise UsageError(f"not a usable token answer: {name} is empty")
        return grant
    if absolute:
        return _absolute_grant(document, now)
    raise UsageError("expected a Lazada token answer (access_token, refresh_token, expires_in, "
                     "refresh_expires_in) or access_token, refresh_token, access_expires_at "
                     "and refresh_expires_at (epoch seconds)")


def _fields_wrong(error: ValidationError) -> str:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    parts = []
    for name, problems in sorted(messages.items()):
        text = "; ".join(map(str, problems)) if isinstance(problems, list) else str(problems)
        parts.append(text if name == "_schema" else f"{name} ({text})")
    return ", ".join(parts)


def _absolute_grant(document: Mapping[str, Any], now: float) -> TokenGrant:
    tokens: dict[str, str] = {}
    for name in ("access_token", "refresh_token"):
        value = document.get(name)
        if not isinstance(value, str) or not value or len(value) > 1024 \
                or not value.isprintable() or value != value.strip():
            raise UsageError(f"{name} is missing or not a token")
        tokens[name] = value
    expiries: dict[str, float] = {}
    for name in ("access_expires_at", "refresh_expires_at"):
        value = document.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name} is missing or not a number of epoch seconds")
        if value > _MILLISECONDS:
            raise UsageError(f"{name} looks like milliseconds; give epoch seconds")
        expiries[name] = float(value)
    if expiries["refresh_expires_at"] <= now:
        raise UsageError(f"the refresh token expired at {_when(expiries['refresh_expires_at'])}: "
                         "authorize the seller instead (redmart-shim sellers authorize)")
    extras = {name: document[name] for name in ("account", "country")
              if isinstance(document.get(name), str) and document[name]}
    return TokenGrant(access_token=tokens["access_token"], refresh_token=tokens["refresh_token"],
                      access_expires_at=expiries["access_expires_at"],
                      refresh_expires_at=expiries["refresh_expires_at"],
                      account=extras.get("account"), country=extras.get("country"))


def _seller_app(settings: Settings, store: SqlStore, seller: Seller) -> tuple[str, str]:
    """Return the key and secret of the app the seller authorizes."""
    if seller.app_key in (None, settings.app_key):
        return settings.app_key, settings.app_secret
    app = store.get_app(seller.app_key)
    if app is None:
        raise Refused(f"seller {seller.name!r} names app {seller.app_key!r}, which is not "
                      "stored (redmart-shim apps add)")
    return app.app_key, app.app_secret


def _existing_seller(store: SqlStore, name: str) -> Seller:
    seller = store.get_seller(name)
    if seller is None:
        raise Refused(f"no seller {name!r}")
    return seller


def _sellers_authorize(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    seller = _existing_seller(store, args.name)
    app_key, _secret = _seller_app(settings, store, seller)
    try:
        link = authorization.consent_link(
            store, seller=seller.name, app_key=app_key, authorize_url=settings.authorize_url,
            public_url=settings.public_url, now=time.time())
    except authorization.AuthorizationError as error:
        raise Refused(str(error)) from None
    callback = settings.public_url.rstrip("/") + authorization.CALLBACK_PATH
    _note(f"send this link to seller {seller.name}; it works once, until "
          f"{_when(link.expires_at)}. The seller's browser comes back to {callback}; if that "
          f"address is not reachable, have the seller copy the address the browser shows and "
          f"run: redmart-shim sellers complete {seller.name}  (then paste it)")
    return _emit(args, {"seller": seller.name, "url": link.url,
                        "expires_at": _when(link.expires_at)}, link.url)


def _code_from(text: str, store: SqlStore, seller: str,
               now: float) -> tuple[str, authorization.Claim | None]:
    """Return the code in ``text`` (the code itself, or the callback address holding it),
    with the claimed state of an address.

    A callback address also carries the link's ``state``: it is consumed, and must have
    been made for this seller.
    """
    if "://" not in text and "code=" not in text:
        return text, None
    query = parse_qs(urlsplit(text).query if "://" in text else text.lstrip("?"))
    code = (query.get("code") or [""])[0]
    if not code:
        raise UsageError("the address has no code parameter")
    state = (query.get("state") or [""])[0]
    claim = None
    if state:
        try:
            claim = authorization.claim_state(store, state, now)
        except authorization.AuthorizationError as error:
            raise Refused(str(error)) from None
        if claim.seller != seller:
            authorization.give_back(store, claim)  # still good for the seller it was made for
            raise Refused(f"this authorization was made for seller {claim.seller!r}, "
                          f"not {seller!r}")
    return code, claim


def _sellers_complete(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    if args.code is not None and not args.code.strip():
        raise UsageError("no code given")
    seller = _existing_seller(store, args.name)
    app_key, app_secret = _seller_app(settings, store, seller)
    now = time.time()
    text = args.code.strip() if args.code is not None else _read_stdin("the code")
    code, claim = _code_from(text, store, seller.name, now)
    if not code:
        raise UsageError("no code given")
    from shim.services import build_client

    with build_client(settings, app_key, app_secret) as upstream:
        try:
            updated = authorization.exchange_code(store, upstream, seller=seller.name,
                                                  code=code, now=now, claim=claim)
        except authorization.AuthorizationError as error:
            raise Refused(str(error)) from None
    return _emit(args, _seller_view(updated),
                 f"seller {updated.name} authorized"
                 + (f" (account {updated.account})" if updated.account else "")
                 + f": access token until {_when(updated.access_expires_at)}, refresh token "
                   f"until {_when(updated.refresh_expires_at)}")


# --- clients -----------------------------------------------------------------------------------

def _client_view(client: Client) -> dict[str, Any]:
    """What may be shown of a client: everything but its secret digest."""
    return {"client_id": client.client_id, "seller": client.seller,
            "scopes": sorted(client.scopes), "enabled": client.enabled,
            "created_at": _when(client.created_at)}


def _show_secret(args: argparse.Namespace, client: Client, secret: str, what: str) -> int:
    _note(f"{what}. The secret is shown this once: only a digest of it is kept.")
    return _emit(args, {"client_id": client.client_id, "client_secret": secret,
                        "scopes": sorted(client.scopes), "seller": client.seller},
                 f"client_id: {client.client_id}\nclient_secret: {secret}")


def _generated_digest(secret: str, settings: Settings) -> str:
    """Return the digest of a secret ``new_token`` made: fast and keyed (190 random bits
    need no slow hash), or scrypt when no encryption key is set."""
    if settings.encryption_key:
        return credentials.hash_generated_secret(secret, settings.encryption_key)
    return credentials.hash_secret(secret)


def _clients_add(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    if store.get_seller(args.seller) is None:
        raise Refused(f"no seller {args.seller!r}")
    client_id = args.client_id or credentials.new_client_id()
    if store.get_client(client_id, include_disabled=True) is not None:
        raise Refused(f"client {client_id!r} exists already")
    given = _read_secret(f"existing secret of {client_id}: ") if args.secret_stdin else None
    secret = given or credentials.new_token()
    digest = (credentials.hash_secret(given) if given
              else _generated_digest(secret, settings))
    client = Client(client_id=client_id, secret_digest=digest,
                    scopes=args.scopes, seller=args.seller)
    store.add_client(client)
    what = f"client {client.client_id} added for seller {client.seller} " \
           f"(scopes: {' '.join(sorted(client.scopes))})"
    if given:
        return _emit(args, _client_view(store.get_client(client.client_id) or client),
                     what + " with the secret it already had")
    return _show_secret(args, client, secret, what)


def _clients_list(args: argparse.Namespace, settings: Settings, store: AnyStore) -> int:
    clients = store.list_clients()
    rows = [(client.client_id, client.seller, "yes" if client.enabled else "no",
             " ".join(sorted(client.scopes)), _when(client.created_at)) for client in clients]
    return _emit(args, [_client_view(client) for client in clients],
                 _table(("CLIENT_ID", "SELLER", "ENABLED", "SCOPES", "CREATED"), rows))


def _clients_disable(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    _note_revocation(store.set_client_enabled(args.client_id, False))
    return _emit(args, {"client_id": args.client_id, "enabled": False},
                 f"client {args.client_id} disabled; its tokens no longer work")


def _clients_enable(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    store.set_client_enabled(args.client_id, True)
    return _emit(args, {"client_id": args.client_id, "enabled": True},
                 f"client {args.client_id} enabled")


def _clients_rotate(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    client = store.get_client(args.client_id, include_disabled=True)
    if client is None:
        raise Refused(f"no client {args.client_id!r}")
    secret = credentials.new_token()
    _note_revocation(store.set_client_secret(client.client_id,
                                             _generated_digest(secret, settings)))
    return _show_secret(args, client, secret,
                        f"client {client.client_id} has a new secret; the old one and the "
                        "tokens issued with it no longer work")


# --- usage -------------------------------------------------------------------------------------

def _usage(args: argparse.Namespace, settings: Settings, store: AnyStore) -> int:
    if not settings.database_url:
        raise UsageError("usage is kept in the database: without database_url each process "
                         "counts in its own memory only (see the status page)")
    now = time.time()
    plan = usage.plan(store.usage_by_route(int(now // DAY_S) - args.since + 1),
                      store.list_clients(), now=now, days=args.since,
                      retire_after_days=settings.retire_after_days)
    dates = plan.day_dates()
    rows: list[tuple[Any, ...]] = []
    for client in plan.clients:
        status = "ready to retire" if client.ready_to_retire else "in use"
        if client.seller is None:
            status += " (not registered)"
        rows.append((client.client_id, "(all)", client.calls, _share(client.errors, client.calls),
                     _when(client.first_at), _when(client.last_at), client.idle_days, status))
        rows += [(client.client_id, route.route, route.calls, _share(route.errors, route.calls),
                  _when(route.first_at), _when(route.last_at), None, "")
                 for route in client.routes]
    text = (f"legacy calls {dates[0]} to {dates[-1]} (UTC days); ready to retire: no call "
            f"for {plan.retire_after_days} days\n"
            + _table(("CLIENT_ID", "ROUTE", "CALLS", "ERRORS", "FIRST_CALL", "LAST_CALL",
                      "IDLE_DAYS", "STATUS"), rows))
    data = {
        "since_days": plan.days, "from": dates[0], "to": dates[-1],
        "retire_after_days": plan.retire_after_days,
        "clients": [{
            "client_id": client.client_id, "seller": client.seller,
            "enabled": client.enabled, "calls": client.calls, "errors": client.errors,
            "error_share": round(client.error_share, 4),
            "first_call": _when(client.first_at), "last_call": _when(client.last_at),
            "idle_days": client.idle_days, "ready_to_retire": client.ready_to_retire,
            "routes": [{
                "route": route.route, "calls": route.calls, "errors": route.errors,
                "error_share": round(route.errors / route.calls, 4) if route.calls else 0.0,
                "first_call": _when(route.first_at), "last_call": _when(route.last_at),
                "daily": [{"date": date, "calls": calls, "errors": errors}
                          for date, calls, errors in zip(dates, route.daily_calls,
                                                         route.daily_errors, strict=True)],
            } for route in client.routes],
        } for client in plan.clients],
    }
    return _emit(args, data, text)


def _share(errors: int, calls: int) -> str:
    return f"{errors} ({errors / calls:.0%})" if calls else "0"
