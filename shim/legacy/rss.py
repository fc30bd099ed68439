"""Calling the platform for the current caller, and loading its answer through a schema."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import g
from marshmallow import Schema, ValidationError

from shim import errors
from shim.services import get_services
from shim.token_lifecycle import ReauthorizationNeeded, TokensUnavailable
from shim.upstream import BusinessError, GatewayError, MalformedResponse, UpstreamError
from shim.upstream.envelope import RssResult

log = logging.getLogger(__name__)

UNKNOWN_API_CODES = frozenset({"InvalidApiPath", "InvalidApi"})
ACCESS_REFUSED = "IllegalAccessToken"  # the seller's access token, refused


class ApiMissing(Exception):
    """Raised for an ``optional`` call when the platform does not know the API path."""


def call(api_path: str, params: dict[str, Any], *, method: str = "GET",
         not_found_title: str = errors.NOT_FOUND_TITLE, optional: bool = False,
         on_refusal: Callable[[BusinessError], None] | None = None) -> RssResult:
    """Call ``api_path`` for the caller's seller; upstream failures become legacy Problems.

    For a write (``method`` other than GET), a failure that leaves open whether the platform
    applied it is ``errors.OutcomeUnknown``. With ``optional``, an API path the platform does
    not know raises ``ApiMissing`` instead.
    ``on_refusal`` sees a business refusal first and may raise a more precise legacy error
    (the platform's refusal messages are undocumented, so the table cannot tell them apart).
    """
    write = method != "GET"
    try:
        result = _send_as_seller(api_path, params, method)
    except GatewayError as failure:
        if optional and failure.code in UNKNOWN_API_CODES:
            raise ApiMissing(api_path) from None
        raise errors.from_upstream(failure, not_found_title=not_found_title,
                                   write=write) from None
    except BusinessError as failure:
        if on_refusal is not None:
            on_refusal(failure)
        raise errors.from_upstream(failure, not_found_title=not_found_title) from None
    except UpstreamError as failure:
        raise errors.from_upstream(failure, not_found_title=not_found_title,
                                   write=write) from None
    g.upstream_request_id = result.request_id
    return result


def _send_as_seller(api_path: str, params: dict[str, Any], method: str) -> RssResult:
    """Send the call with the seller's token; on ``IllegalAccessToken`` renew it and replay once.

    Replaying is safe for the update too: the gateway refused the call before the service
    saw it.
    """
    services = get_services()
    name = g.caller.seller
    try:
        lease = services.tokens.lease(name)
        upstream = services.upstream_for(lease.seller)
        try:
            return upstream.rss(api_path, lease.credentials, params, method=method)
        except GatewayError as failure:
            if failure.code != ACCESS_REFUSED:
                raise
            try:
                lease = services.tokens.renew(name, lease)
            except TokensUnavailable:
                raise failure from None  # nothing newer to try: the table decides (500)
            log.info("replaying %s for seller %s with a renewed token", api_path, name)
            return upstream.rss(api_path, lease.credentials, params, method=method)
    except ReauthorizationNeeded as needed:
        log.error("call for seller %s refused: %s", name, needed)
        raise errors.Problem(503, errors.REAUTHORIZE_TITLE,
                             "the seller's authorization of the shim has lapsed; the "
                             "operator has been alerted") from None
    except TokensUnavailable as unavailable:
        log.warning("%s", unavailable)
        raise errors.Problem(503, "Service Unavailable", headers={"Retry-After": "1"}) from None


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
        return schema.load(payload)
    except ValidationError as invalid:
        log.warning("unreadable answer from %s: %s", api_path, sorted(invalid.messages))
        raise errors.from_upstream(MalformedResponse("answer does not fit the schema",
                                                     api=api_path,
                                                     request_id=result.request_id),
                                   write=write) from None


def fetch(api_path: str, params: dict[str, Any], schema: Schema, **options) -> dict[str, Any]:
    """Call ``api_path`` (``options`` as for ``call``) and return its loaded answer."""
    write = options.get("method", "GET") != "GET"
    return load(schema, call(api_path, params, **options), api_path, write=write)


def fetch_one(api_path: str, params: dict[str, Any], schema: Schema, *,
              not_found_title: str = errors.NOT_FOUND_TITLE, **options) -> dict[str, Any]:
    """Like ``fetch`` for single-object APIs: a ``null`` object is the legacy 404.

    A write the platform accepted without returning the object may still have been applied:
    that is ``OutcomeUnknown``, never a 404.
    """
    data = fetch(api_path, params, schema, not_found_title=not_found_title, **options)["data"]
    if data is None:
        if options.get("method", "GET") != "GET":
            raise errors.OutcomeUnknown()
        raise errors.not_found(not_found_title)
    return data
