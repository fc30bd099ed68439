"""Record a contract case: one legacy call through the shim to the sandbox, written as case.json.

    .venv/bin/python tools/record_fixtures.py fixtures/products-get/docs-example \\
        --path /v1/products/100150 --tags success,docs-example --description "..."

It starts the sandbox (``shim.sandbox``, store 414, fresh random credentials), a recording
proxy in front of it, and the shim pointed at the proxy; sends the legacy request with a
fresh bearer token; and writes the request, every platform exchange (business parameters
only, never the system parameters that carry the token and signature) and the shim's answer.

The ``expect`` part is only a draft: it is what the shim answered today. Check it against
the legacy reference before committing the case (fixtures/README.md). Not part of the
package, and nothing imports it.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, request

from shim import create_app, credentials, scopes
from shim.config import ClientSettings, SellerSettings, Settings
from shim.sandbox import SandboxConfig, SandboxServer, SellerAccount
from shim.serving import LocalServer

STORE_ID = "414"
APP_KEY = "100001"
SYSTEM_PARAMS = ("app_key", "timestamp", "sign_method", "sign", "access_token")
DEFAULT_HEADERS = "content-type,etag,retry-after,www-authenticate,allow"
MERGE_PATCH = "application/merge-patch+json"
_SIGN_LIKE = re.compile(r"\b[0-9A-F]{64}\b")


class RecordingProxy:
    """Forwards ``/rest/...`` calls to the sandbox untouched and keeps each exchange."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.exchanges: list[dict[str, Any]] = []
        self.session = requests.Session()
        self.app = Flask(__name__)
        self.app.add_url_rule("/rest/<path:api>", "rest", self.forward, methods=["GET", "POST"])

    def forward(self, api: str) -> Response:
        query = request.query_string.decode("ascii")
        answer = self.session.request(
            request.method, f"{self.target}/{api}" + (f"?{query}" if query else ""),
            data=request.get_data(), headers={"Content-Type": request.content_type or ""},
            timeout=10)
        params = {name: value for source in (request.args, request.form)
                  for name, value in source.items() if name not in SYSTEM_PARAMS}
        self.exchanges.append({"api": "/" + api, "method": request.method, "params": params,
                               "response": _response(answer)})
        return Response(answer.content, status=answer.status_code,
                        content_type=answer.headers.get("Content-Type"))


def _response(answer: requests.Response) -> dict[str, Any]:
    recorded: dict[str, Any] = {}
    if answer.status_code != 200:
        recorded["status"] = answer.status_code
    try:
        recorded["json"] = answer.json()
    except ValueError:  # HTML pages and cut-off JSON stay raw text
        recorded["text"] = answer.text
    return recorded


def record(args: argparse.Namespace) -> dict[str, Any]:
    """Run the call once and return the case document."""
    app_secret, access_token = secrets.token_hex(16), secrets.token_hex(16)
    client_secret = secrets.token_hex(16)
    now = time.time()
    seller = SellerAccount(store_id=STORE_ID, access_token=access_token,
                           refresh_token=secrets.token_hex(16), access_expires_at=now + 86400,
                           refresh_expires_at=now + 864000)
    config = SandboxConfig(app_key=APP_KEY, app_secret=app_secret, sellers=[seller],
                           single_location_api=not args.no_single_location_api)
    digest = credentials.hash_secret(client_secret)
    clients = {
        "full": ClientSettings(client_id="full", secret_digest=digest,
                               scopes=frozenset(scopes.ALL), seller="main"),
        "reader": ClientSettings(client_id="reader", secret_digest=digest, seller="main",
                                 scopes=frozenset(s for s in scopes.ALL
                                                  if s.startswith("read:"))),
    }
    with SandboxServer(config) as sandbox, requests.Session() as http:
        proxy = RecordingProxy(sandbox.api_url)
        with LocalServer(proxy.app) as proxy_server:
            settings = Settings(
                app_key=APP_KEY, app_secret=app_secret, api_url=proxy_server.base_url + "/rest",
                auth_url=proxy_server.base_url + "/rest", read_retries=0,
                sellers={"main": SellerSettings(name="main", store_id=STORE_ID,
                                                access_token=access_token)},
                clients=clients)
            clock = (lambda: args.now_ms / 1000) if args.now_ms else time.time
            for fault in args.fault:
                api, _, kind = fault.partition("=")
                http.post(sandbox.base_url + "/_sandbox/faults", json={"api": api, "kind": kind},
                          timeout=5).raise_for_status()
            if args.variance:
                http.post(sandbox.base_url + "/_sandbox/variance", json={"enabled": True},
                          timeout=5).raise_for_status()
            with LocalServer(create_app(settings, clock=clock)) as shim:
                token = http.post(shim.base_url + "/oauth2/token", timeout=10, data={
                    "grant_type": "client_credentials", "client_id": args.client,
                    "client_secret": client_secret}).json()["access_token"]
                legacy = _legacy_request(args)
                answer = http.request(
                    legacy["method"], shim.base_url + legacy["path"], params=legacy["query"],
                    headers={**legacy["headers"], "Authorization": f"Bearer {token}"},
                    data=_body_bytes(legacy), timeout=15)
                wanted = args.headers.split(",")
                headers = {name: value for name, value in answer.raw.headers.items()
                           if name in wanted}
                expect = {"status": answer.status_code, "headers": headers,
                          "json": answer.json()}
        proxy.session.close()
    case: dict[str, Any] = {"description": args.description,
                            "tags": [t for t in args.tags.split(",") if t]}
    if args.now_ms:
        case["now_ms"] = args.now_ms
    case.update(request=legacy, upstream=proxy.exchanges, expect=expect)
    text = json.dumps(case)
    for secret in (app_secret, access_token, client_secret, token):
        if secret in text:
            raise SystemExit("refusing to write: the recording holds a secret")
    if _SIGN_LIKE.search(text):
        raise SystemExit("refusing to write: the recording holds something shaped like a sign")
    return case


