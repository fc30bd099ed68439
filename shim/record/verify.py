"""``redmart-shim verify``: replay a directory of cases against the current code, field by field.

Each case runs as the contract tests run it: a fresh shim, made with test credentials generated
for this run, on a real socket and pointed at a replay upstream (``shim.record.replay``) that
answers only correctly signed calls matching the case's exchanges, in order; the legacy request
goes over HTTP with a fresh token of the case's client (and ``scope``), and the shim's clock
stands at the case's ``now_ms``. The settings are the defaults (no retries), with store 414 for
the clients ``full`` and ``reader`` and 415 for ``other``.

A case passes when the shim made exactly the recorded platform calls and gave the expected
status, headers and JSON. Every difference is reported where it is: ``status``, ``header
etag``, ``json $.items[0].id``, ``upstream[1].params.productId``. Volatile fields are never
compared: the headers in ``VOLATILE_HEADERS`` and JSON members named in ``VOLATILE_MEMBERS``;
time needs no rule, as the clock is the case's.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from flask import Flask

from shim import credentials
from shim.app import create_app
from shim.config import Settings
from shim.record.cases import CaseError, case_id, find_cases, load_case
from shim.record.replay import Exchange, ReplayServer
from shim.record.settings import APP_KEY, case_settings
from shim.services import get_services

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
from shim.serving import LocalServer
from shim.store import IssuedToken, open_store

VOLATILE_HEADERS = frozenset({"x-request-id", "date", "server", "content-length",
                              "x-ratelimit-remaining-second"})
VOLATILE_MEMBERS = frozenset({"request_id", "requestId", "_trace_id_"})
DIFFERENT_CALL = "the call differs from the next expected exchange"
TOKEN_TTL_S = 7200
_SHOWN_CHARS = 300
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Werkzeug compiles routes with ast.parse, which CPython 3.11 cannot run in two threads at
# once ("AST constructor recursion depth mismatch"): apps are built one at a time.
_BUILDING = threading.Lock()


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = _Absent()  # a member, header or exchange that is not there


@dataclass(frozen=True)
class Difference:
    """One place where the shim's behaviour differs from the case."""

    where: str
    expected: Any = ABSENT
    actual: Any = ABSENT
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the difference for ``--json`` (an absent side is left out)."""
        shown: dict[str, Any] = {"where": self.where}
        if self.expected is not ABSENT:
            shown["expected"] = self.expected
        if self.actual is not ABSENT:
            shown["actual"] = self.actual
        if self.note:
            shown["note"] = self.note
        return shown

    def __str__(self) -> str:
        if self.note and self.expected is ABSENT and self.actual is ABSENT:
            return f"{self.where}: {self.note}"
        text = f"{self.where}: expected {_show(self.expected)}, got {_show(self.actual)}"
        return text + (f" ({self.note})" if self.note else "")


def _show(value: Any) -> str:
    if value is ABSENT:
        return "absent"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


@dataclass
class CaseResult:
    """The outcome of one case: it passed when nothing differs."""

    case: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Return whether the shim behaved exactly as the case says."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """Return the result for ``--json``."""
        return {"case": self.case, "passed": self.passed,
                "differences": [difference.to_dict() for difference in self.differences]}


@dataclass(frozen=True)
class TestCredentials:
    """The app secret, seller token and client secret of one verify run, made for it."""

    app_secret: str = field(default_factory=lambda: "app-" + secrets.token_hex(16),
                            repr=False)
    access_token: str = field(default_factory=lambda: "at-" + secrets.token_hex(16),
                              repr=False)
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_hex(16),
                               repr=False)

    def settings(self, api_url: str, client_digest: str) -> Settings:
        """Return the shim's settings for a replay upstream at ``api_url``."""
        # One token for both stores: the replay checks the token, the case the store.
        return case_settings(upstream_url=api_url, app_secret=self.app_secret,
                             access_token=self.access_token,
                             other_access_token=self.access_token,
                             client_digest=client_digest)


