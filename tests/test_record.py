"""Record mode and verify (shim.record): real traffic through the shim to the sandbox becomes
scrubbed contract cases, and verify replays cases against the current code field by field."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from processes import default_sigint

from shim.record import recording_app, verify
from shim.record.cases import find_cases, load_case
from shim.record.scrub import SIGN_LIKE, Scrubber, table
from shim.record.settings import STORE_ID
from shim.sandbox import SandboxServer
from shim.serving import LocalServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PRODUCT = "/v1/products/100150"
LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
PHONE = "+65 9123 4567"


class Recording:
    """What the module's one recording session left behind."""

    def __init__(self, directory, recorder, legacy_tokens, personal):
        self.directory = directory
        self.recorder = recorder
        self.legacy_tokens = legacy_tokens
        self.personal = personal

    def case(self, route: str, status: int) -> dict:
        """Return the one recorded case of ``route`` that answered ``status``."""
        found = [load_case(path) for path in find_cases(self.directory, [route])
                 if load_case(path)["expect"]["status"] == status]
        assert len(found) == 1, (route, status, found)
        return found[0]


@pytest.fixture(scope="module")
def recording(legacy_client, make_settings, sandbox_config, tmp_path_factory) -> Recording:
    """Record a session of legacy calls through the shim to a sandbox that lacks the
    single-location API (so the shim learns to page), with faults and three clients."""
    out = tmp_path_factory.mktemp("recorded")
    config = sandbox_config(single_location_api=False)
    with SandboxServer(config) as sandbox:
        catalog = sandbox.state.catalog(STORE_ID)
        order_ids = {shipment["orderId"] for job in catalog.jobs for item in job["items"]
                     for shipment in item.get("shipmentsInfo", [])}
        seller = config.sellers[0]
        message = f"write to {seller.account} or call {PHONE}"
        settings = make_settings(sandbox.api_url)
        app, recorder = recording_app(settings, out, report=lambda line: None)
        with LocalServer(app) as shim, requests.Session() as control:
            legacy = legacy_client(shim.base_url)
            calls = [
                legacy.get("/v1/pickup-locations"),
                legacy.get("/v1/pickup-locations/23790"),  # learns: no single-location API
                legacy.get("/v1/pickup-locations/23791"),  # pages at once
                legacy.get(PRODUCT, client_id="other"),  # store 415
                legacy.get("/v1/products/abc"),  # 400, no platform call
                legacy.session.get(shim.base_url + PRODUCT, timeout=10),  # 401: skipped
                legacy.get(LOT),
                legacy.patch(LOT, headers={**MERGE_PATCH, "If-Match": '"10"'},
                             json={"quantityAtPickupLocation": 20}),
                legacy.patch(LOT, client_id="reader", json={"quantityAtPickupLocation": 5},
                             headers={**MERGE_PATCH, "If-Match": '"20"'}),  # 403
                legacy.get("/v1/pickup-jobs", params={
                    "from": str(int(time.time() * 1000) - 30 * 86_400_000)}),
            ]
            for fault in ({"api": "/rss/product/get", "kind": "SYSTEM_ERROR",
                           "message": message},
                          {"api": "/rss/product/get", "kind": "reset"}):
                control.post(sandbox.base_url + "/_sandbox/faults", json=fault,
                             timeout=5).raise_for_status()
                calls.append(legacy.get(PRODUCT))
            tokens = [legacy.token(client) for client in ("full", "reader", "other")]
            for answer in calls:
                answer.close()
            legacy.close()
        app.extensions["shim"].upstream.close()
    assert [answer.status_code for answer in calls] == [200, 200, 200, 200, 400, 401, 200,
                                                        200, 403, 200, 503, 503]
    personal = [seller.account, seller.seller_id, PHONE, *order_ids,
                *(account.account for account in config.sellers)]
    return Recording(out, recorder, tokens, personal)


def test_each_served_call_becomes_a_case_except_those_that_cannot_replay(recording):
    """Calls are filed by route; unauthenticated calls and broken exchanges are skipped."""
    recorded = sorted(path.parent.parent.name for path in find_cases(recording.directory))
    assert recorded == sorted([
        "pickup-locations-list", "pickup-locations-get", "pickup-locations-get",
        "products-get", "products-get", "stock-lot-get", "stock-lot-patch", "stock-lot-patch",
        "pickup-jobs-list", "products-get"])
    assert [reason for _, reason in recording.recorder.skipped] == [
        "not authenticated (every case is replayed with a valid token)",
        "a platform call got no complete answer (refused, reset or cut off)"]


