"""Hypothesis properties: the signer, the strict input fields, and the translation schemas.

- For any business parameters, the signature ``LazadaAuth`` puts on a request verifies over
  the parameters the request actually carries, and the sandbox (a real HTTP server that
  decodes them its own way) accepts it.
- ``parse_ascii_int``, ``StrictInteger`` and ``DigitsId`` accept exactly the ASCII-digit
  integers in range (compared with a reference written independently), nothing else.
- Whatever a client sends, the legacy query, path and body schemas load only ints in range,
  and the RSS parameters built from them are ASCII digits on the wire.
- The tolerant RSS schemas load every documented type variance (Lazada reference, section 7)
  and dump legacy JSON valid against the OpenAPI document's schemas.

Generation is derandomized and keeps no example database, so runs are reproducible.
"""

from __future__ import annotations

import copy
import json
import re
import string
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from openapi_schema_validator import OAS30Validator

from shim.openapi.spec import build_spec
from shim.record.settings import STORE_ID
from shim.sandbox import SandboxServer
from shim.schemas.common import LegacyPageQuerySchema, RssPageParamsSchema, page_of
from shim.schemas.fields import INT32_MAX, INT64_MAX, DigitsId, StrictInteger, parse_ascii_int
from shim.schemas.pickup_jobs import (
    JOB_STATUSES,
    LegacyPickupJobPathSchema,
    LegacyPickupJobSchema,
    LegacyPickupJobsQuerySchema,
    RssPickupJobListSchema,
    RssPickupJobParamsSchema,
    RssPickupJobResultSchema,
    RssPickupJobsParamsSchema,
    missing_numbers,
    resolve_range,
)
from shim.schemas.pickup_locations import (
    LegacyPickupLocationPageSchema,
    LegacyPickupLocationPathSchema,
    LegacyPickupLocationSchema,
    RssPickupLocationPageSchema,
    RssPickupLocationParamsSchema,
    RssPickupLocationResultSchema,
)
from shim.schemas.products import (
    PRODUCT_STATUSES,
    LegacyProductPageSchema,
    LegacyProductPathSchema,
    LegacyProductSchema,
    LegacyProductsQuerySchema,
    RssProductPageSchema,
    RssProductParamsSchema,
    RssProductResultSchema,
    RssProductsParamsSchema,
)
from shim.schemas.stock_lots import (
    LegacyStockLotPathSchema,
    LegacyStockLotSchema,
    LegacyStockLotUpdateSchema,
    RssStockLotListSchema,
    RssStockLotParamsSchema,
    RssStockLotResultSchema,
    RssStockLotUpdateParamsSchema,
)
from shim.upstream import GatewayError
from shim.upstream.client import SYSTEM_PARAMS, LazadaAuth, LazadaClient, SellerCredentials
from shim.upstream.client import to_param_text as wire_text
from shim.upstream.signing import verify

FAST = settings(max_examples=200, derandomize=True, database=None, deadline=None)
SLOW_STRATEGY = settings(FAST, max_examples=80)  # big records: fewer, still every variant
WIRE = settings(max_examples=120, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SECRET = "property-secret-0123456789"  # not a session secret: only signs local test requests
API = "/rss/pickupLocations/get"
SPEC = build_spec()
DIGITS = re.compile(r"[0-9]+")


# --- strategies ---------------------------------------------------------------------------

names = st.text(min_size=0, max_size=12).filter(lambda name: name not in SYSTEM_PARAMS)
json_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=6)
param_values = st.one_of(st.text(max_size=20), st.just(""), st.integers(), st.booleans(),
                         json_ish)
business_params = st.dictionaries(names, param_values, max_size=8)

ascii_numbers = st.from_regex(r"\A[-+ ]?[0-9]{1,22}\Z")
# ASCII digits mixed with Arabic-Indic, fullwidth and superscript digits, signs and dots.
OTHER_DIGITS = "".join(map(chr, [*range(0x660, 0x66A), *range(0xFF10, 0xFF1A), 0xB2, 0xB3]))
unicode_digits = st.text(alphabet=string.digits + OTHER_DIGITS + "-+ .eE_", min_size=1,
                         max_size=8)
anything = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), ascii_numbers, unicode_digits,
    st.text(max_size=10), st.floats(allow_nan=True), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))
