"""Calling the platform for the current caller, and loading its answer through a schema."""

from __future__ import annotations

import logging
from typing import Any

from flask import g
from marshmallow import Schema, ValidationError

from shim import errors
from shim.failures import RefreshUnanswered, TokensUnavailable
from shim.legacy import ratelimit
from shim.services import get_services
from shim.upstream import AccessTokenRefused, MalformedResponse, UpstreamError
from shim.upstream.envelope import RssResult

log = logging.getLogger(__name__)

Passing = tuple[type[UpstreamError], ...]


def call(api_path: str, params: dict[str, Any], *, method: str = "GET",
         not_found_title: str = errors.NOT_FOUND_TITLE, passing: Passing = ()) -> RssResult:
    """Call ``api_path`` for the caller's seller; upstream failures become legacy Problems.

    For a write (``method`` other than GET), a failure that leaves open whether the platform
    applied it is ``errors.OutcomeUnknown``. Failures of the ``passing`` classes are raised
    as they are, for the caller to catch (a fallback, or a more precise answer); the shim's
    own failures (``shim.failures``) go to the app's error handler.
    """
    ratelimit.decide_now()  # a read's deferred count: over the limit, nothing is sent
    try:
        result = _send_as_seller(api_path, params, method)
    except passing:
        raise
    except UpstreamError as failure:
        raise errors.from_upstream(failure, not_found_title=not_found_title,
                                   write=method != "GET") from None
    g.upstream_request_id = result.request_id
    return result


def _send_as_seller(api_path: str, params: dict[str, Any], method: str) -> RssResult:
    """Send the call with the seller's token; when it is refused, renew it and replay once.

    Replaying is safe for the update too: the gateway refused the call before the service
    saw it.
    """
    services = get_services()
    name = g.caller.seller
    lease = services.tokens.lease(name)
    upstream = services.upstream_for(lease.seller)
    try:
        return upstream.rss(api_path, lease.credentials, params, method=method)
    except AccessTokenRefused as failure:
        try:
            lease = services.tokens.renew(name, lease)
        except RefreshUnanswered:
            raise  # a 503 to retry: the refresh may work on the next call, or say it cannot
        except TokensUnavailable:
            raise failure from None  # nothing newer to try: the table decides (500)
        log.info("replaying %s for seller %s with a renewed token", api_path, name)
        return upstream.rss(api_path, lease.credentials, params, method=method)


def load(schema: Schema, result: RssResult, api_path: str, *,
         write: bool = False) -> dict[str, Any]:
    """Return ``result`` loaded through ``schema``; an unreadable answer is a 503.

    For a write the platform said it applied, an unreadable answer is ``OutcomeUnknown``.
    """
    payload: dict[str, Any] = {"data": result.data}
    for key, value in (("page", result.page), ("pageSize", result.page_size),
                       ("total", result.total)):
        if value is not None:
            payload[key] = value
    try:
        loaded: dict[str, Any] = schema.load(payload)
        return loaded
    except ValidationError as invalid:
        log.warning("unreadable answer from %s: %s", api_path, sorted(invalid.messages))
        raise errors.from_upstream(MalformedResponse("answer does not fit the schema",
                                                     api=api_path,
                                                     request_id=result.request_id),
                                   write=write) from None


def fetch(api_path: str, params: dict[str, Any], schema: Schema, *, method: str = "GET",
          not_found_title: str = errors.NOT_FOUND_TITLE, passing: Passing = ()
          ) -> dict[str, Any]:
    """Call ``api_path`` (options as for ``call``) and return its loaded answer."""
    result = call(api_path, params, method=method, not_found_title=not_found_title,
                  passing=passing)
    return load(schema, result, api_path, write=method != "GET")


def fetch_one(api_path: str, params: dict[str, Any], schema: Schema, *, method: str = "GET",
              not_found_title: str = errors.NOT_FOUND_TITLE, passing: Passing = ()
              ) -> dict[str, Any]:
    """Like ``fetch`` for single-object APIs: a ``null`` object is the legacy 404.

    A write the platform accepted without returning the object may still have been applied:
    that is ``OutcomeUnknown``, never a 404.
    """
    data: dict[str, Any] | None = fetch(api_path, params, schema, method=method,
                                        not_found_title=not_found_title,
                                        passing=passing)["data"]
    if data is None:
        if method != "GET":
            raise errors.OutcomeUnknown()
        raise errors.not_found(not_found_title)
    return data
