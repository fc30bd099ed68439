"""The differential corpus: platform answers, real and odd, and the legacy answer of each.

A case is one legacy request and the platform answers the shim gets for it, in order. The
corpus is made here, deterministically, from three sources:

- ``fixtures``: every contract case's legacy request with its recorded platform answers;
- ``sandbox``: the sandbox's seeded catalog, plain and with its variance (reference 7);
- ``edge``: each member of each platform object set to an odd value (null, absent, text for
  numbers, Unicode digits, 64-bit boundaries, floats, NaN, wrong types, odd text) or joined
  by an extra member, and odd envelopes, in the JSON text the platform would send.

``tests/differential.json`` holds what the shim answered each case at main 2916c66 (before
the translation was optimized): status, ETag and the body bytes exactly as a client gets
them, plus the platform calls made. ``tests/test_differential.py`` asserts every case still
gets exactly that. Re-record (only for an intended change of answers) with
``DIFFERENTIAL_RECORD=1 .venv/bin/python -m pytest tests/test_differential.py -k corpus``.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from werkzeug.wrappers import Request, Response

from shim import credentials
from shim.record.cases import SYSTEM_PARAMS
from shim.sandbox.gateway import result_body, success_result
from shim.sandbox.rss import vary
from shim.sandbox.seed import DOC_JOB, DOC_LOCATION, DOC_PRODUCT, DOC_STOCK, build_catalog
from shim.store import IssuedToken, Store

ROOT = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).with_name("differential.json")
NOW_MS = 1_765_000_000_000  # the shim's clock in every case: pickup-job dates stay valid
FROM_MS = NOW_MS - 86_400_000
REQUEST_ID = "0b8f3a6c17650000000000001e7a"

PRODUCT = "/v1/products/100150"
LOTS = "/v1/products/100150/pickup-locations/23789/stock-lots"
ROUTES: dict[str, dict[str, Any]] = {
    "products-list": {"method": "GET", "path": "/v1/products", "query": {"pageSize": "100"}},
    "products-get": {"method": "GET", "path": PRODUCT},
    "stock-lots-list": {"method": "GET", "path": LOTS},
    "stock-lot-get": {"method": "GET", "path": LOTS + "/0"},
    "stock-lot-patch": {"method": "PATCH", "path": LOTS + "/0",
                        "headers": {"If-Match": "*",
                                    "Content-Type": "application/merge-patch+json"},
                        "body": {"quantityAtPickupLocation": 20}},
    "pickup-locations-list": {"method": "GET", "path": "/v1/pickup-locations"},
    "pickup-locations-get": {"method": "GET", "path": "/v1/pickup-locations/23789"},
    "pickup-jobs-list": {"method": "GET", "path": "/v1/pickup-jobs",
                         "query": {"from": str(FROM_MS)}},
    "pickup-jobs-get": {"method": "GET", "path": "/v1/pickup-jobs/123"},
}

_ABSENT = object()


@dataclass
class Case:
    """One legacy request and the platform's answers (raw bodies) to the calls it causes."""

    id: str
    request: dict[str, Any]
    answers: list[tuple[int, str]]  # (HTTP status, body text) per platform call, in order
    now_ms: int = NOW_MS