# What a query string, path segment or comma list can carry: text only.
query_text = st.one_of(ascii_numbers, unicode_digits, st.text(max_size=12),
                       st.lists(ascii_numbers, max_size=3).map(",".join),
                       st.lists(st.sampled_from((*JOB_STATUSES, "x", "")), max_size=3)
                       .map(",".join))


# --- the signer ---------------------------------------------------------------------------

def prepared(method: str, business: dict) -> requests.PreparedRequest:
    """Prepare the request ``LazadaClient._send`` would send for ``business``."""
    texts = {name: text for name, value in business.items()
             if (text := wire_text(value)) is not None}
    auth = LazadaAuth(API, texts, app_key="100001", app_secret=SECRET,
                      access_token="token-x", clock=lambda: 1_700_000_000.0)
    return requests.Request(method, "http://127.0.0.1:9/rest" + API, auth=auth).prepare()


def sent_params(request: requests.PreparedRequest) -> dict[str, str]:
    """Decode the parameters a prepared request carries (query for GET, form for POST)."""
    if request.method == "GET":
        carried = urlsplit(request.url).query
    else:
        carried = request.body.decode() if isinstance(request.body, bytes) else request.body
    pairs = parse_qsl(carried or "", keep_blank_values=True)
    assert len(pairs) == len(dict(pairs)), "a parameter sent twice"
    return dict(pairs)


@FAST
@given(business=business_params, method=st.sampled_from(["GET", "POST"]))
def test_the_signature_verifies_over_what_is_sent(business, method):
    sent = sent_params(prepared(method, business))
    assert verify(API, sent, SECRET)
    # Every non-empty business value is sent as its text; nothing else is added but the
    # system parameters.
    expected = {name: text for name, value in business.items()
                if (text := wire_text(value)) not in (None, "")}
    assert {name: value for name, value in sent.items()
            if name not in SYSTEM_PARAMS} == expected


@FAST
@given(business=business_params, method=st.sampled_from(["GET", "POST"]))
def test_a_changed_parameter_no_longer_verifies(business, method):
    sent = sent_params(prepared(method, business))
    for name in sorted(set(sent) - {"sign"}):
        assert not verify(API, {**sent, name: sent[name] + "x"}, SECRET)


@pytest.fixture(scope="module")
def sandbox_server(sandbox_config):
    with SandboxServer(sandbox_config()) as server:
        yield server


@pytest.fixture(scope="module")
def upstream(sandbox_server, test_secrets):
    with LazadaClient(app_key="100001", app_secret=test_secrets.app_secret,
                      api_url=sandbox_server.api_url, auth_url=sandbox_server.auth_url,
                      read_retries=0) as client:
        yield client


@WIRE
@given(business=business_params.map(lambda params: {
    name: value for name, value in params.items()
    if name not in ("storeId", "page", "pageSize")}), method=st.sampled_from(["GET", "POST"]))
def test_the_sandbox_accepts_every_signature(upstream, test_secrets, business, method):
    """Over real HTTP: the platform stand-in decodes the parameters and verifies the sign."""
    seller = SellerCredentials(store_id=STORE_ID, access_token=test_secrets.access_token)
    try:
        result = upstream.rss(API, seller, {**business, "page": 1, "pageSize": 1},
                              method=method)
    except GatewayError as error:
        pytest.fail(f"the sandbox refused the call: {error.code}")
    assert isinstance(result.data, list)


@FAST
@given(name=st.sampled_from(sorted(SYSTEM_PARAMS | {"storeId"})), value=st.text(max_size=5))
def test_system_parameters_cannot_be_smuggled_in(name, value):
    client = LazadaClient(app_key="100001", app_secret=SECRET, api_url="http://127.0.0.1:9/r")
    with client, pytest.raises(ValueError):
        client.rss(API, SellerCredentials(store_id="1", access_token="t"), {name: value})


# --- strict integers ----------------------------------------------------------------------

