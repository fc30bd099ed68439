"""The OpenAPI document: valid, complete, served without a credential, and true to the server.

"True to the server" is checked here for every error status, including the ones fuzzing
never reaches (401, 403, 405, 409, 412, 413, 415, 429, 500, 503, Kong's 404): each real
answer must be documented for its operation, with its body valid against the documented
schema and its required headers present.
"""

from __future__ import annotations

import base64
import copy
import difflib
import json
import re
import time
import tomllib
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from shim import errors, openapi, scopes
from shim.app import create_app
from shim.legacy.ratelimit import FAILED_AUTH_LIMIT
from shim.openapi.spec import COMMON_STATUSES, build_spec, path_template
from shim.sandbox import SandboxServer
from shim.sandbox.faults import parse_rule

ROOT = Path(__file__).resolve().parent.parent
JSON = "application/json"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
LOTS = "/v1/products/{productId}/pickup-locations/{pickupLocationId}/stock-lots"
LOT = LOTS + "/{stockLotId}"
PINNED = ROOT / "tests" / "openapi.json"
DOC_LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
API_PREFIXES = ("/v1", "/oauth2")
IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def spec():
    return build_spec()


@pytest.fixture(scope="module")
def sandbox_server(sandbox_config):
    with SandboxServer(sandbox_config()) as server:
        yield server


@pytest.fixture(scope="module")
def app(make_settings, sandbox_server):
    built = create_app(make_settings(sandbox_server.api_url,
                                     rate_limit_per_second=10_000, max_body_bytes=1024,
                                     pickup_jobs_rate_limit_per_second=10_000))
    if openapi.EXTENSION not in built.extensions:  # until create_app does it
        openapi.init_app(built)
    return built


@pytest.fixture(scope="module")
def http(app):
    return app.test_client()


@pytest.fixture(scope="module")
def tokens(session_secrets, http, test_secrets):
    """Bearer tokens of the full and the read-only client."""
    issued = {}
    for client_id in ("full", "reader"):
        answer = http.post("/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": client_id,
            "client_secret": test_secrets.client_secret})
        issued[client_id] = answer.get_json()["access_token"]
        session_secrets.add(issued[client_id])  # the secret scan looks for it in every log
    return issued


@pytest.fixture
def faults(sandbox_server):
    """Add sandbox fault rules for one test; they are cleared after it."""
    yield lambda **rule: sandbox_server.state.add_fault(parse_rule(rule))
    sandbox_server.state.clear_faults()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- checking an answer against the document ------------------------------------------------

