"""A replay upstream: it answers one case's recorded platform exchanges, in order.

The contract tests and ``redmart-shim verify`` point the shim at it. Each call must pass the
platform's gateway checks (app key, ``sha256``, a timestamp within 7200 s, the seller's access
token, a signature that verifies with the app secret) and then match the next expected
exchange exactly (method, API path, business parameters). A match gets the recorded answer;
anything else gets a Lazada gateway error envelope with code ``ReplayMismatch`` and is kept in
``mismatches`` (at which exchange, expected vs got, secrets masked), so the runner reports a
precise difference instead of a vague 500.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request

from shim.record.cases import SYSTEM_PARAMS
from shim.serving import LocalServer
from shim.upstream.signing import SIGN_METHOD, verify

TIMESTAMP_WINDOW_S = 7200
MISMATCH = "ReplayMismatch"
JSON = "application/json;charset=UTF-8"
_MASK = "***"


@dataclass(frozen=True)
class Exchange:
    """One expected platform call and its recorded answer."""

    api: str
    method: str
    params: Mapping[str, str]
    status: int = 200
    json: Any = None
    text: str | None = None

    @classmethod
    def from_case(cls, entry: Mapping[str, Any]) -> Exchange:
        """Return the exchange an entry of a case's ``upstream`` list describes."""
        response = entry["response"]
        return cls(api=entry["api"], method=entry["method"], params=dict(entry["params"]),
                   status=response.get("status", 200), json=response.get("json"),
                   text=response.get("text"))

    def expected(self) -> dict[str, Any]:
        """Return what the call should have been, for a mismatch report."""
        return {"api": self.api, "method": self.method, "params": dict(self.params)}


class ReplayUpstream:
    """The replay logic and its WSGI app; ``expect`` loads the exchanges of the next case."""

    def __init__(self, *, app_key: str, app_secret: str, access_token: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.app_key = app_key
        self._secret = app_secret
        self._access_token = access_token
        self._clock = clock
        self._lock = threading.Lock()
        self._script: list[Exchange] = []
        self._consumed = 0
        self.mismatches: list[dict[str, Any]] = []
        self.app = Flask(__name__)
        self.app.add_url_rule("/rest/<path:api>", "rest", self._answer,
                              methods=["GET", "POST", "PUT", "PATCH", "DELETE"])

    def expect(self, exchanges: Iterable[Exchange]) -> None:
        """Replace the script with ``exchanges`` and forget earlier mismatches."""
        with self._lock:
            self._script = list(exchanges)
            self._consumed = 0
            self.mismatches = []

    @property
    def remaining(self) -> list[dict[str, Any]]:
        """Return the expected exchanges that were never made."""
        with self._lock:
            return [exchange.expected() for exchange in self._script]

    def _answer(self, api: str) -> Response:
        got, problem = self._read("/" + api)
        with self._lock:
            if problem is None and not self._script:
                problem = "a call was made after every expected exchange was consumed"
            if problem is None:
                expected = self._script[0]
                if (got["method"], got["api"], got["params"]) != (
                        expected.method, expected.api, dict(expected.params)):
                    problem = "the call differs from the next expected exchange"
            if problem is not None:
                self.mismatches.append({
                    "index": self._consumed,
                    "problem": problem,
                    "expected": self._script[0].expected() if self._script else None,
                    "got": got,
                })
                return _envelope(MISMATCH, problem)
            exchange = self._script.pop(0)
            self._consumed += 1
        return _render(exchange)

    def _read(self, api_path: str) -> tuple[dict[str, Any], str | None]:
        """Return the call as seen (secrets masked) and the first gateway check it fails."""
        values: dict[str, str] = {}
        duplicated = False
        for source in (request.args, request.form):
            for name, value in source.items(multi=True):
                duplicated |= name in values
                values[name] = value
        got = {"api": api_path, "method": request.method,
               "params": {name: self._masked(value) for name, value in values.items()
                          if name not in SYSTEM_PARAMS}}
        if duplicated:
            return got, "a parameter was sent more than once"
        if request.method == "GET" and request.get_data():
            return got, "a GET call carried a body"
        if request.method == "POST" and request.args:
            return got, "a POST call carried parameters in the query string"
        missing = [name for name in SYSTEM_PARAMS if not values.get(name)]
        if missing:
            return got, f"missing system parameters: {', '.join(missing)}"
        if values["app_key"] != self.app_key:
            return got, "wrong app_key"
        if values["sign_method"] != SIGN_METHOD:
            return got, f"sign_method is not {SIGN_METHOD}"
        timestamp = values["timestamp"]
        if not (timestamp.isascii() and timestamp.isdigit()) or abs(
                int(timestamp) / 1000 - self._clock()) > TIMESTAMP_WINDOW_S:
            return got, "timestamp is not epoch ms within 7200 s of now"
        if values["access_token"] != self._access_token:
            return got, "access_token is not the seller's token"
        if not verify(api_path, values, self._secret):
            return got, "the signature does not verify"
        return got, None

    def _masked(self, value: str) -> str:
        for secret in (self._secret, self._access_token):
            value = value.replace(secret, _MASK)
        return value


def _envelope(code: str, message: str) -> Response:
    body = {"type": "ISV", "code": code, "message": message,
            "request_id": secrets.token_hex(13)}
    return Response(json.dumps(body), status=200, content_type=JSON)


def _render(exchange: Exchange) -> Response:
    if exchange.text is not None:
        kind = "text/html;charset=UTF-8" if exchange.text.lstrip().startswith("<") else JSON
        return Response(exchange.text, status=exchange.status, content_type=kind)
    return Response(json.dumps(exchange.json, ensure_ascii=False), status=exchange.status,
                    content_type=JSON)


class ReplayServer:
    """A ``ReplayUpstream`` on an ephemeral local port; ``api_url`` ends in ``/rest``."""

    def __init__(self, **options: Any) -> None:
        self.upstream = ReplayUpstream(**options)
        self._server = LocalServer(self.upstream.app)
        self.api_url = self._server.base_url + "/rest"

    def expect(self, exchanges: Iterable[Exchange]) -> None:
        """Load the exchanges of the next case (see ``ReplayUpstream.expect``)."""
        self.upstream.expect(exchanges)

    @property
    def mismatches(self) -> list[dict[str, Any]]:
        """Return the calls refused since the last ``expect``."""
        return self.upstream.mismatches

    @property
    def remaining(self) -> list[dict[str, Any]]:
        """Return the expected exchanges not made yet."""
        return self.upstream.remaining

    def __enter__(self) -> ReplayServer:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()
