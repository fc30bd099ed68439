"""``redmart-shim``: serve the shim, run the sandbox, or both together as a demo."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import TYPE_CHECKING, NoReturn

from shim import cli_registry, config, credentials, logs, scopes
from shim.store import open_store
from shim.store.crypto import SealError, new_key
from shim.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from types import FrameType

    from shim.sandbox import SandboxConfig

log = logging.getLogger(__name__)
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105 (a sandbox-only demo credential, printed on purpose)
DEMO_STORE_ID = "414"
DEMO_APP_KEY = "100001"


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every command and option."""
    parser = argparse.ArgumentParser(
        prog="redmart-shim",
        description="Serve the shim, run the sandbox, or both together as a demo; manage "
                    "the sellers and clients of its database.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('redmart-shim')}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the legacy API with gunicorn and production settings "
                      "(shim/gunicorn_conf.py; SHIM_BIND, SHIM_WORKERS, ... override them)")
    serve.add_argument("--config", help="TOML settings file (default: $SHIM_CONFIG)")
    serve.add_argument("--bind", type=address,
                       help="host:port, :port for 127.0.0.1 (default: $SHIM_BIND, the "
                            "file's [serve] bind, else 0.0.0.0:8080; 127.0.0.1:8080 with --dev)")
    serve.add_argument("--dev", action="store_true",
                       help="Werkzeug's development server instead (one process, threads)")
    serve.set_defaults(run=_serve)

    sandbox = commands.add_parser(
        "sandbox", help="run the Lazada sandbox in the foreground; print the shim's settings "
                        "for it", description="Run the Lazada sandbox in the foreground. "
                        "It prints the exports that point the shim at it and writes them, "
                        "secrets included, to --credentials-file (mode 0600).")
    _listen_options(sandbox, "the sandbox", default_port=8081)
    sandbox.add_argument("--app-key", default=DEMO_APP_KEY,
                         help="the app key it accepts (default: %(default)s)")
    sandbox.add_argument("--store-id", default=DEMO_STORE_ID,
                         help="the store of its one seller (default: %(default)s)")
    sandbox.add_argument("--credentials-file", required=True,
                         help="where to write the exports with the generated app secret and "
                              "seller tokens (mode 0600), to load with: . FILE")
    sandbox.add_argument("--json", action="store_true",
                         help="print the address and the non-secret exports as one JSON "
                              "document")
    sandbox.set_defaults(run=_sandbox)

    demo = commands.add_parser(
        "demo", help="the sandbox and the shim together, with a client",
        description="Run the Lazada sandbox and the shim on it (Werkzeug's server), with a "
                    "demo client. The status page and /metrics take SHIM_OPERATOR_TOKEN when "
                    "it is set, else a token made for this run and printed.")
    _listen_options(demo, "the shim", default_port=8080)
    demo.add_argument("--sandbox-port", type=port_number, default=0,
                      help="port of the sandbox (default: any free port)")
    demo.add_argument("--json", action="store_true",
                      help="print the addresses and credentials as one JSON document")
    demo.set_defaults(run=_demo)

    hash_secret = commands.add_parser("hash-secret",
                                      help="print the digest of a client secret for the config")
    hash_secret.add_argument("--json", action="store_true",
                             help='print {"digest": ...} as one JSON document')
    hash_secret.set_defaults(run=_hash_secret)

    new_key = commands.add_parser("new-key", help="print a new SHIM_ENCRYPTION_KEY")
    new_key.add_argument("--json", action="store_true",
                         help='print {"key": ...} as one JSON document')
    new_key.set_defaults(run=_new_key)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--config", help="TOML settings file (default: $SHIM_CONFIG)")
    migrate.add_argument("--json", action="store_true",
                         help='print {"applied": [...]} (the migrations applied) as one JSON '
                              'document')
    migrate.set_defaults(run=_migrate)

    record = commands.add_parser(
        "record", help="serve the legacy API (development server) and write each call it "
                       "serves as a contract case, secrets and personal values scrubbed")
    record.add_argument("--config", help="TOML settings file (default: $SHIM_CONFIG)")
    record.add_argument("--out", required=True, help="directory of the cases (<route>/<case>/)")
    record.add_argument("--listen", type=address, default="127.0.0.1:8080",
                        help="address:port to serve on (default: 127.0.0.1:8080; port 0: any)")
    record.add_argument("--scrub-addresses", action="store_true",
                        help="replace pickup locations' names and addresses too")
    record.set_defaults(run=_record)

    verify = commands.add_parser(
        "verify", help="replay a directory of cases against this code; exit 1 if any differs")
    verify.add_argument("directory", help="a directory laid out as <route>/<case>/case.json")
    verify.add_argument("--only", action="append", default=[], metavar="ROUTE[/CASE]",
                        help="run only this case or route (repeatable)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--jobs", type=int, default=4, help="cases run at a time (default 4)")
    verify.set_defaults(run=_verify)

    settings = commands.add_parser(
        "settings", help="list every setting: TOML table and key, environment variable, "
                         "type, default, meaning (docs/settings.md is this with --markdown)")
    shape = settings.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print a JSON array")
    shape.add_argument("--markdown", action="store_true",
                       help="print docs/settings.md (regenerate it with this)")
    settings.set_defaults(run=_settings)

    cli_registry.add_commands(commands)
    return parser