def resolve(spec: dict, node: dict) -> dict:
    """Return ``node``, or what its ``$ref`` points to."""
    if "$ref" not in node:
        return node
    found = spec
    for part in node["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return found


def assert_matches(spec: dict, documented: dict, response) -> None:
    """The answer has the documented media type, a body valid against the schema, headers."""
    documented = resolve(spec, documented)
    media = documented["content"]
    assert response.mimetype in media, response.mimetype
    schema = {**media[response.mimetype]["schema"], "components": spec["components"]}
    OAS30Validator(schema).validate(response.get_json())
    for name, header in documented.get("headers", {}).items():
        if resolve(spec, header).get("required"):
            assert name in response.headers, f"{name} missing"


def assert_documented(spec: dict, method: str, path: str, response) -> None:
    """The answer's status is documented for the operation, and the answer matches it."""
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in responses, (
        f"{response.status_code} not documented for {method} {path}: {response.get_json()}")
    assert_matches(spec, responses[str(response.status_code)], response)


# --- the document itself ------------------------------------------------------------------

def test_the_document_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"] == "3.0.3"


def _pretty(document: dict) -> list[str]:
    return json.dumps(document, indent=1, ensure_ascii=False).splitlines()


def test_the_served_document_is_the_pinned_one(http):
    """The served bytes are those of tests/openapi.json, so no change to the document goes
    unseen. After an intended change, write the new one with
    ``.venv/bin/python -c 'import json; from shim.openapi.spec import build_spec;
    print(json.dumps(build_spec(), indent=1, ensure_ascii=False))' > tests/openapi.json``.
    """
    served = http.get(openapi.SPEC_PATH).data
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    if served != json.dumps(pinned, separators=(",", ":")).encode() + b"\n":
        changes = difflib.unified_diff(_pretty(pinned), _pretty(json.loads(served)),
                                       "pinned", "served", lineterm="")
        pytest.fail("the document changed:\n" + "\n".join(list(changes)[:60]))


def test_the_document_lists_exactly_the_apps_routes(app, spec):
    """A route added to the app without documentation fails here (and one removed)."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API_PREFIXES):
            for method in rule.methods - IGNORED_METHODS:
                routes.add((method.lower(), path_template(rule.rule), rule.endpoint))
    documented = {(method, path, operation["operationId"])
                  for path, item in spec["paths"].items()
                  for method, operation in item.items()}
    assert documented == routes


def test_each_operation_names_its_views_scope(app, spec):
    for item in spec["paths"].values():
        for operation in item.values():
            view = app.view_functions[operation["operationId"]]
            scope = getattr(view, "required_scope", None)
            if scope is None:  # only the token endpoint needs no token
                assert operation["security"] == [{"clientBasic": []}, {}]
            else:
                assert operation["security"] == [{"oauth2": [scope]}, {"bearerAuth": []},
                                                 {"accessToken": []}]


def test_every_v1_operation_documents_the_gateway_and_upstream_errors(spec):
    """Every status the upstream error table can produce is documented on every /v1 route."""
    table = {outcome.status for outcome in errors.OUTCOMES.values()}
    assert table <= set(COMMON_STATUSES)
    for path, item in spec["paths"].items():
        for operation in item.values():
            if path.startswith("/v1"):
                assert set(map(str, COMMON_STATUSES)) <= set(operation["responses"])


def parameters(spec: dict, method: str, path: str) -> dict[str, dict]:
    return {parameter["name"]: parameter
            for parameter in spec["paths"][path][method]["parameters"]}


def test_parameters_come_from_the_route_schemas(spec):
    for path in ("/v1/pickup-locations/{pickupLocationId}", "/v1/products/{productId}",
                 LOTS, LOT, "/v1/pickup-jobs/{pickupJobId}"):
        for name, parameter in parameters(spec, "get", path).items():
            if name != "stockLotId":
                assert parameter["in"] == "path" and parameter["required"]
                assert parameter["schema"]["pattern"] == "^[0-9]+$"
    page_params = parameters(spec, "get", "/v1/products")
    assert page_params["page"]["schema"].items() >= {
        "type": "integer", "minimum": 1, "maximum": 2**31 - 1, "default": 1}.items()
    assert page_params["pageSize"]["schema"].items() >= {
        "minimum": 1, "maximum": 100, "default": 50}.items()
    for name in ("pickupLocations", "pickupLocationIds"):
        assert page_params[name]["schema"]["items"]["pattern"] == "^[0-9]+$"
        assert (page_params[name]["style"], page_params[name]["explode"]) == ("form", False)
    jobs = parameters(spec, "get", "/v1/pickup-jobs")
    assert jobs["from"]["required"] and jobs["from"]["schema"]["format"] == "int64"
    assert not jobs["till"]["required"] and jobs["till"]["schema"]["maximum"] == 2**63 - 1
    assert jobs["statuses"]["schema"]["items"]["enum"] == [
        "pending", "arrived", "pickedup", "cancelled", "failed"]
    lot = parameters(spec, "patch", LOT)
    assert lot["If-Match"]["in"] == "header" and lot["If-Match"]["required"]
    assert lot["stockLotId"]["schema"]["enum"] == ["0"]


def test_the_patch_body_takes_a_number_or_numeric_text(spec):
    body = spec["paths"][LOT]["patch"]["requestBody"]
    assert body["required"]
    assert set(body["content"]) == {"application/merge-patch+json", JSON}
    update = spec["components"]["schemas"]["StockLotUpdate"]
    number, text = update["properties"]["quantityAtPickupLocation"]["oneOf"]
    assert (number["type"], number["minimum"], number["maximum"]) == ("integer", 0, 2**31 - 1)
    assert (text["type"], text["pattern"]) == ("string", "^[0-9]+$")
    assert update["additionalProperties"] is False


def test_answer_schemas_are_exact_and_required_as_documented(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["PickupJob"]["required"] == ["id", "status", "category", "scheduledAt",
                                                "qtyCount", "qtyFulfilledCount", "items"]
    assert schemas["PickupItem"]["required"] == ["name", "sku", "qty", "rpc"]
    assert "total" not in schemas["ProductPage"]["required"]
    assert schemas["PickupJob"]["properties"]["qtyCount"]["type"] == "integer"
    for name in ("Problem", "GatewayMessage", "OAuthError", "StockLot", "Product"):
        assert schemas[name]["additionalProperties"] is False


def test_the_document_and_the_page_need_no_credential(http, spec):
    answer = http.get("/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == JSON
    assert answer.get_json() == spec
    assert http.get("/docs").status_code == 200


def test_the_document_and_the_page_hold_no_secret(http, tokens, test_secrets):
    served = http.get("/openapi.json").get_data(as_text=True) + http.get("/docs").get_data(
        as_text=True)
    for secret in [*test_secrets.all(), *tokens.values()]:
        assert secret not in served


def test_the_page_is_swagger_ui_from_the_shims_own_files(http):
    answer = http.get("/docs")
    html = answer.get_data(as_text=True)
    assert answer.mimetype == "text/html"
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(sources) == sorted([f"docs/{name}" for name in openapi.ASSETS]
                                     + ["openapi.json"])  # relative: works behind a prefix
    assert "<script>" not in html and " style=" not in html  # nothing inline for CSP to allow
    assert 'data-spec="openapi.json"' in html
    types = {"js": "text/javascript", "css": "text/css", "png": "image/png"}
    for name in openapi.ASSETS:
        with http.get(f"/docs/{name}") as asset:
            assert asset.status_code == 200 and len(asset.get_data()) > 100, name
            assert asset.mimetype == types[name.rpartition(".")[2]]
            assert asset.headers["X-Content-Type-Options"] == "nosniff"
            assert asset.headers["Cache-Control"] == (
                f"public, max-age={openapi.ASSET_MAX_AGE_S}")


def test_the_page_may_load_and_call_its_own_origin_only(http):
    for path in ("/docs", "/docs/docs.js"):
        with http.get(path) as answer:
            policy = dict(directive.strip().split(" ", 1) for directive in
                          answer.headers["Content-Security-Policy"].split(";"))
        assert policy == {
            "default-src": "'none'", "script-src": "'self'", "style-src": "'self'",
            "img-src": "'self' data:",  # Swagger UI's stylesheet draws its icons as data: SVG
            "connect-src": "'self'", "form-action": "'none'", "frame-ancestors": "'none'",
            "base-uri": "'none'"}


def test_only_the_listed_files_are_served_under_docs(http):
    assert (openapi.SWAGGER_UI_FILES / "swagger-ui.js").is_file()  # there, but not listed
    for name in ("swagger-ui.js", "oauth2-redirect.html", "index.css", "..%2Fspec.py",
                 "docs.html", "%2e%2e", "VERSION"):
        assert http.get(f"/docs/{name}").status_code == 404, name
    assert http.get("/docs/").status_code == 404


def test_swagger_ui_comes_with_its_license_and_version():
    """The files are swagger-ui-dist's (Apache-2.0), a release of the 5 series."""
    assert "Apache License" in (openapi.SWAGGER_UI_FILES / "LICENSE").read_text()
    assert re.fullmatch(r"v5\.\d+\.\d+\s*", (openapi.SWAGGER_UI_FILES / "VERSION").read_text())


def test_the_page_names_no_other_host():
    """Nothing in the page or its starter points elsewhere, and Swagger UI's validator badge
    (which sends the document to a public validator) is switched off."""
    for own in openapi.OWN_FILES.iterdir():
        assert not re.search(r"https?:|//\w", own.read_text()), own.name
    assert "validatorUrl: null" in (openapi.OWN_FILES / "docs.js").read_text()


def test_a_route_whose_docstring_changes_changes_the_document():
    """Summaries are read from the views, not copied: the document follows the code."""
    from shim.legacy import products

    summary = build_spec()["paths"]["/v1/products"]["get"]["summary"]
    assert summary == products.list_products.__doc__.strip().splitlines()[0].rstrip(".")


def test_the_pages_own_files_are_package_data():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["shim"]
    for own in openapi.OWN_FILES.iterdir():
        relative = own.relative_to(ROOT / "shim").as_posix()
        assert any(Path(relative).match(pattern) for pattern in package_data), relative


# --- real answers against the document ----------------------------------------------------

def test_token_answers(http, spec, test_secrets):
    form = {"grant_type": "client_credentials", "client_id": "full",
            "client_secret": test_secrets.client_secret}
    answers = [
        http.post("/oauth2/token", data=form),
        http.post("/oauth2/token", data={**form, "grant_type": "password"}),
        http.post("/oauth2/token", data={**form, "scope": "read:everything", "state": "s1"}),
        http.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers={
            "Authorization": "Basic " + base64.b64encode(b"full:wrong").decode()}),
    ]
    assert [answer.status_code for answer in answers] == [200, 400, 400, 401]
    for answer in answers:
        assert_documented(spec, "POST", "/oauth2/token", answer)