def reference_int(value, minimum: int, maximum: int, signed: bool = True) -> int | None:
    """The documented rule, written without the implementation's regexes.

    An int (not a bool), or text of the digits 0-9 (a leading "-" when signed) of at most 20
    characters, whose value is within [minimum, maximum]. None: refused.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        digits = value[1:] if signed and value[:1] == "-" else value
        if not digits or len(value) > 20 or any(ch not in string.digits for ch in digits):
            return None
        number = int(value)
    else:
        return None
    return number if minimum <= number <= maximum else None


bounds = st.sampled_from([(0, INT32_MAX), (1, INT32_MAX), (1, 100), (0, INT64_MAX)])


@FAST
@given(value=anything, limits=bounds, signed=st.booleans())
def test_parse_ascii_int_matches_the_reference(value, limits, signed):
    minimum, maximum = limits
    expected = reference_int(value, minimum, maximum, signed)
    try:
        got = parse_ascii_int(value, minimum=minimum, maximum=maximum, signed=signed)
    except ValueError:
        got = None
    assert got == expected
    assert got is None or type(got) is int


@FAST
@given(value=anything, limits=bounds)
def test_strict_integer_field_matches_the_reference(value, limits):
    minimum, maximum = limits
    try:
        got = StrictInteger(minimum=minimum, maximum=maximum).deserialize(value)
    except ValidationError:
        got = None
    assert got == reference_int(value, minimum, maximum)


@FAST
@given(value=anything)
def test_digits_id_takes_only_unsigned_ascii_digits(value):
    try:
        got = DigitsId().deserialize(value)
    except ValidationError:
        got = None
    assert got == reference_int(value, 0, INT64_MAX, signed=False)


# --- legacy input never reaches the platform as anything but digits -------------------------

def wire(params: dict) -> dict[str, str]:
    """Return the texts the upstream client would send for dumped RSS parameters."""
    return {name: text for name, value in params.items()
            if (text := wire_text(value)) is not None}


def assert_digits(texts: dict[str, str], *names: str) -> None:
    for name in names:
        if name in texts:
            assert DIGITS.fullmatch(texts[name]), (name, texts[name])


def load_or_none(schema, data):
    try:
        return schema.load(data)
    except ValidationError:
        return None


def in_range(value, minimum: int, maximum: int) -> bool:
    return type(value) is int and minimum <= value <= maximum


@FAST
@given(query=st.dictionaries(st.sampled_from(["page", "pageSize", "pickupLocations",
                                              "pickupLocationIds", "other"]), query_text))
def test_products_query_loads_only_ints_in_range(query):
    loaded = load_or_none(LegacyProductsQuerySchema(), query)
    if loaded is None:
        return
    assert in_range(loaded["page"], 1, INT32_MAX)
    assert in_range(loaded["page_size"], 1, 100)
    assert all(in_range(item, 0, INT64_MAX) for item in loaded["pickup_location_ids"])
    texts = wire(RssProductsParamsSchema().dump(loaded))
    assert_digits(texts, "page", "pageSize")
    if "pickupLocationIds" in texts:
        assert all(type(item) is int for item in json.loads(texts["pickupLocationIds"]))
        assert re.fullmatch(r"\[[0-9]+(,[0-9]+)*\]", texts["pickupLocationIds"])


@FAST
@given(query=st.dictionaries(st.sampled_from(["page", "pageSize"]), query_text))
def test_page_query_loads_only_ints_in_range(query):
    loaded = load_or_none(LegacyPageQuerySchema(), query)
    if loaded is not None:
        assert in_range(loaded["page"], 1, INT32_MAX)
        assert in_range(loaded["page_size"], 1, 100)
        assert_digits(wire(RssPageParamsSchema().dump(loaded)), "page", "pageSize")


@FAST
@given(query=st.dictionaries(st.sampled_from(["from", "till", "statuses"]), query_text))
def test_pickup_jobs_query_loads_only_ints_in_range(query):
    loaded = load_or_none(LegacyPickupJobsQuerySchema(), query)
    if loaded is None:
        return
    assert in_range(loaded["from_"], 0, INT64_MAX)
    assert "till" not in loaded or in_range(loaded["till"], 0, INT64_MAX)
    assert set(loaded.get("statuses") or ()) <= set(JOB_STATUSES)
    texts = wire(RssPickupJobsParamsSchema().dump(
        {"from_": loaded["from_"], "till": loaded.get("till"),
         "statuses": loaded.get("statuses")}))
    assert_digits(texts, "from", "till")
    if "statuses" in texts:
        assert set(texts["statuses"].split(",")) <= set(JOB_STATUSES)


@FAST
@given(start=st.integers(INT64_MAX - 40 * 86_400_000, INT64_MAX))
def test_the_default_range_stays_in_int64(start):
    loaded = LegacyPickupJobsQuerySchema().load({"from": str(start)})
    _, end = resolve_range(loaded, now_ms=1_700_000_000_000)
    assert end <= INT64_MAX


PATHS = [
    (LegacyProductPathSchema, RssProductParamsSchema, ("productId",)),
    (LegacyPickupLocationPathSchema, RssPickupLocationParamsSchema, ("pickupLocationId",)),
    (LegacyPickupJobPathSchema, RssPickupJobParamsSchema, ("pickupJobId",)),
    (LegacyStockLotPathSchema, RssStockLotParamsSchema, ("productId", "pickupLocationId")),
]


@FAST
@given(values=st.lists(query_text, min_size=2, max_size=2), index=st.integers(0, 3))
def test_path_schemas_load_only_ids_in_range(values, index):
    legacy, rss, names_ = PATHS[index]
    loaded = load_or_none(legacy(), dict(zip(names_, values, strict=False)))
    if loaded is None:
        return
    assert all(in_range(value, 0, INT64_MAX) for value in loaded.values())
    texts = wire(rss().dump(loaded))
    assert set(names_) <= set(texts)
    assert_digits(texts, *names_)


@FAST
@given(quantity=anything, extra=st.dictionaries(st.text(max_size=4), st.integers(),
                                                max_size=1))
def test_the_update_body_loads_only_int32_quantities(quantity, extra):
    body = {"quantityAtPickupLocation": quantity, **extra}
    loaded = load_or_none(LegacyStockLotUpdateSchema(), body)
    if extra and "quantityAtPickupLocation" not in extra:
        assert loaded is None  # an unknown member is refused
    if loaded is None:
        return
    number = loaded["quantity_at_pickup_location"]
    assert in_range(number, 0, INT32_MAX)
    texts = wire(RssStockLotUpdateParamsSchema().dump({
        "product_id": 1, "pickup_location_id": 2, "stock_lot_id": "0",
        "stock_lot_update": {"quantityAtPickupLocation": number}}))
    assert texts["stockLotUpdateDTO"] == f'{{"quantityAtPickupLocation":{number}}}'


# --- tolerant RSS schemas: documented variance in, legacy JSON out ---------------------------

def valid(component: str, document) -> bool:
    validator = OAS30Validator({"$ref": f"#/components/schemas/{component}",
                                "components": SPEC["components"]})
    errors = list(validator.iter_errors(document))
    assert not errors, errors[0].message
    return True


def as_variant(number: int):
    """An int the way the platform may send it: number, numeric text or integral float."""
    choices = [st.just(number), st.just(str(number))]
    if abs(number) < 2**53:
        choices.append(st.just(float(number)))
    return st.one_of(choices)


def int_variant(minimum=0, maximum=INT32_MAX):
    return st.integers(minimum, maximum).flatmap(as_variant)


ids = st.integers(0, INT64_MAX)
text_or_number = st.one_of(st.text(max_size=10), st.integers(0, 10**9), st.none())


def maybe(draw, record: dict, name: str, strategy) -> None:
    """Set ``record[name]`` from ``strategy``, or leave it out."""
    if draw(st.booleans()):
        record[name] = draw(strategy)


@st.composite
def rss_locations(draw):
    location = {"id": draw(ids.flatmap(as_variant))}
    for name in ("name", "addressLine1", "addressLine2", "city", "postalCode", "country"):
        maybe(draw, location, name, text_or_number)
    return location


@st.composite
def rss_products(draw):
    status = draw(st.sampled_from(PRODUCT_STATUSES))
    product = {"rpc": draw(ids.flatmap(as_variant)),
               "status": draw(st.sampled_from([{"type": status}, status]))}
    maybe(draw, product, "productCode", text_or_number)
    maybe(draw, product, "title", text_or_number)
    maybe(draw, product, "barcodes", st.one_of(st.none(), st.lists(text_or_number.filter(
        lambda value: value is not None), max_size=3)))
    maybe(draw, product, "pickupLocations", st.one_of(st.none(), st.lists(
        st.fixed_dictionaries({"id": st.one_of(st.text(min_size=1, max_size=8),
                                               st.integers(0, 10**6))}), max_size=3)))
    return product


@st.composite
def rss_stock_lots(draw):
    at = draw(st.integers(0, 10**6))
    scheduled = draw(st.integers(0, at))
    lot = {"id": draw(st.sampled_from(["0", 0, "12345", 12345, None])),
           "quantityAtPickupLocation": draw(as_variant(at)),
           "quantityScheduledForPickup": draw(as_variant(scheduled))}
    maybe(draw, lot, "quantityAvailableForSale",
          st.one_of(st.none(), as_variant(at - scheduled)))
    return lot


@st.composite
def rss_pickup_jobs(draw):
    millis = st.integers(0, 2**42)
    items = []
    for _ in range(draw(st.integers(0, 3))):
        item = {"rpc": draw(ids.flatmap(as_variant)), "qty": draw(int_variant(0, 10**4))}
        for name in ("name", "sku"):
            maybe(draw, item, name, text_or_number)
        maybe(draw, item, "qtyFulfilled", st.one_of(st.none(), int_variant(0, 10**4)))
        for name in ("size", "vpc", "imageUrl"):
            maybe(draw, item, name, st.one_of(st.none(), st.text(max_size=8),
                                               st.integers(0, 99)))
        maybe(draw, item, "minimumExpiryDate", st.one_of(st.none(), millis, millis.map(str)))
        maybe(draw, item, "shipmentsInfo", st.one_of(st.none(), st.lists(st.fixed_dictionaries(
            {"qty": int_variant(0, 100), "orderId": st.text(max_size=8)}), max_size=2)))
        items.append(item)
    job = {"id": draw(ids.flatmap(as_variant)), "status": draw(st.sampled_from(JOB_STATUSES)),
           "category": draw(st.sampled_from(["Dry", "Fresh", "Frozen"])),
           "scheduledAt": draw(millis.flatmap(as_variant)),
           "items": items or draw(st.sampled_from([[], None]))}
    for name in ("pickedAt", "amendabilityCutOffDate"):
        maybe(draw, job, name, st.one_of(st.none(), millis.flatmap(as_variant)))
    for name in ("qtyCount", "qtyFulfilledCount"):
        maybe(draw, job, name, st.one_of(st.none(), int_variant(0, 10**5)))
    maybe(draw, job, "preferredPickupTime", st.one_of(st.none(),
                                                      st.sampled_from(["13:00-17:00", 9])))
    return job


def rss_page(items):
    figure = st.one_of(st.none(), st.integers(1, 1000).flatmap(as_variant))
    return st.fixed_dictionaries({"data": st.one_of(st.none(), st.lists(items, max_size=3))},
                                 optional={"page": figure, "pageSize": figure,
                                           "total": figure})


@FAST
@given(location=rss_locations())
def test_pickup_location_variance_dumps_legacy_json(location):
    loaded = RssPickupLocationResultSchema().load({"data": location})["data"]
    dumped = LegacyPickupLocationSchema().dump(loaded)
    assert valid("PickupLocation", dumped)
    sent = location["id"]
    assert dumped["id"] == str(int(sent) if isinstance(sent, float) else sent)


@FAST
@given(product=rss_products())
def test_product_variance_dumps_legacy_json(product):
    loaded = RssProductResultSchema().load({"data": product})["data"]
    dumped = LegacyProductSchema().dump(loaded)
    assert valid("Product", dumped)
    assert dumped["status"]["type"] in PRODUCT_STATUSES


@FAST
@given(lot=rss_stock_lots())
def test_stock_lot_variance_dumps_legacy_json(lot):
    loaded = RssStockLotResultSchema().load({"data": lot})["data"]
    dumped = LegacyStockLotSchema().dump(loaded)
    assert valid("StockLot", dumped)
    assert dumped["id"] == "0"
    assert dumped["quantityAvailableForSale"] == (dumped["quantityAtPickupLocation"]
                                                  - dumped["quantityScheduledForPickup"])


@SLOW_STRATEGY
@given(job=rss_pickup_jobs())
def test_pickup_job_variance_dumps_legacy_json(job):
    loaded = RssPickupJobResultSchema().load({"data": job})["data"]
    assert missing_numbers(loaded) == []  # variance alone never withholds a job
    dumped = LegacyPickupJobSchema().dump(loaded)
    assert valid("PickupJob", dumped)
    if job.get("qtyCount") is None:
        assert dumped["qtyCount"] == sum(item["qty"] for item in dumped["items"])


@FAST
@given(result=st.one_of(
    st.tuples(st.just("location"), rss_page(rss_locations())),
    st.tuples(st.just("product"), rss_page(rss_products()))),
    requested=st.fixed_dictionaries({"page": st.integers(1, 50), "page_size":
                                     st.integers(1, 100)}))
def test_page_variance_dumps_legacy_pages(result, requested):
    kind, page = result
    rss, legacy, component = {
        "location": (RssPickupLocationPageSchema, LegacyPickupLocationPageSchema,
                     "PickupLocationPage"),
        "product": (RssProductPageSchema, LegacyProductPageSchema, "ProductPage"),
    }[kind]
    # ``shim.legacy.rss.load`` leaves out the figures the envelope did not give.
    payload = {name: value for name, value in page.items() if value is not None or
               name == "data"}
    dumped = legacy().dump(page_of(requested, rss().load(payload)))
    assert valid(component, dumped)
    assert dumped["page"] >= 1 and dumped["pageSize"] >= 1


@SLOW_STRATEGY
@given(kind=st.sampled_from(["StockLot", "PickupJob"]), data=st.data())
def test_list_variance_dumps_bare_legacy_arrays(kind, data):
    """The list APIs' ``data`` may be a list, ``null`` or missing: a bare array either way."""
    rss, legacy, items = {
        "StockLot": (RssStockLotListSchema, LegacyStockLotSchema, rss_stock_lots()),
        "PickupJob": (RssPickupJobListSchema, LegacyPickupJobSchema, rss_pickup_jobs()),
    }[kind]
    payload = data.draw(st.one_of(st.just({}), st.just({"data": None}),
                                  st.lists(items, max_size=3).map(lambda got: {"data": got})))
    dumped = legacy().dump(rss().load(payload)["data"], many=True)
    assert len(dumped) == len(payload.get("data") or [])
    assert all(valid(kind, item) for item in dumped)


