"""GET /v1/pickup-jobs[/{id}] over real HTTP: range rules, status filter, the documented job."""

from __future__ import annotations

import time

import pytest
import requests
from legacy_docs import DOC_JOB

from shim.record.settings import STORE_ID

DAY_MS = 86_400_000
NOT_FOUND = {"title": "Could not find store or pickup job"}
BAD_INTEGERS = ["abc", "1.5", "\u0663", "+1", " 1", "", "1e2", "-1", "0x10",
                "99999999999999999999"]


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def stack(make_stack):
    """Pickup jobs are read-only: one sandbox and one shim serve the module (scrypt is slow)."""
    # The legacy list limit is 1 call per second; these tests need many.
    running = make_stack(rate_limit_per_second=10_000, pickup_jobs_rate_limit_per_second=10_000)
    yield running
    running.close()


@pytest.fixture(scope="module")
def sandbox(stack):
    return stack.sandbox


@pytest.fixture(scope="module")
def legacy(stack):
    return stack.legacy


@pytest.fixture
def sent(stack):
    """Return a function listing the params of platform calls made since the test began."""
    start = len(stack.ledger())
    return lambda: [(entry["api"], entry["params"]) for entry in stack.ledger(start)]


@pytest.fixture
def seeded(sandbox):
    """Return the sandbox's pickup jobs of the test store, as it stores them."""
    return sandbox.state.catalog(STORE_ID).jobs


def jobs(legacy, **query) -> requests.Response:
    return legacy.get("/v1/pickup-jobs", params=query)


# The list


def test_jobs_in_range_come_back_whole(legacy, sent, seeded):
    start = now_ms() - 20 * DAY_MS
    end = start + 31 * DAY_MS
    answer = jobs(legacy, **{"from": start, "till": end})
    assert answer.status_code == 200
    expected = [job for job in seeded if start <= job["scheduledAt"] <= end]
    assert expected
    # Whole objects: optional members the platform left out stay out (no nulls).
    assert answer.json() == expected
    assert sent() == [("/rss/pickup-jobs/get",
                       {"storeId": "414", "from": str(start), "till": str(end)})]


def test_member_types_and_order(legacy):
    start = now_ms() - 30 * DAY_MS
    listed = jobs(legacy, **{"from": start}).json()
    assert listed
    for job in listed:
        assert list(job)[:7] == ["id", "status", "category", "scheduledAt", "qtyCount",
                                 "qtyFulfilledCount", "items"]
        assert type(job["id"]) is int and type(job["scheduledAt"]) is int
        assert job["qtyCount"] == sum(item["qty"] for item in job["items"])
        for item in job["items"]:
            assert type(item["rpc"]) is int and isinstance(item["sku"], str)
            assert all(value is not None for value in item.values())


def test_till_defaults_to_from_plus_31_days(legacy, sent):
    start = now_ms() - DAY_MS
    assert jobs(legacy, **{"from": start}).status_code == 200
    [(_, params)] = sent()
    assert params == {"storeId": "414", "from": str(start), "till": str(start + 31 * DAY_MS)}


@pytest.mark.parametrize("statuses", ["pending", "pickedup,cancelled", "pending,arrived,failed",
                                      "pending, pickedup"])
def test_statuses_filter(legacy, sent, seeded, statuses):
    start = now_ms() - 30 * DAY_MS
    wanted = [status.strip() for status in statuses.split(",")]
    answer = jobs(legacy, **{"from": start, "statuses": statuses})
    assert answer.status_code == 200
    expected = [job for job in seeded
                if start <= job["scheduledAt"] <= start + 31 * DAY_MS and job["status"] in wanted]
    assert answer.json() == expected
    assert sent()[0][1]["statuses"] == ",".join(wanted)  # a plain comma list, no quotes


def test_every_status_is_known(legacy):
    start = now_ms() - 30 * DAY_MS
    every = "pending,arrived,pickedup,cancelled,failed"
    answer = jobs(legacy, **{"from": start, "statuses": every})
    assert answer.status_code == 200
    assert answer.json() == jobs(legacy, **{"from": start}).json()