def test_the_failed_authentication_throttle_is_documented(http, spec):
    form = {"grant_type": "client_credentials", "client_id": "throttled-" + str(time.time()),
            "client_secret": "wrong"}
    for _ in range(FAILED_AUTH_LIMIT):
        assert http.post("/oauth2/token", data=form).status_code == 400
    answer = http.post("/oauth2/token", data=form)
    assert answer.status_code == 429
    assert_documented(spec, "POST", "/oauth2/token", answer)


def test_token_errors_without_and_with_a_bad_token(http, spec):
    for headers in ({}, bearer("not-a-token")):
        answer = http.get("/v1/products", headers=headers)
        assert answer.status_code == 401
        assert "X-RateLimit-Limit-second" not in answer.headers  # before the limiter
        assert_documented(spec, "GET", "/v1/products", answer)


def test_scope_input_and_resource_errors(http, spec, tokens):
    full, reader = bearer(tokens["full"]), bearer(tokens["reader"])
    cases = [
        ("GET", "/v1/products", "/v1/products?pageSize=0", full, 400),
        ("GET", "/v1/pickup-locations", "/v1/pickup-locations?page=1&page=2", full, 400),
        ("GET", "/v1/products/{productId}", "/v1/products/12a", full, 400),
        ("GET", "/v1/products/{productId}", "/v1/products/999999999", full, 404),
        ("GET", "/v1/pickup-locations/{pickupLocationId}", "/v1/pickup-locations/x", full, 404),
        ("GET", "/v1/pickup-jobs/{pickupJobId}", "/v1/pickup-jobs/1", full, 404),
        ("GET", "/v1/pickup-jobs", "/v1/pickup-jobs", full, 400),
        ("GET", "/v1/pickup-jobs", "/v1/pickup-jobs?from=1", full, 422),
        ("GET", LOT, "/v1/products/100150/pickup-locations/23789/stock-lots/1", full, 404),
        ("GET", LOTS, "/v1/products/100150/pickup-locations/99/stock-lots", full, 404),
        ("GET", "/v1/pickup-jobs", f"/v1/pickup-jobs?from={int(time.time() * 1000)}",
         reader, 200),
    ]
    for method, template, url, headers, status in cases:
        answer = http.open(url, method=method, headers=headers)
        assert answer.status_code == status, (url, answer.get_json())
        assert_documented(spec, method, template, answer)
    answer = http.patch(DOC_LOT, json={"quantityAtPickupLocation": 5},
                        headers={**reader, **MERGE_PATCH, "If-Match": '"10"'})
    assert answer.status_code == 403
    assert answer.get_json()["detail"].endswith(scopes.WRITE_STOCK_LOT)
    assert_documented(spec, "PATCH", LOT, answer)