def _with_gap(job: dict, gap: str) -> dict:
    """Return ``job`` with a required number taken away as the platform may send it."""
    job = copy.deepcopy(job)
    if gap == "scheduledAt null":
        job["scheduledAt"] = None
    elif gap == "scheduledAt absent":
        del job["scheduledAt"]
    else:
        job["items"][0]["shipmentsInfo"][0]["qty"] = None
    return job


GAPS = {"scheduledAt null": "scheduledAt", "scheduledAt absent": "scheduledAt",
        "shipment qty null": "items.shipmentsInfo.qty"}


@pytest.mark.parametrize(("gap", "member"), GAPS.items())
def test_pickup_jobs_with_missing_numbers_are_withheld_never_dumped(gap, member):
    """A job lacking a required integer is named by ``missing_numbers``, which the views
    check before dumping (a list leaves it out, a single read is a 502): dumped anyway, it
    would break the legacy schema, so no legacy client is ever served it."""
    job = {"id": 5, "status": "pending", "category": "Dry", "scheduledAt": 1_700_000_000_000,
           "items": [{"rpc": 1, "qty": 2, "shipmentsInfo": [{"qty": 2, "orderId": "o"}]}]}
    whole = RssPickupJobResultSchema().load({"data": job})["data"]
    assert missing_numbers(whole) == [] and valid("PickupJob", LegacyPickupJobSchema().dump(whole))
    loaded = RssPickupJobResultSchema().load({"data": _with_gap(job, gap)})["data"]
    assert missing_numbers(loaded) == [member]
    with pytest.raises(AssertionError):
        valid("PickupJob", LegacyPickupJobSchema().dump(loaded))


@SLOW_STRATEGY
@given(job=rss_pickup_jobs(), gap=st.sampled_from(sorted(GAPS)))
def test_any_job_with_a_gap_is_withheld(job, gap):
    """Whatever else varies, a job with one of the gaps is never taken as servable."""
    if gap == "shipment qty null":
        assume(job["items"] and job["items"][0].get("shipmentsInfo"))
    loaded = RssPickupJobResultSchema().load({"data": _with_gap(job, gap)})["data"]
    assert GAPS[gap] in missing_numbers(loaded)