def test_an_empty_status_filter_is_not_sent(legacy, sent):
    assert jobs(legacy, **{"from": now_ms(), "statuses": ""}).status_code == 200
    assert "statuses" not in sent()[0][1]


def test_no_jobs_is_an_empty_array(legacy):
    answer = jobs(legacy, **{"from": now_ms() + 400 * DAY_MS})
    assert (answer.status_code, answer.json()) == (200, [])


# The range rules


def test_from_is_required(legacy, sent):
    answer = legacy.get("/v1/pickup-jobs")
    assert answer.status_code == 400
    assert answer.json()["title"] == "Bad Request"
    assert "from" in answer.json()["detail"]
    assert sent() == []


@pytest.mark.parametrize("name", ["from", "till"])
@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_a_non_integer_bound_is_400(legacy, sent, name, value):
    query = {"from": now_ms(), name: value}
    assert jobs(legacy, **query).status_code == 400
    assert sent() == []


@pytest.mark.parametrize("value", ["done", "Pending", "PICKEDUP", "pending,,arrived", "pending,",
                                   '"pickedup"', "pickedup;pending", "*"])
def test_a_bad_status_is_400(legacy, sent, value):
    answer = jobs(legacy, **{"from": now_ms(), "statuses": value})
    assert answer.status_code == 400
    assert sent() == []


def test_a_repeated_parameter_is_400(legacy, sent):
    start = now_ms()
    assert legacy.get(f"/v1/pickup-jobs?from={start}&from={start}").status_code == 400
    assert legacy.get(f"/v1/pickup-jobs?from={start}&statuses=pending&statuses=arrived"
                      ).status_code == 400
    assert sent() == []


@pytest.mark.parametrize(("start", "end"), [
    (lambda now: now, lambda now: now - 1),  # from after till
    (lambda now: now, lambda now: now + 31 * DAY_MS + 1),  # over 31 days
    (lambda now: now - 181 * DAY_MS, lambda now: now - 170 * DAY_MS),  # older than 180 days
    (lambda now: 0, lambda now: DAY_MS),
])
def test_unservable_ranges_are_422(legacy, sent, start, end):
    now = now_ms()
    answer = jobs(legacy, **{"from": start(now), "till": end(now)})
    assert answer.status_code == 422
    assert answer.json()["title"] == "Unprocessable Entity"
    assert sent() == []


@pytest.mark.parametrize(("start", "end"), [
    (lambda now: now, lambda now: now),
    (lambda now: now, lambda now: now + 31 * DAY_MS),
    (lambda now: now - 179 * DAY_MS, lambda now: now - 170 * DAY_MS),
])
def test_ranges_at_the_limits_are_served(legacy, start, end):
    now = now_ms()
    assert jobs(legacy, **{"from": start(now), "till": end(now)}).status_code == 200


# One job


def test_the_docs_example_job_comes_back_verbatim(legacy, sent):
    answer = legacy.get("/v1/pickup-jobs/123")
    assert answer.status_code == 200
    assert answer.json() == DOC_JOB
    assert type(answer.json()["id"]) is int
    assert sent() == [("/rss/pickup-job/get", {"storeId": "414", "pickupJobId": "123"})]


def test_a_listed_job_reads_the_same_alone(legacy):
    listed = jobs(legacy, **{"from": now_ms() - 30 * DAY_MS}).json()
    for job in listed[:5]:
        assert legacy.get(f"/v1/pickup-jobs/{job['id']}").json() == job


@pytest.mark.parametrize("job_id", [
    "abc", "%D9%A3", "99999999999999999999", "123%26storeId%3D415", "123%00", "123%0D%0A",
    "3limit5", "-1", "+123", "%20123", "123.0", "1e3",
])
def test_an_id_that_cannot_exist_is_404_and_never_sent(legacy, sent, job_id):
    answer = legacy.get("/v1/pickup-jobs/" + job_id)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND
    assert sent() == []


