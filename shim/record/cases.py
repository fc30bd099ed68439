"""The contract case format (fixtures/README.md): one legacy call, its platform calls, its answer.

``check_case`` is the one definition of a well-formed ``case.json``; the recorder checks every
case it writes with it, ``verify`` every case it reads, and the contract tests every committed
fixture. ``find_cases`` lists the cases of a directory laid out as ``<route>/<case>/case.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shim import scopes

CASE_FILE = "case.json"
# Each legacy route records under its declared fixture directory (shim.legacy.routes);
# anything else under /v1 (an unknown path, a wrong method) under OTHER_ROUTE.
OTHER_ROUTE = "other"
TAGS = frozenset({"success", "not-found", "validation", "upstream-error", "variance",
                  "docs-example", "conflict", "forbidden"})
CLIENTS = ("full", "reader", "other")
METHODS = ("GET", "PATCH", "POST", "PUT", "DELETE")
# The platform's system parameters: volatile or secret, never written into a case.
SYSTEM_PARAMS = ("app_key", "timestamp", "sign_method", "sign", "access_token")
_CASE_MEMBERS = {"description", "tags", "now_ms", "request", "upstream", "expect"}
_REQUEST_MEMBERS = {"method", "path", "query", "headers", "body", "raw_body", "client", "scope"}


class CaseError(ValueError):
    """Raised when a case does not follow the format of fixtures/README.md."""


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise CaseError(message)


def _texts(value: Any, where: str) -> None:
    _need(isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in value.items()),
          f"{where} must be an object of strings")


def check_case(case: Any) -> dict[str, Any]:
    """Return ``case`` if it is a well-formed case document; raise ``CaseError`` if not."""
    _need(isinstance(case, dict), "a case is a JSON object")
    _need(set(case) <= _CASE_MEMBERS, f"unknown members {sorted(set(case) - _CASE_MEMBERS)}")
    _need(isinstance(case.get("description"), str) and case["description"].strip() != "",
          "description is required")
    _need(isinstance(case.get("tags"), list) and case["tags"] and set(case["tags"]) <= TAGS,
          f"tags must be a non-empty list drawn from {sorted(TAGS)}")
    now_ms = case.get("now_ms", 0)
    _need(isinstance(now_ms, int) and not isinstance(now_ms, bool),
          "now_ms must be epoch milliseconds")
    request = case.get("request")
    _need(isinstance(request, dict), "request is required")
    _need(set(request) <= _REQUEST_MEMBERS, "request has unknown members")
    _need(request.get("method") in METHODS, "request.method")
    _need(str(request.get("path", "")).startswith("/"), "request.path must start with /")
    _texts(request.get("query", {}), "request.query")
    _texts(request.get("headers", {}), "request.headers")
    _need("authorization" not in {name.lower() for name in request.get("headers", {})},
          "request.headers must not hold Authorization: the runner adds a token")
    _need(not ("body" in request and "raw_body" in request), "body or raw_body, not both")
    _need(isinstance(request.get("raw_body", ""), str), "request.raw_body must be text")
    _need(request.get("client", "full") in CLIENTS, f"request.client must be one of {CLIENTS}")
    if "scope" in request:
        asked = request["scope"].split() if isinstance(request["scope"], str) else []
        _need(bool(asked) and set(asked) <= set(scopes.ALL),
              "request.scope must be a space-separated list of legacy scopes")
    _need(isinstance(case.get("upstream"), list), "upstream must be a list (empty: no call)")
    for index, exchange in enumerate(case["upstream"]):
        where = f"upstream[{index}]"
        _need(isinstance(exchange, dict)
              and set(exchange) == {"api", "method", "params", "response"},
              f"{where} needs exactly api, method, params, response")
        _need(str(exchange["api"]).startswith("/rss/"), f"{where}.api must be an /rss/ path")
        _need(exchange["method"] in ("GET", "POST"), f"{where}.method must be GET or POST")
        _texts(exchange["params"], f"{where}.params")
        response = exchange["response"]
        _need(isinstance(response, dict) and set(response) <= {"status", "json", "text"}
              and len(set(response) & {"json", "text"}) == 1,
              f"{where}.response needs status (optional) and exactly one of json, text")
        _need(isinstance(response.get("status", 200), int), f"{where}.response.status")
        _need(isinstance(response.get("text", ""), str), f"{where}.response.text must be text")
    expect = case.get("expect")
    _need(isinstance(expect, dict) and set(expect) == {"status", "headers", "json"},
          "expect needs exactly status, headers, json")
    _need(isinstance(expect["status"], int), "expect.status must be an HTTP status")
    _need(isinstance(expect["headers"], dict)
          and all(name == name.lower() and (value is None or isinstance(value, str))
                  for name, value in expect["headers"].items()),
          "expect.headers: lower-case names, string values (null: must be absent)")
    checked: dict[str, Any] = case  # a JSON object, checked member by member above
    return checked


def load_case(path: Path) -> dict[str, Any]:
    """Return the case in the file ``path``, raising ``CaseError`` when its shape is wrong."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CaseError(f"cannot read {path}: {error}") from None
    return check_case(document)


def case_id(path: Path) -> str:
    """Return ``route/case`` for the ``case.json`` at ``path``."""
    path = Path(path)
    return f"{path.parent.parent.name}/{path.parent.name}"


def find_cases(directory: Path, only: Iterable[str] = ()) -> list[Path]:
    """Return the ``case.json`` files under ``directory`` (``<route>/<case>/case.json``).

    ``only`` keeps the cases whose id (``route/case``) or route is listed.
    """
    wanted = {name.strip("/") for name in only}
    found = sorted(Path(directory).glob(f"*/*/{CASE_FILE}"))
    if not wanted:
        return found
    return [path for path in found
            if case_id(path) in wanted or path.parent.parent.name in wanted]


def write_case(case_dir: Path, case: dict[str, Any]) -> Path:
    """Write ``case`` (checked first) as ``case_dir/case.json``, atomically; return the path."""
    check_case(case)
    case_dir.mkdir(parents=True, exist_ok=True)
    target = case_dir / CASE_FILE
    text = json.dumps(case, indent=2, ensure_ascii=False) + "\n"
    handle, temporary = tempfile.mkstemp(dir=case_dir, prefix=".case-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would surprise whoever commits the case
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