class Runner:
    """Runs cases one at a time over its own replay upstream and socket; a context manager.

    Each case gets a fresh shim app (nothing learnt in one case leaks into the next), served
    on the runner's socket, and a bearer token for its client and scope issued straight into
    that app's store: the token endpoint is in no case, and a scrypt check per case would
    take most of the run.
    """

    def __init__(self, test_credentials: TestCredentials, client_digest: str) -> None:
        self.credentials = test_credentials
        self._replay = ReplayServer(app_key=APP_KEY, app_secret=test_credentials.app_secret,
                                    access_token=test_credentials.access_token)
        self.settings = test_credentials.settings(self._replay.api_url, client_digest)
        self._app: Flask | None = None
        self._server = LocalServer(self._dispatch)
        self._http = requests.Session()

    def _dispatch(self, environ: WSGIEnvironment,
                  start_response: StartResponse) -> Iterable[bytes]:
        if self._app is None:
            raise RuntimeError("no case is being replayed")
        return self._app(environ, start_response)

    def __enter__(self) -> Runner:
        self._replay.__enter__()
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()
        self._server.stop()
        self._replay.__exit__(*exc_info)

    def run(self, path: Path) -> CaseResult:
        """Replay the case in ``path`` and return what differed."""
        result = CaseResult(case_id(path))
        try:
            case = load_case(path)
        except CaseError as error:
            result.differences.append(Difference("case", note=f"malformed: {error}"))
            return result
        legacy = case["request"]
        now_ms = case.get("now_ms")
        clock = (lambda: now_ms / 1000) if now_ms is not None else time.time
        store = open_store(self.settings, clock=clock)
        token = self._issue(store, legacy, clock())
        if token is None:
            result.differences.append(Difference(
                "request.scope", note="the case's client may not have this scope"))
            return result
        self._replay.expect(Exchange.from_case(entry) for entry in case["upstream"])
        with _BUILDING:
            self._app = create_app(self.settings, store=store, clock=clock)
        try:
            status, headers, body = self._call(legacy, token)
        except (requests.RequestException, ValueError) as error:
            result.differences.append(Difference(
                "request", note=f"no usable answer from the shim ({type(error).__name__})"))
            return result
        finally:
            get_services(self._app).close()
            self._app = None
        expect = case["expect"]
        if status != expect["status"]:
            result.differences.append(Difference("status", expect["status"], status))
        for name, value in expect["headers"].items():
            if name not in VOLATILE_HEADERS and headers.get(name) != value:
                result.differences.append(Difference(
                    f"header {name}", ABSENT if value is None else value,
                    headers.get(name, ABSENT)))
        result.differences += json_differences(expect["json"], body)
        result.differences += upstream_differences(len(case["upstream"]),
                                                   self._replay.mismatches,
                                                   self._replay.remaining)
        return result

    def _issue(self, store: Any, legacy: dict[str, Any], now: float) -> str | None:
        """Return a bearer token for the case's client and scope (``None``: not allowed)."""
        client = self.settings.clients[legacy.get("client", "full")]
        granted = frozenset(legacy["scope"].split()) if "scope" in legacy else client.scopes
        if not granted <= client.scopes:
            return None
        token = credentials.new_token()
        store.save_token(credentials.token_digest(token), IssuedToken(
            client_id=client.client_id, scopes=granted, expires_at=now + TOKEN_TTL_S))
        return token

    def _call(self, legacy: dict[str, Any], token: str) -> tuple[int, dict[str, str], Any]:
        """Send the legacy call; return its status, raw headers and JSON body."""
        body = None
        if "body" in legacy:
            body = json.dumps(legacy["body"]).encode("utf-8")
        elif "raw_body" in legacy:
            body = legacy["raw_body"].encode("utf-8")
        with self._http.request(legacy["method"], self._server.base_url + legacy["path"],
                                params=legacy.get("query") or None, data=body, timeout=15,
                                headers={**legacy.get("headers", {}),
                                         "Authorization": f"Bearer {token}"}) as answer:
            # Raw names, case-sensitive: clients that parse headers themselves look up "etag".
            headers = dict(answer.raw.headers.items())
            try:
                document = answer.json()
            except ValueError:
                document = f"<not JSON: {answer.text[:200]!r}>"
            return answer.status_code, headers, document


def json_differences(expected: Any, actual: Any, where: str = "$") -> list[Difference]:
    """Return every place where the JSON ``actual`` differs from ``expected``.

    Members named in ``VOLATILE_MEMBERS`` are skipped; member order does not count; ``true``
    is not ``1``, and ``"1"`` is not ``1``.
    """
    return list(_json_differences(expected, actual, where))