@pytest.mark.parametrize("job_id", ["124", "0", "9223372036854775807"])
def test_an_unknown_job_is_404_with_the_pickup_job_title(legacy, job_id):
    answer = legacy.get("/v1/pickup-jobs/" + job_id)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND


# Upstream type variance


def test_variance_mode_gives_byte_identical_answers(legacy, sandbox):
    start = now_ms() - 20 * DAY_MS
    paths = ["/v1/pickup-jobs/123", "/v1/pickup-jobs/124",
             f"/v1/pickup-jobs?from={start}", f"/v1/pickup-jobs?from={start}&statuses=pickedup",
             f"/v1/pickup-jobs?from={now_ms() + 400 * DAY_MS}"]
    normal = [legacy.get(path) for path in paths]
    requests.post(sandbox.base_url + "/_sandbox/variance", json={"enabled": True},
                  timeout=5).raise_for_status()
    try:
        varied = [legacy.get(path) for path in paths]
    finally:
        requests.post(sandbox.base_url + "/_sandbox/variance", json={"enabled": False},
                      timeout=5).raise_for_status()
    assert [(a.status_code, a.content) for a in varied] == [
        (a.status_code, a.content) for a in normal]


# Jobs the platform sends without a number the legacy schema requires (README, "Decisions")

INCOMPLETE = {"title": "Bad Gateway",
              "detail": "the platform sent this pickup job without its scheduled time or a "
                        "shipment's quantity; retry later"}


@pytest.fixture
def own(make_stack):
    """A sandbox of this test's own (its jobs get changed) and a shim on it."""
    stack = make_stack(pickup_jobs_rate_limit_per_second=10_000)
    yield stack.sandbox.state.catalog(STORE_ID).jobs, stack.legacy, stack.app
    stack.close()


def withheld(app, member: str) -> float:
    registry = app.extensions["shim"].metrics.registry
    return registry.get_sample_value("shim_pickup_jobs_withheld_total", {"member": member}) or 0


def test_a_listed_job_without_a_shipment_qty_is_left_out_and_counted(own, caplog):
    seeded, legacy, app = own
    start = now_ms() - 30 * DAY_MS
    in_range = [job for job in seeded if start <= job["scheduledAt"] <= start + 31 * DAY_MS]
    gap = next(job for job in in_range
               if any(item.get("shipmentsInfo") for item in job["items"]))
    whole = jobs(legacy, **{"from": start}).json()
    assert gap["id"] in [job["id"] for job in whole]
    next(item for item in gap["items"] if item.get("shipmentsInfo"))["shipmentsInfo"][0][
        "qty"] = None
    with caplog.at_level("WARNING", logger="shim.legacy.pickup_jobs"):
        answer = jobs(legacy, **{"from": start})
    assert answer.status_code == 200
    assert answer.json() == [job for job in whole if job["id"] != gap["id"]]
    assert withheld(app, "items.shipmentsInfo.qty") == 1
    assert any(record.levelname == "WARNING" and str(gap["id"]) in record.getMessage()
               and "items.shipmentsInfo.qty" in record.getMessage()
               for record in caplog.records)


@pytest.mark.parametrize(("gap", "member"), [("scheduledAt null", "scheduledAt"),
                                             ("scheduledAt absent", "scheduledAt"),
                                             ("shipment qty null", "items.shipmentsInfo.qty")])
def test_a_single_job_without_a_required_number_is_a_502(own, gap, member):
    seeded, legacy, app = own
    [doc_job] = [job for job in seeded if job["id"] == DOC_JOB["id"]]
    if gap == "scheduledAt null":
        doc_job["scheduledAt"] = None
    elif gap == "scheduledAt absent":
        del doc_job["scheduledAt"]
    else:
        doc_job["items"][0]["shipmentsInfo"][1]["qty"] = None
    answer = legacy.get(f"/v1/pickup-jobs/{DOC_JOB['id']}")
    assert answer.status_code == 502
    assert answer.json() == INCOMPLETE
    assert withheld(app, member) == 1