def test_recorded_cases_hold_no_secret_and_no_personal_value(recording, test_secrets):
    """No test secret, bearer token, signature, system parameter or sandbox personal value
    (account e-mail, seller id, phone, order ids) is written; every store becomes 414."""
    forbidden = [*test_secrets.all(), *recording.legacy_tokens, *recording.personal]
    files = [path for path in recording.directory.rglob("*") if path.is_file()]
    assert len(files) == 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert [value for value in forbidden if value in text] == [], path
        assert not SIGN_LIKE.search(text), path
        case = load_case(path)
        assert "access_token" not in case["request"]["query"]
        for exchange in case["upstream"]:
            assert exchange["params"]["storeId"] == STORE_ID
            assert not {"app_key", "timestamp", "sign_method", "sign", "access_token",
                        "partner_id"} & set(exchange["params"])


def test_placeholders_are_stable_so_relations_survive(recording):
    """An order id gets the same placeholder in the platform's answer and the shim's; an
    e-mail and a phone number inside an error message are replaced too."""
    case = recording.case("pickup-jobs-list", 200)

    def order_ids(jobs):
        return [shipment["orderId"] for job in jobs for item in job["items"]
                for shipment in item.get("shipmentsInfo", [])]

    sent = order_ids(case["upstream"][0]["response"]["json"]["result"]["data"])
    answered = order_ids(case["expect"]["json"])
    assert sent and sorted(sent) == sorted(answered)
    assert all(re.fullmatch(r"order-\d+", order) for order in sent)
    failure = recording.case("products-get", 503)["upstream"][0]["response"]["json"]
    assert failure["message"] == "write to email-1@example.invalid or call +0000000001"


def test_a_case_keeps_the_callers_scope_and_the_shims_learnt_state(recording):
    """The reader's 403 keeps its scope; the second location lookup carries the platform's
    earlier InvalidApiPath, since a fresh shim asks the single-location API first."""
    forbidden = recording.case("stock-lot-patch", 403)
    assert forbidden["request"]["scope"] == (
        "read:pickup-location read:product read:stock-lot read:pickup-job")
    assert forbidden["tags"] == ["forbidden"] and forbidden["upstream"] == []
    lookups = [load_case(path) for path in find_cases(recording.directory,
                                                      ["pickup-locations-get"])]
    assert [[(e["api"], e["response"]["json"].get("code")) for e in case["upstream"]]
            for case in lookups] == [
        [("/rss/pickupLocation/get", "InvalidApiPath"), ("/rss/pickupLocations/get", "0")],
    ] * 2
    assert all(isinstance(case["now_ms"], int) for case in lookups)


def test_verify_passes_every_recorded_case(recording):
    """Replayed against the current code, the recording passes as a whole."""
    results = verify(recording.directory)
    assert len(results) == 10
    assert [str(d) for result in results for d in result.differences] == []


def test_verify_reports_exactly_the_field_that_changed(recording, tmp_path):
    """One changed expected value fails one case, at that field; volatile headers are not
    compared."""
    copy = shutil.copytree(recording.directory, tmp_path / "copy")
    paths = [path for path in find_cases(copy, ["products-get"])
             if load_case(path)["expect"]["status"] == 200]
    changed, volatile = paths[0], find_cases(copy, ["stock-lot-get"])[0]
    case = load_case(changed)
    case["expect"]["json"]["title"] = "Vanilla Cereals"
    changed.write_text(json.dumps(case), encoding="utf-8")
    case = load_case(volatile)
    case["expect"]["headers"].update({"x-request-id": "abc", "x-ratelimit-remaining-second": "7"})
    volatile.write_text(json.dumps(case), encoding="utf-8")
    failed = [result for result in verify(copy) if not result.passed]
    assert [(result.case, [d.to_dict() for d in result.differences]) for result in failed] == [
        (f"products-get/{changed.parent.name}",
         [{"where": "json $.title", "expected": "Vanilla Cereals",
           "actual": "Chocolate Cereals"}])]


def test_verify_reports_platform_calls_by_parameter(recording, tmp_path):
    """A recorded call the shim makes differently is reported parameter by parameter."""
    copy = shutil.copytree(recording.directory, tmp_path / "copy")
    path = find_cases(copy, ["stock-lot-get"])[0]
    case = load_case(path)
    case["upstream"][0]["params"]["productId"] = "100151"
    path.write_text(json.dumps(case), encoding="utf-8")
    (result,) = verify(copy, only=["stock-lot-get"])
    assert result.differences[-1].to_dict() == {
        "where": "upstream[0].params.productId", "expected": "100151", "actual": "100150"}
    assert "status" in [difference.where for difference in result.differences]


def test_verify_passes_every_committed_fixture():
    """verify is a second runner over the contract: the committed corpus passes it whole."""
    results = verify(FIXTURES)
    assert len(results) == len(list(FIXTURES.glob("*/*/case.json"))) > 90
    assert {result.case: [str(d) for d in result.differences]
            for result in results if not result.passed} == {}


