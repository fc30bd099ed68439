"""Stock lots over real HTTP: reads, ETags, and the PATCH with its If-Match, 409 and races."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from legacy_docs import DOC_STOCK_LOT

LOTS = "/v1/products/100150/pickup-locations/23789/stock-lots"
LOT = LOTS + "/0"
NOT_FOUND = {"title": "The requested resource could not be found"}
PRECONDITION = {"title": "the If-Match condition evaluated to false"}
CONFLICT = {"title": "the request conflicted with the current state of the resource"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
LOCK_TIMEOUT_S = 1.0
BAD_IDS = ["abc", "%D9%A3", "99999999999999999999", "1%26storeId%3D415", "1%00", "1%0D%0A",
           "3limit5", "-1", "+1", "%201", "1.0"]


@pytest.fixture(scope="module")
def stack(make_stack):
    """One stack for the module (client-secret checks are slow); ``reset`` cleans up per test."""
    # Tests here race PATCHes of one lot through its lock: all of them may queue (the
    # queue's bound, lot_queue, is tested in test_admission.py).
    running = make_stack(rate_limit_per_second=10_000, lock_timeout_s=LOCK_TIMEOUT_S,
                         lot_queue=16)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def reset(stack):
    """Give every test the documented lot (10 at the location, 2 scheduled) and a calm sandbox."""
    restore(stack)


def restore(stack) -> None:
    stack.control("DELETE", "/faults")
    stack.control("POST", "/latency", {"ms": 0})
    stack.control("POST", "/variance", {"enabled": False})
    stack.control("POST", "/stock", {"storeId": 414, "productId": 100150,
                                     "pickupLocationId": 23789, "quantityAtPickupLocation": 10,
                                     "quantityScheduledForPickup": 2})


@pytest.fixture
def legacy(stack):
    return stack.legacy


@pytest.fixture
def sent(stack):
    """Return a function listing the platform calls made since the test began."""
    start = len(stack.ledger())
    return lambda: stack.ledger(start)


def apis(entries) -> list[str]:
    return [entry["api"] for entry in entries]


def patch(legacy, body, *, if_match: str | None = '"10"', content_type=MERGE_PATCH["Content-Type"],
          path: str = LOT) -> requests.Response:
    """Send a PATCH with a raw text body (so malformed JSON can be sent too)."""
    headers = {}
    if if_match is not None:
        headers["If-Match"] = if_match
    if content_type is not None:
        headers["Content-Type"] = content_type
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return legacy.patch(path, data=data, headers=headers)


# Reads


def test_the_list_is_a_bare_array_of_the_docs_lot(legacy, sent):
    answer = legacy.get(LOTS)
    assert answer.status_code == 200
    assert answer.json() == [DOC_STOCK_LOT]
    assert list(answer.json()[0]) == list(DOC_STOCK_LOT)
    assert [entry["params"] for entry in sent()] == [
        {"storeId": "414", "productId": "100150", "pickupLocationId": "23789"}]


def test_a_product_not_stocked_at_a_location_has_no_lots(legacy):
    answer = legacy.get("/v1/products/100150/pickup-locations/23790/stock-lots")
    assert (answer.status_code, answer.json()) == (200, [])


def test_lot_0_carries_its_quantity_as_etag(legacy, sent):
    answer = legacy.get(LOT)
    assert answer.status_code == 200
    assert answer.json() == DOC_STOCK_LOT
    assert answer.headers["etag"] == '"10"'
    assert sent()[0]["params"]["stockLotId"] == "0"


@pytest.mark.parametrize("path", [
    LOTS, LOT,
    "/v1/products/999/pickup-locations/23789/stock-lots",
    "/v1/products/100150/pickup-locations/999/stock-lots/0",
    "/v1/products/100150/pickup-locations/23790/stock-lots/0",
])
def test_unknown_products_locations_and_lots_are_404(legacy, path):
    answer = legacy.get(path)
    if path in (LOTS, LOT):
        assert answer.status_code == 200  # the known lot, as a control
        return
    assert (answer.status_code, answer.json()) == (404, NOT_FOUND)


@pytest.mark.parametrize("lot_id", ["1", "00", "abc", "%D9%A0", "0%00", "0%0D%0A", "-0", " 0"])
@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_a_lot_other_than_0_is_404_and_never_sent(legacy, sent, method, lot_id):
    answer = legacy.request(method, LOTS + "/" + lot_id.replace(" ", "%20"),
                            headers={"If-Match": '"10"', **MERGE_PATCH},
                            data='{"quantityAtPickupLocation": 5}')
    assert (answer.status_code, answer.json()) == (404, NOT_FOUND)
    assert sent() == []


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("where", ["product", "location"])
@pytest.mark.parametrize("method", ["GET list", "GET", "PATCH"])
def test_bad_path_ids_are_400_and_never_sent(legacy, sent, method, where, bad):
    product, location = (bad, "23789") if where == "product" else ("100150", bad)
    path = f"/v1/products/{product}/pickup-locations/{location}/stock-lots"
    if method != "GET list":
        path += "/0"
    answer = legacy.request(method.split()[0], path, headers={"If-Match": '"10"', **MERGE_PATCH},
                            data='{"quantityAtPickupLocation": 5}')
    assert answer.status_code == 400
    assert answer.json()["title"] == "Bad Request"
    assert sent() == []


# PATCH: success


@pytest.mark.parametrize("content_type", [
    "application/merge-patch+json", "application/json", "application/json; charset=utf-8",
    "application/merge-patch+json;charset=UTF-8", "Application/JSON",
])
def test_patch_sets_the_quantity_and_returns_the_new_lot_and_etag(stack, legacy, sent,
                                                                   content_type):
    answer = patch(legacy, {"quantityAtPickupLocation": 20}, content_type=content_type)
    assert answer.status_code == 200
    assert answer.json() == {"id": "0", "quantityAtPickupLocation": 20,
                             "quantityScheduledForPickup": 2, "quantityAvailableForSale": 18}
    assert answer.headers["etag"] == '"20"'
    assert stack.lot()["quantityAtPickupLocation"] == 20
    read, update = sent()
    assert (read["api"], update["api"]) == ("/rss/stockLot/get", "/rss/stockLot/update")
    assert update["method"] == "POST"
    assert update["params"] == {"storeId": "414", "productId": "100150",
                                "pickupLocationId": "23789", "stockLotId": "0",
                                "stockLotUpdateDTO": '{"quantityAtPickupLocation":20}'}
    assert legacy.get(LOT).headers["etag"] == '"20"'


@pytest.mark.parametrize(("quantity", "sent_as"), [
    ("20", 20), (2, 2), ("2147483647", 2147483647), (0, None), ("002", 2),
])
def test_quantity_as_number_or_numeric_string(stack, legacy, sent, quantity, sent_as):
    if sent_as is None:  # 0 is valid input; with nothing scheduled the platform takes it
        stack.control("POST", "/stock", {"storeId": 414, "productId": 100150,
                                         "pickupLocationId": 23789,
                                         "quantityScheduledForPickup": 0})
        sent_as = 0
    answer = patch(legacy, {"quantityAtPickupLocation": quantity})
    assert answer.status_code == 200, answer.text
    assert answer.json()["quantityAtPickupLocation"] == sent_as
    assert json.loads(sent()[-1]["params"]["stockLotUpdateDTO"]) == {
        "quantityAtPickupLocation": sent_as}


@pytest.mark.parametrize(("if_match", "status"), [
    ('"10"', 200), ("*", 200), ('"9", "10"', 200), ('"9"', 412), ('W/"10"', 412),
    ('"10 "', 400), ('"010"', 412), ("", 412),
])
def test_if_match(legacy, sent, if_match, status):
    answer = patch(legacy, {"quantityAtPickupLocation": 30}, if_match=if_match)
    assert answer.status_code == status
    if status == 412:
        assert answer.json() == PRECONDITION
        assert apis(sent()) == ["/rss/stockLot/get"]  # read, compared, never written
    elif status == 400:  # not an entity tag at all: refused before anything is signed
        assert apis(sent()) == []
    else:
        assert apis(sent()) == ["/rss/stockLot/get", "/rss/stockLot/update"]


def test_an_etag_goes_stale_when_stock_changes_outside(stack, legacy):
    etag = legacy.get(LOT).headers["etag"]
    stack.control("POST", "/stock", {"storeId": 414, "productId": 100150,
                                     "pickupLocationId": 23789, "quantityAtPickupLocation": 11})
    answer = patch(legacy, {"quantityAtPickupLocation": 30}, if_match=etag)
    assert (answer.status_code, answer.json()) == (412, PRECONDITION)
    assert stack.lot()["quantityAtPickupLocation"] == 11


def test_the_docs_read_then_patch_sequence(legacy):
    etag = legacy.get(LOT).headers["etag"]
    first = patch(legacy, {"quantityAtPickupLocation": "20"}, if_match=etag)
    assert first.status_code == 200
    again = patch(legacy, {"quantityAtPickupLocation": 25}, if_match=etag)
    assert (again.status_code, again.json()) == (412, PRECONDITION)
    last = patch(legacy, {"quantityAtPickupLocation": 25}, if_match=first.headers["etag"])
    assert last.json()["quantityAvailableForSale"] == 23


def test_stores_are_separate(stack, legacy):
    assert patch(legacy, {"quantityAtPickupLocation": 40}).status_code == 200
    assert stack.lot(store_id="415")["quantityAtPickupLocation"] == 10
    assert legacy.get(LOT, client_id="other").json() == DOC_STOCK_LOT


# PATCH: refusals


def test_if_match_is_required(legacy, sent):
    answer = patch(legacy, {"quantityAtPickupLocation": 20}, if_match=None)
    assert answer.status_code == 400
    assert "If-Match" in answer.json()["detail"]
    assert sent() == []


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/json-patch+json", "application/octet-stream", None,
])
def test_other_content_types_are_415(legacy, sent, content_type):
    answer = patch(legacy, {"quantityAtPickupLocation": 20}, content_type=content_type)
    assert answer.status_code == 415
    assert answer.json()["title"] == "Unsupported Media Type"
    assert sent() == []


@pytest.mark.parametrize("body", [
    '{"quantityAtPickupLocation": 5.5}', '{"quantityAtPickupLocation": "5.5"}',
    '{"quantityAtPickupLocation": "\u0663"}', '{"quantityAtPickupLocation": "\\u0663"}',
    '{"quantityAtPickupLocation": NaN}', '{"quantityAtPickupLocation": Infinity}',
    '{"quantityAtPickupLocation": -Infinity}', '{"quantityAtPickupLocation": true}',
    '{"quantityAtPickupLocation": null}', '{"quantityAtPickupLocation": -1}',
    '{"quantityAtPickupLocation": "-1"}', '{"quantityAtPickupLocation": 2147483648}',
    '{"quantityAtPickupLocation": "2147483648"}', '{"quantityAtPickupLocation": {}}',
    '{"quantityAtPickupLocation": []}', '{"quantityAtPickupLocation": ""}',
    '{"quantityAtPickupLocation": " 5"}', '{"quantityAtPickupLocation": "+5"}',
    '{"quantityAtPickupLocation": 1e2}', '{"quantityAtPickupLocation": 20.0}',
    '{"quantityAtPickupLocation": "0x10"}', '{"quantityAtPickupLocation": 1' + "0" * 5000 + "}",
])
def test_bad_quantities_are_400(legacy, sent, body):
    answer = patch(legacy, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["title"] == "Bad Request"
    assert sent() == []


@pytest.mark.parametrize("body", [
    '{"quantityAtPickupLocation": 5, "quantityScheduledForPickup": 1}',  # unknown member
    '{"quantityAtPickupLocation": 5, "quantityAtPickupLocation": 6}',  # duplicate member
    '{"quantityAtPickupLocation": 5, "quantityAtPickupLocation": 5}',
    "{}", '{"quantity": 5}', "[]", "null", "5", '"5"', "", " ", "{",
    '{"quantityAtPickupLocation": 5',
    "{'quantityAtPickupLocation': 5}", '{"quantityAtPickupLocation": 5}x', b"\xff\xfe{",
    '{"quantityAtPickupLocation": 5,}', "[" * 5000, '{"a":' * 3000, "[" * 15000 + "]" * 1000,
    '{"a":' * 1000 + "1" + "}" * 1000,
])
def test_malformed_bodies_are_400_never_500(legacy, sent, body):
    answer = patch(legacy, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["title"] == "Bad Request"
    assert sent() == []


def test_a_body_over_the_limit_is_413(legacy, sent):
    body = '{"quantityAtPickupLocation": 5' + " " * (16 * 1024) + "}"
    answer = patch(legacy, body)
    assert answer.status_code == 413
    assert answer.json()["title"] == "Payload Too Large"
    assert sent() == []


@pytest.mark.parametrize(("padding", "status"), [(10, 200), (16 * 1024, 413)])
def test_a_chunked_body_is_held_to_the_limit_too(stack, legacy, padding, status):
    # Without a Content-Length the body is cut at the limit: a valid prefix must not pass.
    def chunks():
        yield b'{"quantityAtPickupLocation": 20}'
        yield b" " * padding

    answer = legacy.patch(LOT, data=chunks(), headers={"If-Match": '"10"', **MERGE_PATCH})
    assert answer.request.headers["Transfer-Encoding"] == "chunked"
    assert answer.status_code == status
    assert stack.lot()["quantityAtPickupLocation"] == (20 if status == 200 else 10)


def test_below_scheduled_is_409_and_never_written(stack, legacy, sent):
    answer = patch(legacy, {"quantityAtPickupLocation": 1})
    assert (answer.status_code, answer.json()) == (409, CONFLICT)
    assert apis(sent()) == ["/rss/stockLot/get"]
    assert stack.lot()["quantityAtPickupLocation"] == 10
    assert patch(legacy, {"quantityAtPickupLocation": 2}).status_code == 200  # equal is fine


def test_a_stale_etag_wins_over_the_409(legacy):
    answer = patch(legacy, {"quantityAtPickupLocation": 1}, if_match='"9"')
    assert (answer.status_code, answer.json()) == (412, PRECONDITION)


def test_scheduled_rising_between_read_and_write_is_409(stack, legacy, sent):
    # The warehouse books pickups while the update is on its way: the platform refuses it.
    stack.control("POST", "/faults", {"api": "/rss/stockLot/update", "kind": "latency",
                                      "latency_ms": 400})
    answers = []
    worker = threading.Thread(
        target=lambda: answers.append(patch(legacy, {"quantityAtPickupLocation": 5})))
    worker.start()
    while "/rss/stockLot/get" not in apis(sent()) and worker.is_alive():
        threading.Event().wait(0.01)
    stack.control("POST", "/stock", {"storeId": 414, "productId": 100150,
                                     "pickupLocationId": 23789,
                                     "quantityScheduledForPickup": 8})
    worker.join()
    assert (answers[0].status_code, answers[0].json()) == (409, CONFLICT)
    assert stack.lot()["quantityAtPickupLocation"] == 10


# PATCH: concurrency and lost answers


def test_concurrent_patches_with_one_etag_apply_exactly_once(stack, legacy, sent):
    stack.control("POST", "/latency", {"ms": 20})  # widen the read-to-write window
    legacy.token()  # fetch the token before the threads race for it
    start = threading.Barrier(8)
    answers: dict[int, requests.Response] = {}

    def send(quantity: int) -> None:
        start.wait()
        answers[quantity] = patch(legacy, {"quantityAtPickupLocation": quantity})

    threads = [threading.Thread(target=send, args=(11 + n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses == [200] + [412] * 7
    [winner] = [q for q, answer in answers.items() if answer.status_code == 200]
    assert all(answer.json() == PRECONDITION
               for answer in answers.values() if answer.status_code == 412)
    updates = [entry for entry in sent() if entry["api"] == "/rss/stockLot/update"]
    assert len(updates) == 1
    assert updates[0]["applied"] is True
    assert stack.lot()["quantityAtPickupLocation"] == winner


def test_a_lot_locked_too_long_is_503(stack, legacy, sent):
    stack.control("POST", "/faults", {"api": "/rss/stockLot/update", "kind": "latency",
                                      "latency_ms": int(LOCK_TIMEOUT_S * 1000) + 500})
    legacy.token()
    slow: list[requests.Response] = []
    first = threading.Thread(
        target=lambda: slow.append(patch(legacy, {"quantityAtPickupLocation": 20})))
    first.start()
    # Its read is in the ledger: the first PATCH holds the lock and is writing, slowly.
    while "/rss/stockLot/get" not in apis(sent()) and first.is_alive():
        threading.Event().wait(0.01)
    waiting = patch(legacy, {"quantityAtPickupLocation": 30})
    first.join()
    assert slow[0].status_code == 200
    assert waiting.status_code == 503
    assert waiting.headers["retry-after"] == "1"


@pytest.mark.parametrize(("fault", "written"), [("lost_response", True), ("reset", False),
                                                ("truncated", True), ("http502", False)])
def test_an_update_without_a_usable_answer_is_settled_by_a_re_read(stack, legacy, sent, fault,
                                                                   written):
    """The re-read shows the write landed (200), or it did not and is sent once more (200):
    exactly one applied update either way, and never a second one the client did not ask."""
    stack.control("POST", "/faults", {"api": "/rss/stockLot/update", "kind": fault})
    answer = patch(legacy, {"quantityAtPickupLocation": 20})
    assert answer.status_code == 200
    assert answer.headers["etag"] == '"20"'
    assert stack.lot()["quantityAtPickupLocation"] == 20
    calls = apis(sent())
    assert calls.count("/rss/stockLot/update") == (1 if written else 2)
    assert calls.count("/rss/stockLot/get") == 2  # the read, then the re-read


def test_an_update_whose_outcome_cannot_be_learned_is_503_outcome_unknown(stack, legacy):
    stack.control("POST", "/faults", {"api": "/rss/stockLot/update", "kind": "lost_response"})
    stack.control("POST", "/faults", {"api": "/rss/stockLot/get", "kind": "reset", "skip": 1})
    answer = patch(legacy, {"quantityAtPickupLocation": 20})
    assert answer.status_code == 503
    body = answer.json()
    assert body["title"] == "Service Unavailable"
    assert "may or may not have been applied" in body["detail"]
    assert "etag" not in answer.headers


def test_a_read_failure_before_the_write_is_a_plain_503(stack, legacy, sent):
    stack.control("POST", "/faults", {"api": "/rss/stockLot/get", "kind": "reset"})
    answer = patch(legacy, {"quantityAtPickupLocation": 20})
    assert answer.status_code == 503
    assert "detail" not in answer.json()  # nothing was written, so nothing is uncertain
    assert "/rss/stockLot/update" not in apis(sent())


# Upstream type variance


def test_variance_mode_gives_byte_identical_answers(stack, legacy):
    def run() -> list[tuple]:
        answers = [legacy.get(LOTS), legacy.get(LOT),
                   legacy.get("/v1/products/100150/pickup-locations/23790/stock-lots"),
                   legacy.get("/v1/products/100150/pickup-locations/999/stock-lots/0"),
                   patch(legacy, {"quantityAtPickupLocation": 20}),
                   patch(legacy, {"quantityAtPickupLocation": 1}, if_match='"20"')]
        return [(a.status_code, a.headers.get("etag"), a.content) for a in answers]

    normal = run()
    restore(stack)
    stack.control("POST", "/variance", {"enabled": True})
    assert run() == normal