def test_update_answers(http, spec, tokens):
    headers = {**bearer(tokens["full"]), **MERGE_PATCH}
    read = http.get(DOC_LOT, headers=headers)
    assert_documented(spec, "GET", LOT, read)
    etag = read.headers["ETag"]
    cases = [
        ({"If-Match": etag}, {"quantityAtPickupLocation": "1"}, None, 409),
        ({"If-Match": '"999"'}, {"quantityAtPickupLocation": 30}, None, 412),
        ({}, {"quantityAtPickupLocation": 30}, None, 400),
        ({"If-Match": etag}, {"quantityAtPickupLocation": 30, "x": 1}, None, 400),
        ({"If-Match": etag, "Content-Type": "text/plain"}, None, "30", 415),
        ({"If-Match": etag}, None, '{"quantityAtPickupLocation": "' + "1" * 2000 + '"}', 413),
        ({"If-Match": etag}, {"quantityAtPickupLocation": "30"}, None, 200),
    ]
    for extra, body, raw, status in cases:
        answer = http.patch(DOC_LOT, headers={**headers, **extra}, json=body, data=raw)
        assert answer.status_code == status, (extra, body, answer.get_json())
        assert_documented(spec, "PATCH", LOT, answer)
    assert answer.headers["ETag"] == '"30"'


