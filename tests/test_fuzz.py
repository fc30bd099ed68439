"""Schemathesis, driven by the shim's own OpenAPI document, against the shim on the sandbox.

One sandbox and one shim serve the whole module over real sockets. Every generated request
to ``/v1`` carries a bearer token of the client with all scopes (the token endpoint gets
none), and the rate limits are raised so the run exercises the API, not the limiter. Beside
schemathesis' checks (no 5xx; status, content type, headers and body as documented), every
error body must be one of the three legacy shapes and no answer may hold a secret or
anything shaped like a signature. The last test checks the count of requests and that the
sandbox's ledger never saw an id or number that is not ASCII digits.

Generation is deterministic (the same requests every run) and keeps no example database.
Hooks mix known records into the generated ids (and ``*`` into If-Match, recent times into
``from``), so the success paths run on real data too, not only the 400s and 404s.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shim.openapi.spec import build_spec
from shim.sandbox.config import SandboxConfig
from shim.sandbox.seed import build_catalog

pytestmark = pytest.mark.slow

# Examples per operation: with the coverage phase's extra cases, ~1,120 requests on each /v1
# route. The token endpoint gets fewer: every client id presented there costs a scrypt.
MAX_EXAMPLES = 1_080
TOKEN_MAX_EXAMPLES = 60
MIN_REQUESTS = 10_000
TOKEN_PATH = "/oauth2/token"
JOBS_PATH = "/v1/pickup-jobs"
DAY_MS = 86_400_000
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
DIGITS = re.compile(r"[0-9]+")
SIGNATURE_LIKE = re.compile(r"\b[0-9A-F]{64}\b")  # Lazada's sign: uppercase hex SHA-256
ERROR_SHAPES = ({"title"}, {"title", "detail"}, {"message"}, {"error", "error_description"},
                {"error", "error_description", "state"})
# Upstream parameters that carry a client's id or number: their text must be ASCII digits.
NUMERIC_PARAMS = ("productId", "pickupLocationId", "pickupJobId", "page", "pageSize", "from",
                  "till", "storeId")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]

CONFIG = SchemathesisConfig.from_dict({
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
        "with-security-parameters": False,  # the test sends the token itself
    },
    "operations": [{"include-path": TOKEN_PATH,
                    "generation": {"max-examples": TOKEN_MAX_EXAMPLES}}],
})
schema = schemathesis.openapi.from_dict(build_spec(), config=CONFIG)

# Records the sandbox seeds (ids come from its seeded random generator, not the clock).
_CATALOG = build_catalog(SandboxConfig.seed, int(time.time() * 1000))
KNOWN = {
    "productId": sorted({str(product["rpc"]) for product in _CATALOG.products[:40]}
                        | {str(product["rpc"]) for product in _CATALOG.products[-5:]}),
    "pickupLocationId": [location["id"] for location in _CATALOG.locations],
    "pickupJobId": [str(job["id"]) for job in _CATALOG.jobs[:40]],
}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half the time, replace generated ids by ids the sandbox has."""
    known = {name: st.sampled_from(KNOWN[name]) for name in path_parameters or () if name in KNOWN}
    if not known:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters),
                     st.fixed_dictionaries(known).map(lambda ids: {**path_parameters, **ids}))


@schema.hook
def flatmap_headers(context, headers):
    """Sometimes send ``If-Match: *``, so updates get past the ETag check."""
    if headers is None or "If-Match" not in headers:
        return st.just(headers)
    return st.one_of(st.just(headers), st.just({**headers, "If-Match": "*"}))


@schema.hook
def flatmap_query(context, query):
    """For pickup jobs, sometimes start the range at a recent time, where jobs are."""
    if context.operation is None or context.operation.path != JOBS_PATH or query is None:
        return st.just(query)
    recent = st.integers(0, 170).map(lambda days: str(int(time.time() * 1000) - days * DAY_MS))
    return st.one_of(st.just(query), recent.map(lambda start: {**query, "from": start}))


class FuzzRun:
    """A stack of its own, its client's token, and what the run sent and got."""

    def __init__(self, stack, secrets: set[str]) -> None:
        self.stack, self.sandbox, self.shim = stack, stack.sandbox, stack.shim
        self.token = stack.legacy.token("full")
        self.session = requests.Session()
        self.secrets = sorted(secrets | {self.token})
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.started = time.monotonic()

    @property
    def requests(self) -> int:
        """Return how many generated requests were sent."""
        return sum(self.statuses.values())

    def close(self) -> None:
        self.session.close()
        self.stack.close()


@pytest.fixture(scope="module")
def stack(make_stack, test_secrets, session_secrets):
    built = FuzzRun(make_stack(rate_limit_per_second=1_000_000,
                               pickup_jobs_rate_limit_per_second=1_000_000),
                    set(test_secrets.all()) | session_secrets)
    yield built
    built.close()


