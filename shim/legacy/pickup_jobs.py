"""``GET /v1/pickup-jobs`` and ``GET /v1/pickup-jobs/{pickupJobId}``.

A job the platform sends without ``scheduledAt`` or a shipment's ``qty`` cannot be served as
the legacy PickupJob (both required integers): a list leaves it out, a single read is a 502
(README, "Decisions"); either way a WARNING names the job and a metric counts it.
"""

from __future__ import annotations

import logging
from typing import Any

from shim import errors, scopes
from shim.legacy import rss
from shim.legacy.inputs import load_path, load_query
from shim.legacy.routes import Doc, Route, RouteBlueprint, current_route
from shim.schemas.common import dump_many, dump_one
from shim.schemas.pickup_jobs import (
    EXAMPLE_PICKUP_JOB,
    LegacyPickupJobPathSchema,
    LegacyPickupJobSchema,
    LegacyPickupJobsQuerySchema,
    RangeError,
    RssPickupJobListSchema,
    RssPickupJobParamsSchema,
    RssPickupJobResultSchema,
    RssPickupJobsParamsSchema,
    missing_numbers,
    resolve_range,
)
from shim.services import get_services

log = logging.getLogger(__name__)
bp = RouteBlueprint("pickup_jobs", __name__)

INCOMPLETE_JOB = ("the platform sent this pickup job without its scheduled time or a "
                  "shipment's quantity; retry later")

_query, _list_params = LegacyPickupJobsQuerySchema(), RssPickupJobsParamsSchema()
_rss_list, _legacy = RssPickupJobListSchema(), LegacyPickupJobSchema()
_path, _one_params, _rss_one = (LegacyPickupJobPathSchema(), RssPickupJobParamsSchema(),
                                RssPickupJobResultSchema())


@bp.declare(Route(
    method="GET", rule="/v1/pickup-jobs", scope=scopes.READ_PICKUP_JOB,
    fixtures="pickup-jobs-list", query=LegacyPickupJobsQuerySchema,
    answer=LegacyPickupJobSchema, many=True, statuses=(400, 422),
    rate_limit=lambda settings: settings.pickup_jobs_rate_limit_per_second,
    doc=Doc(answer="The pickup jobs scheduled in the range (a bare array).",
            example=[EXAMPLE_PICKUP_JOB],
            notes="`from` is required (400 without it). Without `till` the range is 31 days. "
                  "A range over 31 days, `from` after `till`, or `from` more than 180 days "
                  "ago is a 422. A job the platform sent without its scheduled time or a "
                  "shipment's quantity is left out.")))
def list_pickup_jobs() -> list[dict[str, Any]]:
    """Return the pickup jobs scheduled in [from, till], optionally of some statuses."""
    query = load_query(_query)
    try:
        start, end = resolve_range(query, int(get_services().clock() * 1000))
    except RangeError as error:
        raise errors.unprocessable(str(error)) from None
    params = _list_params.dump({"from_": start, "till": end, "statuses": query.get("statuses")})
    loaded = rss.fetch("/rss/pickup-jobs/get", params, _rss_list)
    return dump_many(_legacy, [job for job in loaded["data"] if not _withheld(job)])


@bp.declare(Route(
    method="GET", rule="/v1/pickup-jobs/<pickup_job_id>", scope=scopes.READ_PICKUP_JOB,
    fixtures="pickup-jobs-get", path=LegacyPickupJobPathSchema, answer=LegacyPickupJobSchema,
    statuses=(404, 502), not_found_title=errors.PICKUP_JOB_NOT_FOUND_TITLE,
    doc=Doc(answer="The pickup job.", example=EXAMPLE_PICKUP_JOB,
            notes="An id that is not digits is the documented 404. A job the platform sent "
                  "without its scheduled time or a shipment's quantity is a 502.")))
def get_pickup_job(pickup_job_id: str) -> dict[str, Any]:
    """Return one pickup job; an id that cannot exist is the documented 404."""
    title = current_route().not_found_title
    path = load_path(_path, {"pickupJobId": pickup_job_id}, error=errors.not_found(title))
    job = rss.fetch_one("/rss/pickup-job/get", _one_params.dump(path), _rss_one,
                        not_found_title=title)
    if _withheld(job):
        raise errors.Problem(502, "Bad Gateway", INCOMPLETE_JOB)
    return dump_one(_legacy, job)


def _withheld(job: dict[str, Any]) -> bool:
    """Return whether ``job`` lacks a required number; if so, log and count it."""
    missing = missing_numbers(job)
    if missing:
        log.warning("pickup job %s withheld: the platform sent it without %s", job["id"],
                    ", ".join(missing))
        for member in missing:
            get_services().metrics.pickup_jobs_withheld.labels(member=member).inc()
    return bool(missing)