def _listen_options(parser: argparse.ArgumentParser, what: str, *, default_port: int) -> None:
    """Add the ``--host``/``--port`` pair of a command that serves ``what`` itself."""
    parser.add_argument("--host", default="127.0.0.1",
                        help=f"address {what} listens on (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=default_port,
                        help=f"port {what} listens on, 0 for any free one "
                             "(default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    """Run the command named on the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        # verify prints its report; the shim's own lines only when something breaks
        quiet = args.command == "verify" and config.BY_NAME["log_level"].env not in os.environ
        logs.configure("error" if quiet else config.from_environment("log_level"))
        status: int = args.run(args)
        return status
    except config.ConfigError as error:
        hint = ""
        if not getattr(args, "config", None) and not os.environ.get("SHIM_CONFIG"):
            hint = ("\nredmart-shim: no settings file was given: name one with --config FILE "
                    "or SHIM_CONFIG, or set SHIM_* variables")
        print(f"redmart-shim: configuration error: {error}{hint}", file=sys.stderr)
        return 2
    except StoreUnavailable as error:
        print(f"redmart-shim: the database is unavailable: {error}", file=sys.stderr)
        return 1
    except SealError as error:
        print(f"redmart-shim: {error}: is SHIM_ENCRYPTION_KEY the key the database was "
              "written with?", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


def address(text: str) -> str:
    """An argparse type: ``host:port`` (``:port`` alone means 127.0.0.1), as host:port."""
    try:
        return config.normal_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _serve(args: argparse.Namespace) -> int:
    if args.bind:
        os.environ["SHIM_BIND"] = args.bind  # the flag wins, here and in gunicorn_conf
    settings = config.load(args.config)  # fail here, clearly, rather than in every worker
    if args.config:
        os.environ["SHIM_CONFIG"] = os.path.abspath(args.config)
    bind = settings.bind or (config.DEV_BIND if args.dev else config.SERVE_BIND)
    host, port = config.host_port(bind)
    busy = _cannot_listen(host, port)
    if busy:
        print(f"redmart-shim: cannot listen on {host}:{port}: {busy}", file=sys.stderr)
        return 1
    if args.dev:
        from shim.app import create_app
        from shim.services import get_services
        from shim.serving import LocalServer

        app = create_app(settings)
        server = LocalServer(app, host=host, port=port)
        log.info("redmart-shim (development server) on %s", server.base_url)
        with get_services(app).start():  # background work while it serves; closed after
            server.serve_forever()
        return 0
    metrics_dir = ""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker counts in its own memory unless prometheus_client writes to files the
        # scrape reads together; it reads this variable when gunicorn imports it.
        # gunicorn_conf's on_exit removes the directory.
        metrics_dir = tempfile.mkdtemp(prefix=config.METRICS_DIR_PREFIX)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", "python:shim.gunicorn_conf"]
    if settings.front == "none":  # gunicorn on the public address: behind the operator's proxy
        os.execv(sys.executable, [*gunicorn, "shim.app:create_app()"])  # noqa: S606 (ours)
    from shim import front

    worker_timeout_s, graceful_timeout_s = config.worker_timeouts(settings)
    try:
        return front.serve(settings, [*gunicorn, "shim.app:create_app(behind_front=True)"],
                           listen=config.normal_address(bind),
                           worker_timeout_s=worker_timeout_s,
                           graceful_timeout_s=graceful_timeout_s)
    except front.FrontMissing as error:
        if metrics_dir:  # nothing started to remove it (gunicorn_conf's on_exit)
            shutil.rmtree(metrics_dir, ignore_errors=True)
        print(f"redmart-shim: {error}", file=sys.stderr)
        return 1


def _cannot_listen(host: str, port: int) -> str | None:
    """Return why ``host:port`` cannot be listened on, or None when it can.

    gunicorn would retry a busy port five times, logging each, before giving up.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host.strip("[]"), port), family=family):
            return None
    except OSError as error:
        return os.strerror(error.errno) if error.errno else str(error)


def _sandbox_config(app_key: str, store_id: str) -> SandboxConfig:
    from shim.sandbox import SandboxConfig, SellerAccount

    now = time.time()
    seller = SellerAccount(store_id=store_id, access_token=secrets.token_urlsafe(24),
                           refresh_token=secrets.token_urlsafe(24),
                           access_expires_at=now + 864000, refresh_expires_at=now + 4320000)
    return SandboxConfig(app_key=app_key, app_secret=secrets.token_urlsafe(24),
                         sellers=[seller])


def sandbox_exports(sandbox_url: str, app_key: str, app_secret: str, access_token: str,
                    refresh_token: str) -> dict[str, str]:
    """Return the shim's settings for a sandbox at ``sandbox_url``, by variable name.

    The seller's tokens carry the names the README's declarative file reads
    (``{ env = "SHIM_MAIN_ACCESS_TOKEN" }``, seller ``main``).
    """
    return {"SHIM_APP_KEY": app_key, "SHIM_APP_SECRET": app_secret,
            "SHIM_API_URL": sandbox_url + "/rest", "SHIM_AUTH_URL": sandbox_url + "/rest",
            "SHIM_AUTHORIZE_URL": sandbox_url + "/oauth/authorize",
            "SHIM_MAIN_ACCESS_TOKEN": access_token, "SHIM_MAIN_REFRESH_TOKEN": refresh_token}


SECRET_EXPORTS = frozenset({"SHIM_APP_SECRET", "SHIM_MAIN_ACCESS_TOKEN",
                            "SHIM_MAIN_REFRESH_TOKEN"})


def _sandbox(args: argparse.Namespace) -> int:
    import json
    import shlex

    from shim.sandbox import SandboxServer

    sandbox_config = _sandbox_config(args.app_key, args.store_id)
    seller = sandbox_config.sellers[0]
    server = SandboxServer(sandbox_config, host=args.host, port=args.port)
    exports = sandbox_exports(server.base_url, sandbox_config.app_key, sandbox_config.app_secret,
                              seller.access_token, seller.refresh_token)
    descriptor = os.open(args.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # the mode above applies only to a file it creates
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# the shim's settings for the sandbox; load them with: . "
                     f"{shlex.quote(args.credentials_file)}\n")
        handle.writelines(f"export {name}={shlex.quote(value)}\n"
                          for name, value in exports.items())
    shown = {name: value for name, value in exports.items() if name not in SECRET_EXPORTS}
    if args.json:
        print(json.dumps({"url": server.base_url, "store_id": seller.store_id,
                          "credentials_file": args.credentials_file, "exports": shown},
                         indent=2), flush=True)
    else:
        print(f"# the Lazada sandbox on {server.base_url} (app {sandbox_config.app_key}, store "
              f"{seller.store_id}); Ctrl-C stops it\n"
              f"# the shim's settings for it; the secrets ({', '.join(sorted(SECRET_EXPORTS))}) "
              f"are only in {args.credentials_file}, so load them all with:\n"
              f"#   . {shlex.quote(args.credentials_file)}\n"
              + "".join(f"export {name}={shlex.quote(value)}\n"
                        for name, value in shown.items()), end="", flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    import json

    from shim.app import create_app
    from shim.config import ClientSettings, SellerSettings, Settings
    from shim.sandbox import SandboxServer
    from shim.services import get_services
    from shim.serving import LocalServer

    # A token given in the environment is the operator's own: used, never printed.
    given_operator_token = os.environ.get("SHIM_OPERATOR_TOKEN") or None
    operator_token = secrets.token_hex(24)
    sandbox_config = _sandbox_config(DEMO_APP_KEY, DEMO_STORE_ID)
    seller = sandbox_config.sellers[0]
    with SandboxServer(sandbox_config, host="127.0.0.1", port=args.sandbox_port) as sandbox:
        settings = Settings(
            app_key=sandbox_config.app_key,
            app_secret=sandbox_config.app_secret,
            api_url=sandbox.api_url,
            auth_url=sandbox.auth_url,
            sellers={"demo": SellerSettings(name="demo", store_id=seller.store_id,
                                            access_token=seller.access_token,
                                            refresh_token=seller.refresh_token)},
            clients={DEMO_CLIENT_ID: ClientSettings(
                client_id=DEMO_CLIENT_ID,
                secret_digest=credentials.hash_secret(DEMO_CLIENT_SECRET),
                scopes=frozenset(scopes.ALL),
                seller="demo",
            )},
            operator_token=given_operator_token or operator_token,
        )
        # The quiet handler: legacy clients may put access_token in query strings.
        app = create_app(settings)
        server = LocalServer(app, host=args.host, port=args.port)
        base = server.base_url
        shown_token = "$SHIM_OPERATOR_TOKEN" if given_operator_token else operator_token
        if args.json:
            print(json.dumps({
                "url": base, "sandbox_url": sandbox.base_url, "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET, "status_page": base + "/operator/status",
                "metrics": base + "/metrics",
                "operator_token": None if given_operator_token else operator_token},
                indent=2), flush=True)
        else:
            print(f"""
redmart-shim demo: the legacy API on {base}, over a Lazada sandbox on {sandbox.base_url}

  demo client:  client_id={DEMO_CLIENT_ID}  client_secret={DEMO_CLIENT_SECRET}
  try:          curl -s -X POST {base}/oauth2/token \\
                  -d grant_type=client_credentials -d client_id={DEMO_CLIENT_ID} \\
                  -d client_secret={DEMO_CLIENT_SECRET}
  status page:  {base}/operator/status  and  {base}/metrics
                with the operator token {shown_token}
                (curl -s -H "Authorization: Bearer {shown_token}" {base}/operator/status,
                or in a browser: any user name, the token as password)

Ctrl-C stops both.
""", flush=True)
        try:
            with get_services(app).start():
                server.serve_forever()
        finally:
            server.stop()
    return 0


def _record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shim.record import recording_app
    from shim.services import get_services
    from shim.serving import LocalServer

    settings = config.load(args.config)
    host, _, port = args.listen.rpartition(":")
    app, recorder = recording_app(settings, Path(args.out),
                                  scrub_addresses=args.scrub_addresses,
                                  report=lambda line: print(line, file=sys.stderr, flush=True))
    server = LocalServer(app, host=host or "127.0.0.1", port=int(port))
    print(f"redmart-shim recording: the legacy API on {server.base_url}, cases written under "
          f"{args.out}; Ctrl-C stops", file=sys.stderr, flush=True)

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a supervisor's stop ends it as cleanly as Ctrl-C
    try:
        with get_services(app).start():
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print(recorder.summary(), file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from shim.record.verify import render_text, report, verify

    if not Path(args.directory).is_dir():
        print(f"redmart-shim: {args.directory} is not a directory", file=sys.stderr)
        return 2
    results = verify(Path(args.directory), only=args.only, jobs=max(1, args.jobs))
    if not results:
        print(f"redmart-shim: no case under {args.directory} (<route>/<case>/case.json)",
              file=sys.stderr)
        return 2
    print(json.dumps(report(results), indent=2, ensure_ascii=False) if args.json
          else render_text(results))
    return 0 if all(result.passed for result in results) else 1


def _settings(args: argparse.Namespace) -> int:
    from shim import settings_reference as reference

    render = (reference.render_json if args.json
              else reference.render_markdown if args.markdown else reference.render_text)
    sys.stdout.write(render(reference.entries()))
    return 0


def _print(args: argparse.Namespace, data: dict[str, object], text: str) -> int:
    """Print the command's result: ``data`` as one JSON document with --json, else ``text``."""
    import json

    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _new_key(args: argparse.Namespace) -> int:
    key = new_key()
    return _print(args, {"key": key}, key)


def _migrate(args: argparse.Namespace) -> int:
    settings = config.load(args.config, auto_migrate=False)
    if not settings.database_url:
        print("redmart-shim: no database_url: nothing to migrate", file=sys.stderr)
        return 2
    from shim.store.sql import SqlStore

    store = open_store(settings)
    try:
        assert isinstance(store, SqlStore), "a database_url opens an SqlStore"
        applied = store.migrate()
    finally:
        store.close()
    return _print(args, {"applied": applied},
                  f"applied migrations: {applied}" if applied else "the database is up to date")


def _hash_secret(args: argparse.Namespace) -> int:
    secret = getpass.getpass("client secret: ") if sys.stdin.isatty() else sys.stdin.readline()
    secret = secret.strip()
    if not secret:
        print("redmart-shim: empty secret", file=sys.stderr)
        return 2
    digest = credentials.hash_secret(secret)
    return _print(args, {"digest": digest}, digest)


if __name__ == "__main__":
    sys.exit(main())