def test_a_token_refresh_during_a_call_is_skipped_and_never_written(
        legacy_client, db_settings, db_store, sandbox, tmp_path, test_secrets):
    """In database mode the refresh-and-replay of a refused token is not recordable; the next
    call is, without the new tokens."""
    app, recorder = recording_app(db_settings, tmp_path, store=db_store,
                                  report=lambda line: None)
    with LocalServer(app) as shim:
        legacy = legacy_client(shim.base_url)
        requests.post(sandbox.base_url + "/_sandbox/expire", json={"store_id": STORE_ID},
                      timeout=5).raise_for_status()
        statuses = [legacy.get(PRODUCT).status_code, legacy.get(PRODUCT).status_code]
        legacy.close()
    app.extensions["shim"].upstream.close()
    assert statuses == [200, 200]
    assert [reason for _, reason in recorder.skipped] == [
        "the shim refreshed a seller token while serving it"]
    seller = db_store.get_seller("main")
    assert seller.access_token != test_secrets.access_token  # refreshed
    (path,) = find_cases(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert seller.access_token not in text and seller.refresh_token not in text


def test_a_token_sent_in_a_multipart_body_is_never_written(
        legacy_client, settings, sandbox, tmp_path):
    """Kong (and the shim) take access_token from a multipart form too: the token the shim
    authenticated with is a secret of the case, whichever way it came."""
    app, recorder = recording_app(settings, tmp_path, report=lambda line: None)
    with LocalServer(app) as shim:
        legacy = legacy_client(shim.base_url)
        token = legacy.token()
        answers = [requests.request(method, shim.base_url + path, timeout=10,
                                    files={"access_token": (None, token)})
                   for method, path in (("POST", "/v1/products"), ("PATCH", LOT))]
        legacy.close()
    app.extensions["shim"].upstream.close()
    assert [answer.status_code for answer in answers] == [405, 400]  # authenticated
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or token not in path.read_text(encoding="utf-8"), path
    assert [reason for _, reason in recorder.skipped] == [
        "a multipart body (a case keeps a text body only)"] * 2


# --- the scrub rules ----------------------------------------------------------------------------


def test_name_rules_replace_identities_and_keep_business_data():
    """Secrets, accounts, seller ids, orders and phones by member name; storeId becomes 414
    with its type; ids, SKUs and barcodes stay."""
    scrubber = Scrubber()
    document = {"storeId": 50525, "store": {"storeId": "50525"}, "refresh_token": "r" * 40,
                "account": "a@b.sg", "country_user_info": [{"seller_id": "1152180742",
                                                            "user_id": 1152180742,
                                                            "short_code": "SGLYT0OS"}],
                "shipmentsInfo": [{"orderId": "49e74qjnkprp1to4", "qty": 5}],
                "contactNumber": "91234567", "sku": "19739731408",
                "barcodes": ["111122223333"], "id": 123}
    assert scrubber.json(document) == {
        "storeId": 414, "store": {"storeId": "414"}, "refresh_token": "secret-1",
        "account": "account-1", "country_user_info": [{"seller_id": "seller-1",
                                                       "user_id": "seller-1",
                                                       "short_code": "seller-2"}],
        "shipmentsInfo": [{"orderId": "order-1", "qty": 5}],
        "contactNumber": "+0000000001", "sku": "19739731408",
        "barcodes": ["111122223333"], "id": 123}


def test_text_rules_find_secrets_and_contacts_anywhere():
    """Token, code and signature shapes, e-mails and +phones are replaced inside any text,
    the same value always by the same placeholder; known secrets too, and leaks sees them."""
    scrubber = Scrubber()
    scrubber.add_secrets(["my-app-secret-value", "short"])
    token = "50000201f12dgccvfLzTimgL1c1c4dd8h0irs9DWCORDQqXRlsvWgpDt5x4Fwy"
    sign = "4190D32361CFB9581350222F345CB77F3B19F0E31D162316848A2C1FFD5FAB4A"
    text = (f"token {token} code 0_100001_abcdefghijklmnopqrstuv sign {sign} key "
            "my-app-secret-value mail ops@seller.com.sg again ops@seller.com.sg "
            "tel +65 6123-4567 sku 19739731408 short")
    assert scrubber.text(text) == (
        "token secret-2 code secret-3 sign secret-4 key secret-1 mail email-1@example.invalid "
        "again email-1@example.invalid tel +0000000001 sku 19739731408 short")
    assert scrubber.leaks("xx my-app-secret-value") == ["a known secret"]
    assert scrubber.leaks(sign.lower()) == ["64 hex digits (a signature or digest)"]
    assert scrubber.leaks("short and sweet") == []


def test_a_body_that_is_not_json_keeps_its_text_with_members_scrubbed():
    """A cut-off answer still loses the values of members the rules name."""
    cut = '{"result": {"data": [{"orderId": "49e74qjnkprp1to4", "storeId": 50525, "qty'
    assert Scrubber().body_text(cut) == (
        '{"result": {"data": [{"orderId": "order-1", "storeId": 414, "qty')


def test_pickup_location_addresses_are_kept_unless_asked():
    """A pickup location's address is business data; --scrub-addresses replaces it, and only
    in objects that are locations."""
    location = {"id": "23789", "name": "ABC Merchant", "addressLine1": "1 Main Street",
                "addressLine2": "#02-15", "city": "Singapore", "postalCode": "123456"}
    item = {"name": "Salmon", "sku": "19739731408"}
    assert Scrubber().json([location, item]) == [location, item]
    assert Scrubber(scrub_addresses=True).json([location, item]) == [
        {**location, "name": "address-1", "addressLine1": "address-2",
         "addressLine2": "address-3", "postalCode": "address-4"}, item]


def test_the_readme_shows_the_rule_table_of_the_code():
    """fixtures/README.md carries scrub.RULES verbatim: one table, two places."""
    assert table() in (FIXTURES / "README.md").read_text(encoding="utf-8")


# --- the command line ---------------------------------------------------------------------------


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shim", *args], capture_output=True,
                          text=True, timeout=120, env=env, preexec_fn=default_sigint)