def _json_differences(expected: Any, actual: Any, where: str) -> Iterator[Difference]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for name in [*expected, *(name for name in actual if name not in expected)]:
            if name in VOLATILE_MEMBERS:
                continue
            yield from _json_differences(expected.get(name, ABSENT), actual.get(name, ABSENT),
                                         _member(where, name))
    elif isinstance(expected, list) and isinstance(actual, list):
        for index in range(max(len(expected), len(actual))):
            yield from _json_differences(
                expected[index] if index < len(expected) else ABSENT,
                actual[index] if index < len(actual) else ABSENT, f"{where}[{index}]")
    elif not _same(expected, actual):
        yield Difference(f"json {where}", expected, actual)


def _same(expected: Any, actual: Any) -> bool:
    if expected is ABSENT or actual is ABSENT:
        return expected is actual
    numbers = (int, float)
    if (isinstance(expected, numbers) and isinstance(actual, numbers)
            and not isinstance(expected, bool) and not isinstance(actual, bool)):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def _member(where: str, name: str) -> str:
    return f"{where}.{name}" if _NAME.fullmatch(name) else f"{where}[{json.dumps(name)}]"


def upstream_differences(expected_count: int, mismatches: list[dict[str, Any]],
                         remaining: list[dict[str, Any]]) -> list[Difference]:
    """Return the platform calls that differed from the case's, or were missing or extra."""
    found: list[Difference] = []
    seen: set[int] = set()
    for mismatch in mismatches:
        index = mismatch.get("index", 0)
        where = f"upstream[{index}]"
        expected, got, problem = mismatch["expected"], mismatch["got"], mismatch["problem"]
        seen.add(index)
        if expected is None:
            found.append(Difference(where, ABSENT, got, note="an extra call"))
        elif problem == DIFFERENT_CALL:
            for name in ("api", "method"):
                if expected[name] != got[name]:
                    found.append(Difference(f"{where}.{name}", expected[name], got[name]))
            params, sent = expected["params"], got["params"]
            for name in [*params, *(name for name in sent if name not in params)]:
                if params.get(name, ABSENT) != sent.get(name, ABSENT):
                    found.append(Difference(f"{where}.params.{name}", params.get(name, ABSENT),
                                            sent.get(name, ABSENT)))
        else:
            found.append(Difference(where, note=problem))
    first_left = expected_count - len(remaining)
    for offset, exchange in enumerate(remaining):
        if first_left + offset not in seen:
            found.append(Difference(f"upstream[{first_left + offset}]", exchange, ABSENT,
                                    note="never called"))
    return found


def verify(directory: Path, *, only: Iterable[str] = (), jobs: int = 4) -> list[CaseResult]:
    """Replay every case under ``directory`` (or the ``only`` ones); return the results in
    case order. ``jobs`` cases run at a time, each runner with its own replay upstream."""
    paths = find_cases(directory, only)
    if not paths:
        return []
    test_credentials = TestCredentials()
    digest = credentials.hash_secret(test_credentials.client_secret)
    runners = [Runner(test_credentials, digest) for _ in range(max(1, min(jobs, len(paths))))]
    idle: queue.Queue[Runner] = queue.Queue()

    def run(path: Path) -> CaseResult:
        runner = idle.get()
        try:
            return runner.run(path)
        finally:
            idle.put(runner)

    started: list[Runner] = []
    try:
        for runner in runners:
            started.append(runner.__enter__())
            idle.put(runner)
        with ThreadPoolExecutor(len(runners), thread_name_prefix="verify") as pool:
            return list(pool.map(run, paths))
    finally:
        for runner in started:
            runner.__exit__(None, None, None)


def render_text(results: list[CaseResult]) -> str:
    """Return the report: one PASS/FAIL line per case, its differences indented, a total."""
    lines = []
    for result in results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'} {result.case}")
        lines += [f"    {difference}" for difference in result.differences]
    failed = sum(not result.passed for result in results)
    lines.append(f"{len(results)} case(s): {len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def report(results: list[CaseResult]) -> dict[str, Any]:
    """Return the report as one JSON document (``--json``)."""
    failed = sum(not result.passed for result in results)
    return {"passed": len(results) - failed, "failed": failed,
            "cases": [result.to_dict() for result in results]}