@pytest.mark.parametrize(("kind", "status"), [
    ("ApiCallLimit", 429), ("ServiceTimeout", 503), ("SellerNotActive", 403),
    ("InvalidSignature", 500), ("http502", 503),
])
def test_upstream_failures(http, spec, tokens, faults, kind, status):
    faults(api="*", kind=kind, times=5)
    answer = http.get("/v1/products/100150", headers=bearer(tokens["full"]))
    assert answer.status_code == status, answer.get_json()
    assert_documented(spec, "GET", "/v1/products/{productId}", answer)


def test_the_rate_limit_answer(make_settings, session_secrets, spec, test_secrets, sandbox_server):
    frozen = time.time()
    app = create_app(make_settings(sandbox_server.api_url,
                                   rate_limit_per_second=1), clock=lambda: frozen)
    http = app.test_client()
    token = http.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": "full",
        "client_secret": test_secrets.client_secret}).get_json()["access_token"]
    session_secrets.add(token)
    first = http.get("/v1/pickup-locations", headers=bearer(token))
    second = http.get("/v1/pickup-locations", headers=bearer(token))
    assert (first.status_code, second.status_code) == (200, 429)
    for answer in (first, second):
        assert_documented(spec, "GET", "/v1/pickup-locations", answer)


def test_answers_outside_the_operations(http, spec, tokens):
    components = spec["components"]["responses"]
    nothing = http.get("/nope")
    assert nothing.status_code == 404
    assert_matches(spec, components["NoRoute"], nothing)
    unknown = http.get("/v1/nope", headers=bearer(tokens["full"]))
    assert unknown.status_code == 404
    assert_matches(spec, components["NoRoute"], unknown)
    wrong = http.put("/v1/products", headers=bearer(tokens["full"]))
    assert wrong.status_code == 405
    assert_matches(spec, components["MethodNotAllowed"], wrong)
    assert wrong.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_every_success_answer_matches(http, spec, tokens):
    headers = bearer(tokens["full"])
    now_ms = int(time.time() * 1000)
    for template, url in (
            ("/v1/pickup-locations", "/v1/pickup-locations?pageSize=3"),
            ("/v1/pickup-locations/{pickupLocationId}", "/v1/pickup-locations/23789"),
            ("/v1/products", "/v1/products?pickupLocations=23789&pickupLocationIds=23790"),
            ("/v1/products/{productId}", "/v1/products/100150"),
            (LOTS, "/v1/products/100150/pickup-locations/23789/stock-lots"),
            ("/v1/pickup-jobs", f"/v1/pickup-jobs?from={now_ms - 20 * 86_400_000}"),
            ("/v1/pickup-jobs/{pickupJobId}", "/v1/pickup-jobs/123")):
        answer = http.get(url, headers=headers)
        assert answer.status_code == 200, (url, answer.get_json())
        assert_documented(spec, "GET", template, answer)


def test_examples_in_the_document_are_valid(spec):
    """Every example body in the document validates against its own schema."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for media in resolve(spec, response).get("content", {}).values():
                    schema = OAS30Validator({**media["schema"],
                                             "components": spec["components"]})
                    examples = [media["example"]] if "example" in media else []
                    examples += [example["value"] for example in
                                 media.get("examples", {}).values()]
                    for example in examples:
                        assert schema.is_valid(copy.deepcopy(example)), (method, path, status)


def test_path_template_converts_flask_rules():
    assert path_template("/v1/products/<product_id>/x/<int:pickup_job_id>") == (
        "/v1/products/{productId}/x/{pickupJobId}")
    assert re.fullmatch(r"[^<>]*", path_template("/oauth2/token"))