def test_verify_command_exits_1_with_the_differences_and_0_when_all_pass(tmp_path):
    """``redmart-shim verify``: JSON or text report, --only, exit status 1 or 0."""
    for case in ("products-get/docs-example", "stock-lot-get/docs-example"):
        shutil.copytree(FIXTURES / case, tmp_path / case)
    path = tmp_path / "stock-lot-get/docs-example/case.json"
    case = load_case(path)
    case["expect"]["headers"]["etag"] = '"11"'
    path.write_text(json.dumps(case), encoding="utf-8")
    failing = run_cli("verify", str(tmp_path), "--json")
    assert failing.returncode == 1, failing.stderr
    assert json.loads(failing.stdout) == {"passed": 1, "failed": 1, "cases": [
        {"case": "products-get/docs-example", "passed": True, "differences": []},
        {"case": "stock-lot-get/docs-example", "passed": False, "differences": [
            {"where": "header etag", "expected": '"11"', "actual": '"10"'}]}]}
    passing = run_cli("verify", str(tmp_path), "--only", "products-get/docs-example")
    assert (passing.returncode, passing.stdout) == (
        0, "PASS products-get/docs-example\n1 case(s): 1 passed, 0 failed\n")


def test_record_command_serves_records_and_stops_on_ctrl_c(legacy_client, sandbox, test_secrets,
                                                           client_digest, tmp_path, processes):
    """``redmart-shim record``: config from TOML and the environment, one case per call,
    a summary on Ctrl-C, exit 0."""
    config = tmp_path / "shim.toml"
    config.write_text(f"""
[upstream]
app_key = "100001"
app_secret = {{ env = "REC_APP_SECRET" }}
api_url = "{sandbox.api_url}"
auth_url = "{sandbox.auth_url}"

[[sellers]]
name = "main"
store_id = "{STORE_ID}"
access_token = {{ env = "REC_ACCESS_TOKEN" }}

[[clients]]
client_id = "full"
client_secret_digest = "{client_digest}"
seller = "main"
""", encoding="utf-8")
    env = {**os.environ, "REC_APP_SECRET": test_secrets.app_secret,
           "REC_ACCESS_TOKEN": test_secrets.access_token, "SHIM_LOG_LEVEL": "WARNING"}
    out = tmp_path / "out"
    process = processes.start(
        [sys.executable, "-m", "shim", "record", "--config", str(config), "--out", str(out),
         "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    # A daemon: a reader still blocked when the test fails must not hold the run open.
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],
                              daemon=True)
    reader.start()

    def wait_for(prefix: str) -> str:
        while True:
            line = lines.get(timeout=30)
            if line.startswith(prefix):
                return line

    try:
        base = re.search(r"http://127\.0\.0\.1:\d+", wait_for("redmart-shim recording")).group(0)
        legacy = legacy_client(base)
        assert legacy.get(PRODUCT).status_code == 200
        legacy.close()
        assert wait_for("recorded ").startswith("recorded products-get/0001-get-200")
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C; the fixture kills it if it stays
    status = process.wait(timeout=30)
    reader.join(timeout=30)
    assert status == 0
    assert wait_for("recorded 1 case(s)")
    (path,) = find_cases(out)
    assert load_case(path)["expect"]["json"]["title"] == "Chocolate Cereals"
    assert test_secrets.access_token not in path.read_text(encoding="utf-8")