def _legacy_request(args: argparse.Namespace) -> dict[str, Any]:
    legacy: dict[str, Any] = {"method": args.method, "path": args.path,
                              "query": dict(q.split("=", 1) for q in args.query),
                              "headers": dict(h.split(":", 1) for h in args.header)}
    legacy["headers"] = {name.strip(): value.strip() for name, value in legacy["headers"].items()}
    if args.client != "full":
        legacy["client"] = args.client
    if args.json is not None:
        legacy["body"] = json.loads(args.json)
    elif args.raw_body is not None:
        legacy["raw_body"] = args.raw_body
    if ("body" in legacy or "raw_body" in legacy) and not any(
            name.lower() == "content-type" for name in legacy["headers"]):
        legacy["headers"]["Content-Type"] = MERGE_PATCH
    return legacy


def _body_bytes(legacy: dict[str, Any]) -> bytes | None:
    if "body" in legacy:
        return json.dumps(legacy["body"]).encode("utf-8")
    if "raw_body" in legacy:
        return legacy["raw_body"].encode("utf-8")
    return None


def main(argv: list[str] | None = None) -> int:
    """Record one case into ``CASE_DIR/case.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case_dir", type=Path, help="fixtures/<route>/<case>")
    parser.add_argument("--path", required=True, help="legacy path, e.g. /v1/products/100150")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--query", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    parser.add_argument("--json", help="JSON request body")
    parser.add_argument("--raw-body", help="request body sent as is (malformed JSON cases)")
    parser.add_argument("--client", default="full", choices=("full", "reader"))
    parser.add_argument("--now-ms", type=int, help="the shim's clock (epoch ms) for the case")
    parser.add_argument("--variance", action="store_true",
                        help="sandbox answers with the rendered docs' types")
    parser.add_argument("--fault", action="append", default=[], metavar="API=KIND",
                        help="one sandbox fault, e.g. /rss/product/get=ApiCallLimit")
    parser.add_argument("--no-single-location-api", action="store_true",
                        help="sandbox answers InvalidApiPath for /rss/pickupLocation/get")
    parser.add_argument("--headers", default=DEFAULT_HEADERS,
                        help="response headers to keep in expect (lower-case, comma list)")
    parser.add_argument("--description", default="")
    parser.add_argument("--tags", default="")
    parser.add_argument("--force", action="store_true", help="overwrite an existing case")
    args = parser.parse_args(argv)
    target = args.case_dir / "case.json"
    if target.exists() and not args.force:
        parser.error(f"{target} exists (use --force to overwrite)")
    case = record(args)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {target}: HTTP {case['expect']['status']}, "
          f"{len(case['upstream'])} upstream exchange(s); now check expect by hand")
    return 0


if __name__ == "__main__":
    sys.exit(main())
