"""Loading legacy input (query, path, JSON body) through schemas, with legacy 400s."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from shim.errors import LegacyError, Problem, bad_request

MERGE_PATCH = "application/merge-patch+json"
JSON_TYPES = (MERGE_PATCH, "application/json")


def describe(messages: Any) -> str:
    """Return marshmallow's error messages as one readable line."""
    if isinstance(messages, dict):
        return "; ".join(f"{name}: {describe(inner)}" for name, inner in messages.items())
    if isinstance(messages, list):
        return ", ".join(describe(inner) for inner in messages)
    return str(messages)


def load_query(schema: Schema) -> dict[str, Any]:
    """Return the validated query string; a repeated parameter is ambiguous, so a 400.

    Parameters the route does not know are ignored, repeated or not, as the legacy API did.
    """
    known = {field.data_key or name for name, field in schema.fields.items()}
    repeated = sorted(name for name, values in request.args.lists()
                      if len(values) > 1 and name in known)
    if repeated:
        raise bad_request(f"parameter given more than once: {', '.join(repeated)}")
    return _load(schema, request.args.to_dict())


def load_path(schema: Schema, values: dict[str, Any], *,
              error: LegacyError | None = None) -> dict[str, Any]:
    """Return validated path values; ``error`` replaces the 400 where a route documents 404."""
    try:
        loaded: dict[str, Any] = schema.load(values)
        return loaded
    except ValidationError as invalid:
        raise error or bad_request(describe(invalid.messages)) from None


def load_json_body(schema: Schema) -> dict[str, Any]:
    """Return the validated JSON object body (merge-patch or plain JSON)."""
    # No Content-Type says nothing about the body: refused like any other type, as the
    # legacy service (and RFC 5789's PATCH) did.
    if request.mimetype not in JSON_TYPES:
        raise Problem(415, "Unsupported Media Type",
                      f"send the body as {MERGE_PATCH} or application/json")
    raw = request.get_data(cache=False)  # bounded by MAX_CONTENT_LENGTH: 413 beyond it
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit without an error: what was cut off is unknown,
        # and a prefix of the body must never be applied as if it were the body.
        raise RequestEntityTooLarge()
    try:
        document = json.loads(raw, object_pairs_hook=_no_duplicate_members,
                              parse_constant=_no_constants)
    except RecursionError:
        raise bad_request("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"the body is not valid JSON ({_reason(error)})") from None
    if not isinstance(document, dict):
        raise bad_request("the body must be a JSON object")
    return _load(schema, document)


def _load(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(data)
        return loaded
    except ValidationError as invalid:
        raise bad_request(describe(invalid.messages)) from None


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        raise ValueError("a member is given more than once")
    return dict(pairs)


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def _reason(error: Exception) -> str:
    return error.msg if isinstance(error, json.JSONDecodeError) else str(error)