def assert_legacy_error(response: requests.Response) -> None:
    """An error body is one of the three legacy shapes, with text members."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) in ERROR_SHAPES, body
    assert all(isinstance(value, str) for value in body.values()), body


def assert_no_secret(stack: FuzzRun, response: requests.Response) -> None:
    """No answer (body or headers) holds a secret or a signature."""
    seen = response.text + "".join(f"\n{name}: {value}" for name, value in
                                   response.headers.items())
    leaked = [index for index, secret in enumerate(stack.secrets) if secret in seen]
    assert not leaked, f"secret #{leaked} in an answer"
    assert not SIGNATURE_LIKE.search(seen), "something shaped like a signature in an answer"


@schema.parametrize()
def test_api(case, stack):
    """Every generated request gets a documented, legacy-shaped, secret-free answer."""
    headers = {} if case.path == TOKEN_PATH else {"Authorization": f"Bearer {stack.token}"}
    response = case.call(base_url=stack.shim.base_url, session=stack.session,
                         headers=headers, timeout=15)
    sent = response.request.method
    # Schemathesis also probes each path with the methods it does not have (405; OPTIONS 200).
    label = case.operation.label if sent == case.operation.method.upper() else f"{sent} probes"
    stack.statuses[label, response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=headers)
    assert_legacy_error(response)
    assert_no_secret(stack, response)


def wrong_numbers(params: dict) -> list[str]:
    """Return what is wrong with the numbers in one platform call's parameters."""
    wrong = [f"{name}={params[name]!r}" for name in NUMERIC_PARAMS
             if name in params and not (DIGITS.fullmatch(str(params[name]))
                                        and int(params[name]) <= INT64_MAX)]
    if "pickupLocationIds" in params:
        ids = json.loads(params["pickupLocationIds"])
        if not all(type(item) is int and 0 <= item <= INT64_MAX for item in ids):
            wrong.append(f"pickupLocationIds={params['pickupLocationIds']!r}")
    if params.get("stockLotId", "0") != "0":
        wrong.append(f"stockLotId={params['stockLotId']!r}")
    if "stockLotUpdateDTO" in params:
        quantity = json.loads(params["stockLotUpdateDTO"]).get("quantityAtPickupLocation")
        if not (type(quantity) is int and 0 <= quantity <= INT32_MAX):
            wrong.append(f"stockLotUpdateDTO={params['stockLotUpdateDTO']!r}")
    return wrong


def test_the_run_was_large_and_only_digits_reached_the_platform(stack, capsys):
    """The run sent at least MIN_REQUESTS requests; the ledger holds no non-digit number.

    Runs after ``test_api`` (pytest keeps the module's order); alone it has nothing to count.
    """
    seconds = time.monotonic() - stack.started
    entries = requests.get(stack.sandbox.base_url + "/_sandbox/ledger",
                           timeout=10).json()["entries"]
    bad = [(entry["api"], problem) for entry in entries
           for problem in wrong_numbers(entry.get("params") or {})]
    lines = [f"fuzzing: {stack.requests} generated requests in {seconds:.0f} s, "
             f"{len(entries)} platform calls, {len(bad)} with a non-digit number"]
    lines += [f"  {label} -> {status}: {count}"
              for (label, status), count in sorted(stack.statuses.items())]
    with capsys.disabled():  # the figures belong in every run's output
        print("\n" + "\n".join(lines))
    assert bad == []
    assert stack.requests >= MIN_REQUESTS, "run with test_api: it sends the requests"
    # Not vacuous: every kind of number the shim sends was seen and checked.
    seen = {name for entry in entries for name in entry.get("params") or {}}
    assert {*NUMERIC_PARAMS, "pickupLocationIds", "stockLotId", "stockLotUpdateDTO"} <= seen


def test_from_near_int64_max_without_till(stack):
    """A ``from`` in range without ``till``: no 500, and nothing out of int64 sent upstream.

    After the ledger test, so that its call is not counted there.
    """
    last = requests.get(stack.sandbox.base_url + "/_sandbox/ledger",
                        timeout=10).json()["last_seq"]
    response = stack.session.get(stack.shim.base_url + JOBS_PATH,
                                 params={"from": str(INT64_MAX)},
                                 headers={"Authorization": f"Bearer {stack.token}"}, timeout=10)
    entries = requests.get(stack.sandbox.base_url + "/_sandbox/ledger", params={"after": last},
                           timeout=10).json()["entries"]
    sent_upstream = [problem for entry in entries
                     for problem in wrong_numbers(entry.get("params") or {})]
    assert sent_upstream == []
    assert response.status_code < 500, response.text
    assert_legacy_error(response)