@dataclass
class Outcome:
    """What the shim answered a case: what a client gets, and the platform calls made."""

    status: int
    body: str  # the body bytes, decoded (the shim writes ASCII JSON)
    etag: str | None = None
    calls: list[list[Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Return the outcome as stored in ``differential.json``."""
        stored: dict[str, Any] = {"status": self.status, "body": self.body}
        if self.etag is not None:
            stored["etag"] = self.etag
        stored["calls"] = self.calls
        return stored


# --- the platform side ---------------------------------------------------------------------

def envelope(data: Any, *, page: tuple[int, int, int] | None = None,
             variance: bool = False) -> str:
    """Return the JSON text of a successful RSS answer around ``data``."""
    return dump(result_body(success_result(data, page=page, variance=variance), REQUEST_ID))


def dump(document: Any) -> str:
    """Return ``document`` as the platform's JSON text (big ints exact, NaN as written)."""
    return json.dumps(document, separators=(",", ":"))


def with_member(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """Return a deep copy of ``record`` with the member at ``path`` set (or removed)."""
    changed = copy.deepcopy(record)
    target = changed
    for step in path[:-1]:
        target = target[step]
    if value is _ABSENT:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return changed


ODD_VALUES: list[tuple[str, Any]] = [
    ("absent", _ABSENT), ("null", None), ("empty-text", ""), ("blank", " "),
    ("text-0", "0"), ("text-7", "7"), ("text-neg", "-7"), ("text-padded", " 12 "),
    ("text-quoted", '"12"'), ("text-float", "12.0"), ("text-exp", "1e3"),
    ("text-fraction", "1.5"), ("text-hex", "0x1F"), ("text-underscore", "1_000"),
    ("arabic-digits", "\u0661\u0662\u0663"), ("fullwidth-digits", "\uff11\uff12\uff13"),
    ("superscript", "\u00b2"), ("text-nan", "NaN"), ("text-inf", "Infinity"),
    ("zero", 0), ("one", 1), ("minus-one", -1), ("float-integral", 7.0),
    ("float-fraction", 7.5), ("minus-zero", -0.0), ("float-1e16", 1e16),
    ("float-huge", 1e300), ("nan", float("nan")), ("inf", float("inf")),
    ("minus-inf", float("-inf")), ("int32-max", 2**31 - 1), ("int32-over", 2**31),
    ("float-exact-over", 2**53 + 1), ("int64-max", 2**63 - 1), ("int64-over", 2**63),
    ("uint64-max", 2**64 - 1), ("uint64-over", 2**64), ("int64-min", -2**63),
    ("int64-under", -2**63 - 1), ("30-digits", 10**29 + 7), ("text-30-digits", str(10**29 + 7)),
    ("true", True), ("false", False), ("empty-list", []), ("list", [1, "a"]),
    ("empty-object", {}), ("object", {"type": "Enabled", "id": "9"}),
    ("latin", "Caf\u00e9 \u2615"), ("cjk", "\u65e5\u672c\u8a9e"), ("astral", "\U0001f600"),
    ("nul", "a\u0000b"), ("del", "a\u007fb"), ("lone-surrogate", "\ud800"),
    ("escapes", 'a"b\\c\n\t/'), ("html", "</script><!--"), ("line-separator", "a\u2028b"),
]
# Pickup jobs are large: their members get the values that tell the most.
JOB_VALUES = [entry for entry in ODD_VALUES if entry[0] in {
    "absent", "null", "empty-text", "text-7", "text-padded", "text-float", "text-exp",
    "arabic-digits", "zero", "float-integral", "float-fraction", "float-1e16", "nan",
    "int64-over", "30-digits", "true", "empty-list", "object", "latin", "del"}]


def _members(record: dict[str, Any], prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of every member of ``record``, nested objects (first of lists) too."""
    for name, value in record.items():
        yield (*prefix, name)
        if isinstance(value, dict):
            yield from _members(value, (*prefix, name))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            yield from _members(value[0], (*prefix, name, 0))


def _label(path: tuple[Any, ...]) -> str:
    return ".".join(str(step) for step in path)


# --- the corpus ----------------------------------------------------------------------------

def fixture_cases() -> Iterator[Case]:
    """Yield every contract case under fixtures/ as a corpus case (its request and answers)."""
    for path in sorted((ROOT / "fixtures").glob("*/*/case.json")):
        case = json.loads(path.read_text())
        if case["request"].get("client", "full") != "full" or "scope" in case["request"]:
            continue  # the corpus is about translation: one client with every scope
        answers = []
        for exchange in case["upstream"]:
            response = exchange["response"]
            text = response["text"] if "text" in response else dump(response.get("json"))
            answers.append((response.get("status", 200), text))
        request = {name: case["request"][name]
                   for name in ("method", "path", "query", "headers", "body", "raw_body")
                   if name in case["request"]}
        yield Case(f"fixtures/{path.parent.parent.name}/{path.parent.name}", request, answers,
                   case.get("now_ms", NOW_MS))


def sandbox_cases() -> Iterator[Case]:
    """Yield the sandbox's seeded records as it answers them, plain and with its variance."""
    catalog = build_catalog(414, NOW_MS)
    lots = [{"id": "0", **stock, "quantityAvailableForSale": stock["quantityAtPickupLocation"]
             - stock["quantityScheduledForPickup"]} for stock in catalog.stock.values()]
    for variance in (False, True):
        kind = "variance" if variance else "plain"

        def answer(api_kind: str, data: Any, page: tuple[int, int, int] | None = None,
                   variance: bool = variance) -> list[tuple[int, str]]:
            shown = vary(api_kind, data) if variance else data
            return [(200, envelope(shown, page=page, variance=variance))]

        for start in range(0, len(catalog.products), 100):
            chunk = catalog.products[start:start + 100]
            yield Case(f"sandbox/{kind}/products-list/{start}", ROUTES["products-list"],
                       answer("product", chunk, (start // 100 + 1, 100,
                                                 len(catalog.products))))
        for product in catalog.products[::15]:
            yield Case(f"sandbox/{kind}/products-get/{product['rpc']}", ROUTES["products-get"],
                       answer("product", product))
        for index, lot in enumerate(lots[::40]):
            yield Case(f"sandbox/{kind}/stock-lot-get/{index}", ROUTES["stock-lot-get"],
                       answer("stockLot", lot))
            yield Case(f"sandbox/{kind}/stock-lots-list/{index}", ROUTES["stock-lots-list"],
                       answer("stockLot", [lot]))
        yield Case(f"sandbox/{kind}/pickup-locations-list", ROUTES["pickup-locations-list"],
                   answer("location", catalog.locations, (1, 50, len(catalog.locations))))
        for location in catalog.locations:
            yield Case(f"sandbox/{kind}/pickup-locations-get/{location['id']}",
                       ROUTES["pickup-locations-get"], answer("location", location))
        for start in range(0, len(catalog.jobs), 60):
            yield Case(f"sandbox/{kind}/pickup-jobs-list/{start}", ROUTES["pickup-jobs-list"],
                       answer("job", catalog.jobs[start:start + 60]))
        for job in catalog.jobs[::25]:
            yield Case(f"sandbox/{kind}/pickup-jobs-get/{job['id']}", ROUTES["pickup-jobs-get"],
                       answer("job", job))


def edge_cases() -> Iterator[Case]:
    """Yield each member of each platform object set to each odd value, and odd envelopes."""
    lot = {"id": "0", **DOC_STOCK, "quantityAvailableForSale": 8}
    resources: list[tuple[str, dict[str, Any], list[tuple[str, Any]], tuple[str, ...]]] = [
        ("product", DOC_PRODUCT, ODD_VALUES, ("products-get", "products-list")),
        ("lot", lot, ODD_VALUES, ("stock-lot-get", "stock-lots-list", "stock-lot-patch")),
        ("location", DOC_LOCATION, ODD_VALUES, ("pickup-locations-get",
                                                "pickup-locations-list")),
        ("job", DOC_JOB, JOB_VALUES, ("pickup-jobs-get", "pickup-jobs-list")),
    ]
    for name, record, values, routes in resources:
        variants = [(f"{_label(path)}={label}", with_member(record, path, value))
                    for path in _members(record) for label, value in values]
        variants.append(("extra-members", {**record, "newField": {"x": [1, None]},
                                           "rpcV2": "x"}))
        variants.append(("not-an-object", ["x"]))
        for variant, data in variants:
            for route in routes:
                one = route.endswith("-get") or route == "stock-lot-patch"
                if route == "stock-lot-patch":
                    answers = [(200, envelope(lot)), (200, envelope(data))]
                elif one:
                    answers = [(200, envelope(data))]
                elif route.endswith("list") and name in ("product", "location"):
                    answers = [(200, envelope([DOC_PRODUCT if name == "product"
                                               else DOC_LOCATION, data], page=(1, 100, 2)))]
                else:
                    answers = [(200, envelope([data]))]
                yield Case(f"edge/{route}/{variant}", ROUTES[route], answers)
    yield from _envelope_cases()


def _envelope_cases() -> Iterator[Case]:
    """Yield odd envelopes and odd JSON texts around a page of products and one product."""
    product = dump(DOC_PRODUCT)
    texts = {
        "duplicate-keys": '{"code":"0","result":{"success":true,"data":[' + product + '],'
                          '"data":[]},"request_id":"r"}',
        "bom": "\ufeff" + envelope([DOC_PRODUCT]),
        "nan-literal-total": '{"code":"0","result":{"success":true,"data":[' + product + '],'
                             '"total":NaN}}',
        "big-int-total": '{"code":"0","result":{"success":true,"data":[' + product + '],'
                         '"total":123456789012345678901234567890}}',
        "float-page": '{"code":"0","result":{"success":true,"data":[' + product + '],'
                      '"page":1.0,"pageSize":1e2,"total":-0}}',
        "escaped-text": '{"code":"0","result":{"success":true,"data":[{"rpc":1,"title":'
                        '"\\u0041\\ud83d\\ude00\\u00e9","status":"Enabled"}]}}',
        "lone-surrogate-escape": '{"code":"0","result":{"success":true,"data":[{"rpc":1,'
                                 '"title":"\\udc00","status":"Enabled"}]}}',
        "deep-nesting": '{"code":"0","result":{"success":true,"data":[{"rpc":1,"status":'
                        '"Enabled","x":' + "[" * 5000 + "]" * 5000 + "}]}}",
        "whitespace": ' \n{ "code" : "0" , "result" : { "success" : true , "data" : [ '
                      + product + " ] } }\n",
        "truncated": envelope([DOC_PRODUCT])[:-3],
        "not-object": "[1,2,3]",
        "empty": "",
        "html": "<html><body>502 Bad Gateway</body></html>",
        "success-text-false": '{"code":"0","result":{"success":"false","errorMessage":"nope",'
                              '"data":null}}',
        "code-number": '{"code":0,"result":{"success":true,"data":[' + product + ']}}',
        "gateway-error": '{"type":"ISV","code":"ServiceTimeout","message":"timeout",'
                         '"request_id":"r"}',
        "result-null": '{"code":"0","result":null}',
        "data-object": '{"code":"0","result":{"success":true,"data":{"rpc":1}}}',
        "numbers-exponent": '{"code":"0","result":{"success":true,"data":[{"rpc":1E5,'
                            '"status":"Enabled","title":12.50,"productCode":1e-7}]}}',
        "big-float-text": '{"code":"0","result":{"success":true,"data":[{"rpc":'
                          '1.00000000000000000000000000001e5,"status":"Enabled"}]}}',
        "int-exponent-overflow": '{"code":"0","result":{"success":true,"data":[{"rpc":1e400,'
                                 '"status":"Enabled"}]}}',
    }
    for name, text in texts.items():
        yield Case(f"edge/envelope/products-list/{name}", ROUTES["products-list"],
                   [(200, text)])
        single = text.replace('"data":[', '"data":').replace("]}}", "}}").replace(
            "],\"data\":[]", ",\"data\":null")
        yield Case(f"edge/envelope/products-get/{name}", ROUTES["products-get"],
                   [(200, single)])
    for status in (400, 404, 429, 500, 502, 503):
        yield Case(f"edge/envelope/products-get/http-{status}", ROUTES["products-get"],
                   [(status, '{"type":"ISP","code":"X","message":"m"}')])


def all_cases() -> list[Case]:
    """Return the whole corpus, in a stable order, with unique ids."""
    cases = [*fixture_cases(), *sandbox_cases(), *edge_cases()]
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "corpus case ids must be unique"
    return cases


# --- running a case ------------------------------------------------------------------------

class CannedPlatform:
    """A WSGI stand-in for the platform that answers each call with the next canned answer.

    It keeps the calls it got (API path, method, business parameters) so the corpus also
    pins what the shim sent. A call beyond the canned answers gets a gateway error envelope.
    """

    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []
        self.calls: list[list[Any]] = []
        self._lock = threading.Lock()

    def load(self, answers: list[tuple[int, str]]) -> None:
        """Queue the answers of the next case and forget the previous case's calls."""
        with self._lock:
            self.answers, self.calls = list(answers), []

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        params = dict(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        params.update(request.form.to_dict())
        business = {name: value for name, value in sorted(params.items())
                    if name not in SYSTEM_PARAMS}
        with self._lock:
            self.calls.append([request.method, request.path, business])
            status, text = self.answers.pop(0) if self.answers else (
                200, '{"type":"ISV","code":"NoMoreAnswers","message":"no canned answer"}')
        response = Response(text.encode("utf-8", "surrogatepass"), status=status,
                            content_type="application/json;charset=UTF-8")
        return response(environ, start_response)


def run_case(app: Flask, platform: CannedPlatform, token: str, case: Case) -> Outcome:
    """Send the case's legacy request to ``app`` in process; return what a client gets."""
    platform.load(case.answers)
    request = case.request
    body = request.get("raw_body")
    if "body" in request:
        body = json.dumps(request["body"])
    headers = {**request.get("headers", {}), "Authorization": f"Bearer {token}"}
    with app.test_client() as http:
        answer = http.open(request["path"], method=request["method"],
                           query_string=request.get("query"), data=body, headers=headers)
        payload = answer.get_data()
    return Outcome(status=answer.status_code, body=payload.decode("utf-8"),
                   etag=answer.headers.get("ETag"), calls=platform.calls)


def issue_token(store: Store, client_id: str, granted: frozenset[str]) -> str:
    """Return a bearer token for ``client_id`` saved straight into ``store``."""
    token = credentials.new_token()
    store.save_token(credentials.token_digest(token), IssuedToken(
        client_id=client_id, scopes=granted, expires_at=4e9))  # valid whatever a case's clock
    return token
