"""The OpenAPI 3.0.3 document of the legacy surface, built from the route declarations.

Each operation is one declared route (``shim.legacy.ROUTES``, see ``shim.legacy.routes``):
its parameters come from the query and path schemas it declares, its body and answer from
its body and answer schemas (through apispec's marshmallow plugin), its scope, statuses,
examples and notes from the declaration, its summary from the view's docstring. What is not
a marshmallow schema in the app (error bodies, the token answer) is described in
``shim.openapi.bodies``; the fuzzing suite checks that the server keeps to the statuses.

Dependency rule: no Flask request state here; ``build_spec()`` is a pure function.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from apispec.ext.marshmallow.field_converter import FieldConverterMixin
from apispec.ext.marshmallow.openapi import OpenAPIConverter
from marshmallow import Schema, fields

from shim import errors, scopes
from shim.legacy import NO_ROUTE, ROUTES, auth, pickup_jobs
from shim.legacy.inputs import JSON_TYPES
from shim.legacy.ratelimit import LIMIT_HEADER, REMAINING_HEADER
from shim.legacy.routes import BoundRoute
from shim.openapi import bodies
from shim.schemas.common import LegacyBodySchema, LegacyOutputSchema, LegacyPageSchema
from shim.schemas.fields import INT32_MAX, CommaList, DigitsId, StrictInteger

OPENAPI_VERSION = "3.0.3"
TITLE = "RedMart Partner API (v1), served by redmart-shim"
VERSION = "1"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
ID_PATTERN = "^[0-9]+$"
TOKEN_PATH = auth.TOKEN_PATH

DESCRIPTION = f"""\
The retired RedMart Partner API v1, reproduced by redmart-shim over the Lazada Open Platform.

**Authentication.** Get a bearer token from `POST {TOKEN_PATH}` (client credentials) and send
it as `Authorization: Bearer <token>` (`Token <token>` works too), or as an `access_token`
query parameter (or form field of a form body); the header wins when both are given.

**Order of checks** on every `/v1` request, as the Kong gateway in front of the legacy API
did them: the route (404), the token (401), the rate limit (429), then the service: the
token's scope (403), then the input and the resource.

**Errors** come in three shapes: the service's Problem `{{"title", "detail"?}}`, Kong's
OAuth2 body `{{"error", "error_description"}}` (401 and the token endpoint) and Kong's
`{{"message"}}` (429 rate limit, 500 gateway failure, 404 no route). Beyond the operations
listed here:

- a path that matches none of the routes, under `/v1` or not, with any method: Kong's 404
  `{{"message": "{NO_ROUTE}"}}`, before any token check (the gateway had one route per
  endpoint); a route's resource that does not exist is the service's 404 Problem;
- a method a path does not have: (after the token check) 405
  `{{"title": "Method Not Allowed"}}` with an `Allow` header;
- `OPTIONS` on a route: (after the token check, under `/v1`) 200 with an `Allow` header
  and an empty body.

**Headers.** Response header names are sent in lower case (`etag`, as HTTP/2 delivers them)
unless the deployment chooses canonical case. Every response carries `X-Request-Id`; every
response that passed the rate limiter carries `{LIMIT_HEADER}` and `{REMAINING_HEADER}`.
"""

PATH_EXAMPLES = {"productId": "100150", "pickupLocationId": "23789", "pickupJobId": "123"}


# --- headers ------------------------------------------------------------------------------

def _header(description: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


HEADERS = {
    "RequestId": _header("This request's id (the client's `X-Request-Id` when it is 1-64 "
                         "characters of `[A-Za-z0-9._:-]`, else a new one).",
                         {"type": "string"}),
    "RateLimitLimit": _header("Calls allowed per second on this route for this client.",
                              {"type": "integer", "minimum": 0}),
    "RateLimitRemaining": _header("Calls left in the current second.",
                                  {"type": "integer", "minimum": 0}),
    "RetryAfter": _header("Seconds to wait before trying again.",
                          {"type": "integer", "minimum": 1}, required=True),
    "RetryAfterOptional": _header("Seconds to wait before trying again, when the outage is "
                                  "expected to be short.", {"type": "integer", "minimum": 1}),
    "ETag": _header("The stock lot's version: its quantity at the location, quoted (`\"10\"`)."
                    " Send it back in `If-Match`.",
                    {"type": "string", "pattern": '^"[0-9]+"$'}, required=True),
    "BearerChallenge": _header("`Bearer realm=\"service\"`, with the error for a bad token.",
                               {"type": "string"}, required=True),
    "BasicChallenge": _header("`Basic realm=\"OAuth2.0\"`.", {"type": "string"},
                              required=True),
    "NoStore": _header("`no-store`.", {"type": "string", "enum": ["no-store"]},
                       required=True),
    "Allow": _header("The methods the path has.", {"type": "string"}, required=True),
    "NoCache": _header("`no-cache`.", {"type": "string", "enum": ["no-cache"]},
                       required=True),
}
_LIMITED = {LIMIT_HEADER: "RateLimitLimit", REMAINING_HEADER: "RateLimitRemaining"}
_TOKEN_HEADERS = {"Cache-Control": "NoStore", "Pragma": "NoCache"}


def _headers(**named: str) -> dict[str, Any]:
    """Return response headers: ``X-Request-Id`` plus ``named`` (header name -> component)."""
    chosen = {"X-Request-Id": "RequestId", **named}
    return {name: {"$ref": f"#/components/headers/{ref}"} for name, ref in chosen.items()}


def _limited(**named: str) -> dict[str, Any]:
    """Return the headers of an answer that passed the rate limiter."""
    return _headers(**{**_LIMITED, **named})


# --- error responses ----------------------------------------------------------------------

def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any],
             examples: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {JSON: media}


PROBLEM, GATEWAY, OAUTH = _ref("Problem"), _ref("GatewayMessage"), _ref("OAuthError")
PROBLEM_OR_GATEWAY = {"oneOf": [PROBLEM, GATEWAY]}
MISSING_TOKEN = {"error": "invalid_request", "error_description": "The access token is missing"}
INVALID_TOKEN = {"error": "invalid_token", "error_description": auth.INVALID_TOKEN}


@dataclass(frozen=True)
class Failure:
    """One error status of the legacy API: what it means, its body, headers and examples."""

    description: str
    schema: dict[str, Any]
    examples: dict[str, dict[str, Any]]
    headers: dict[str, Any] = field(default_factory=_limited)

    def response(self, examples: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Return the OpenAPI response object (``examples`` replace the default ones)."""
        return {"description": self.description, "headers": self.headers,
                "content": _content(self.schema, examples or self.examples)}


FAILURES: dict[int, Failure] = {
    400: Failure("Malformed input: a parameter of the wrong type or out of range, a missing "
                 "or repeated parameter, a body that is not the JSON object expected.",
                 PROBLEM, {"bad parameter": {"title": "Bad Request",
                                             "detail": "pageSize: must be between 1 and 100"}}),
    401: Failure("The access token is missing, unknown or expired (Kong's oauth2 plugin; "
                 "before the rate limiter, so without rate-limit headers).",
                 OAUTH, {"missing": MISSING_TOKEN, "invalid": INVALID_TOKEN},
                 headers=_headers(**{"WWW-Authenticate": "BearerChallenge"})),
    403: Failure("The token's scope does not cover the operation; or the platform refuses "
                 "the seller's store (not active, not verified).",
                 PROBLEM, {"scope": {"title": "Forbidden", "detail": "the access token does "
                                                                    "not grant the scope "
                                                                    f"{scopes.READ_PRODUCT}"},
                           "store": {"title": "Forbidden: the seller's store is not active"}}),
    404: Failure("No such resource.", PROBLEM, {"not found": errors.not_found().body()}),
    409: Failure("The new quantity is below the quantity scheduled for pickup.", PROBLEM,
                 {"below scheduled": {"title": errors.CONFLICT_TITLE}}),
    412: Failure("`If-Match` does not name the current ETag: the stock changed since it was "
                 "read.", PROBLEM, {"stale": {"title": errors.PRECONDITION_TITLE}}),
    413: Failure("The body is larger than the deployment allows (16 KiB by default).", PROBLEM,
                 {"too large": {"title": "Payload Too Large",
                                "detail": "the body must not exceed 16384 bytes"}}),
    415: Failure("The body is not sent as JSON.", PROBLEM,
                 {"media type": {"title": "Unsupported Media Type",
                                 "detail": "send the body as application/merge-patch+json "
                                           "or application/json"}}),
    422: Failure("Well-formed but not servable.", PROBLEM,
                 {"range": {"title": "Unprocessable Entity",
                            "detail": "the range from 'from' to 'till' must not exceed 31 "
                                      "days"}}),
    429: Failure("Too many calls: this client's per-second limit on the route or its limit "
                 "of calls in flight at once (Kong's `{\"message\"}`), or the platform's own "
                 "limit (a Problem).",
                 PROBLEM_OR_GATEWAY,
                 {"rate limit": {"message": errors.RATE_LIMITED},
                  "platform limit": {"title": "Too Many Requests"}},
                 headers=_limited(**{"Retry-After": "RetryAfter"})),
    500: Failure("An unexpected failure, or a platform refusal only the operator can fix. A "
                 "failure in the gateway part (token, rate limiter) has Kong's body.",
                 PROBLEM_OR_GATEWAY,
                 {"service": {"title": "Internal Server Error"},
                  "gateway": {"message": errors.GATEWAY_FAILURE}}),
    502: Failure("The platform sent the pickup job without a number the legacy schema "
                 "requires (its scheduled time, a shipment's quantity); retry later.", PROBLEM,
                 {"incomplete": {"title": "Bad Gateway", "detail": pickup_jobs.INCOMPLETE_JOB}}),
    503: Failure("The platform is unreachable, slow or overloaded, the shim is serving as "
                 "many requests as it can (in all or for the seller), or the seller must "
                 "authorize the shim again; retry later.", PROBLEM,
                 {"unavailable": {"title": "Service Unavailable"},
                  "at capacity": {"title": "Service Unavailable",
                                  "detail": errors.INSTANCE_BUSY},
                  "reauthorize": {"title": errors.REAUTHORIZE_TITLE,
                                  "detail": "the seller's authorization of the shim has "
                                            "lapsed; the operator has been alerted"}},
                 headers=_limited(**{"Retry-After": "RetryAfterOptional"})),
}
# Every /v1 operation can answer these: the gateway's checks, the scope, and upstream outcomes
# (``shim.errors.OUTCOMES``: 403, 404, 429, 500 and 503 all occur there).
COMMON_STATUSES = (401, 403, 404, 429, 500, 503)


# --- operations ---------------------------------------------------------------------------

def _ok(description: str, schema: dict[str, Any], example: Any,
        headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "headers": headers or _limited(),
            "content": {JSON: {"schema": schema, "example": example}}}


def _success(route: BoundRoute) -> dict[str, Any]:
    """Return the route's 200 answer: its schema (a Page, an array or one object), example
    and headers."""
    schema = _ref(component_name(route.answer))
    if route.many:
        schema = {"type": "array", "items": schema}
    return _ok(route.doc.answer, schema, route.doc.example,
               _limited(ETag="ETag") if route.etag else None)


def _parameters(route: BoundRoute) -> list[dict[str, Any]]:
    """Return the route's parameters: its query and path schemas, then those read by hand."""
    from_schemas = [{"in": place, "schema": schema}
                    for place, schema in (("query", route.query), ("path", route.path))
                    if schema is not None]
    return from_schemas + [copy.copy(parameter) for parameter in route.doc.parameters]


def _error_examples(route: BoundRoute) -> dict[int, dict[str, Any]]:
    """Return the examples that replace the default ones, per status."""
    examples = dict(route.doc.examples)
    if route.not_found_title != errors.NOT_FOUND_TITLE:
        examples.setdefault(404, {"not found": errors.not_found(route.not_found_title)
                                  .body()})
    return examples


# Schemas whose component names are fixed here (the rest follow ``component_name``).
NAMED_SCHEMAS = {
    "Problem": bodies.ProblemSchema,
    "GatewayMessage": bodies.GatewayMessageSchema,
    "OAuthError": bodies.OAuthErrorSchema,
    "Token": bodies.TokenSchema,
    "TokenRequest": bodies.TokenRequestSchema,
}
# Answer bodies have exactly their documented members (errors included).
EXACT_SCHEMAS = (LegacyOutputSchema, bodies.ProblemSchema, bodies.GatewayMessageSchema,
                 bodies.OAuthErrorSchema, bodies.TokenSchema)


def component_name(schema: Any) -> str:
    """Return the component name of a schema: ``LegacyPickupItemSchema`` -> ``PickupItem``,
    and a Page of them ``PickupItemPage``."""
    cls = resolve_schema_cls(schema)
    for name, named in NAMED_SCHEMAS.items():
        if cls is named:
            return name
    if isinstance(cls, type) and issubclass(cls, LegacyPageSchema):
        return component_name(cls.ITEM) + "Page"
    class_name: str = getattr(cls, "__name__", "")
    return class_name.removeprefix("Legacy").removesuffix("Schema")


def route_schemas(routes: tuple[BoundRoute, ...]) -> list[type[Schema]]:
    """Return the routes' answer and body schemas in route order, a Page's items first."""
    found: list[type[Schema]] = []
    for route in routes:
        page_items = [route.answer.ITEM] if issubclass(route.answer, LegacyPageSchema) else []
        for schema in (*page_items, route.answer, route.body):
            if schema is not None and schema not in found:
                found.append(schema)
    return found


# --- marshmallow field conversion ---------------------------------------------------------

def strict_fields(self: FieldConverterMixin, field: fields.Field[Any],
                  **kwargs: Any) -> dict[str, Any]:
    """Describe the shim's strict input fields (ids, bounded integers, comma lists)."""
    if isinstance(field, DigitsId):
        return {"type": "string", "pattern": ID_PATTERN, "description": field.metadata.get(
            "description", "An id: the digits 0-9 only, at most 9223372036854775807.")}
    if isinstance(field, StrictInteger):
        number = {"type": "integer", "format": "int32" if field.maximum <= INT32_MAX
                  else "int64", "minimum": field.minimum, "maximum": field.maximum}
        if isinstance(field.parent, LegacyBodySchema):
            # In JSON the legacy API took the number as a number or as numeric text.
            text = {"type": "string", "pattern": ID_PATTERN,
                    "description": f"The same number as text, {field.minimum}.."
                                   f"{field.maximum}."}
            return {"oneOf": [number, text]}
        return number
    if isinstance(field, CommaList):
        return {"type": "array", "items": self.field2property(field.inner)}
    return {}


def comma_lists(self: FieldConverterMixin, field: fields.Field[Any],
                **kwargs: Any) -> dict[str, Any]:
    """Comma lists travel as one ``a,b,c`` value (form style, not exploded)."""
    if isinstance(field, CommaList):
        return {"style": "form", "explode": False}
    return {}


def _plugin() -> MarshmallowPlugin:
    return MarshmallowPlugin(schema_name_resolver=component_name)


def _converter(plugin: MarshmallowPlugin) -> OpenAPIConverter:
    """Return the plugin's converter, which it has once an APISpec took the plugin."""
    if plugin.converter is None:
        raise RuntimeError("the marshmallow plugin is not attached to an APISpec")
    return plugin.converter


# --- the document -------------------------------------------------------------------------

def build_spec() -> dict[str, Any]:
    """Return the OpenAPI document of the legacy surface as a JSON-ready dict."""
    plugin = _plugin()
    spec = APISpec(title=TITLE, version=VERSION, openapi_version=OPENAPI_VERSION,
                   plugins=[plugin], info={"description": DESCRIPTION})
    converter = _converter(plugin)
    converter.add_attribute_function(strict_fields)
    converter.add_parameter_attribute_function(comma_lists)
    for name, schema in NAMED_SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for schema in route_schemas(ROUTES):
        spec.components.schema(component_name(schema), schema=schema)
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    _security(spec)
    _outside_operations(spec)
    _token_path(spec)
    for route in ROUTES:
        spec.path(path=path_template(route.rule),
                  operations={route.method.lower(): _operation(route)})
    document = spec.to_dict()
    _finish_schemas(document, plugin)
    return document


def _security(spec: APISpec) -> None:
    spec.components.security_scheme("oauth2", {
        "type": "oauth2",
        "description": "Client credentials; send the token as `Authorization: Bearer <token>`.",
        "flows": {"clientCredentials": {
            "tokenUrl": TOKEN_PATH,
            "scopes": {
                scopes.READ_PICKUP_LOCATION: "view pickup locations",
                scopes.READ_PRODUCT: "view products",
                scopes.READ_STOCK_LOT: "view stock lots",
                scopes.WRITE_STOCK_LOT: "update stock lots",
                scopes.READ_PICKUP_JOB: "view pickup jobs",
            },
        }},
    })
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer",
        "description": "A token from the token endpoint, as `Authorization: Bearer <token>` "
                       "(or `Token <token>`); it must grant the operation's scope (else 403).",
    })
    spec.components.security_scheme("accessToken", {
        "type": "apiKey", "in": "query", "name": "access_token",
        "description": "The same token as an `access_token` query parameter (or a form field "
                       "of a form body); the Authorization header wins when both are sent.",
    })
    spec.components.security_scheme("clientBasic", {
        "type": "http", "scheme": "basic",
        "description": "Client id and secret, for the token endpoint only, when they are not "
                       "in the form.",
    })


def _outside_operations(spec: APISpec) -> None:
    """Add the answers to requests that reach no operation (reusable responses of the document)."""
    spec.components.response("NoRoute", {
        "description": "A path that matches no route, under `/v1` or not (Kong's 404, before "
                       "any token check).",
        "headers": _headers(), "content": _content(GATEWAY, {"no route": {"message": NO_ROUTE}})})
    spec.components.response("MethodNotAllowed", {
        "description": "A method the path does not have, after the token check.",
        "headers": _limited(Allow="Allow"),
        "content": _content(PROBLEM, {"method": {"title": "Method Not Allowed"}})})


def _token_path(spec: APISpec) -> None:
    oauth_error = {"schema": OAUTH}
    request_media = {"schema": _ref("TokenRequest")}
    spec.path(path=TOKEN_PATH, operations={"post": {
        "operationId": f"{auth.bp.name}.{auth.issue_token.__name__}",
        "summary": _summary(auth.issue_token),
        "description": "Kong's oauth2 token endpoint. The parameters may also be sent in the "
                       "query string (the body wins), and the client as an HTTP Basic header "
                       "instead of `client_id`/`client_secret`. A client id that failed too "
                       "often from one address is refused for the rest of the minute (429).",
        "tags": ["oauth2"],
        "security": [{"clientBasic": []}, {}],
        "requestBody": {"required": False, "content": {
            FORM: request_media, MULTIPART: request_media, JSON: request_media}},
        "responses": {
            "200": {"description": "A bearer token.",
                    "headers": _headers(**_TOKEN_HEADERS),
                    "content": {JSON: {"schema": _ref("Token"), "example": {
                        "access_token": "<token>", "token_type": "bearer",
                        "expires_in": 7200}}}},
            "400": {"description": "Unsupported grant type, unknown client or wrong secret "
                                   "(client from the form), or an invalid scope.",
                    "headers": _headers(**_TOKEN_HEADERS),
                    "content": {JSON: {**oauth_error, "examples": _values({
                        "grant": {"error": "unsupported_grant_type",
                                  "error_description": "Invalid grant_type"},
                        "client": {"error": "invalid_client",
                                   "error_description": "Invalid client authentication"},
                        "scope": {"error": "invalid_scope",
                                  "error_description": '"read:everything" is an invalid '
                                                       'scope'}})}}},
            "401": {"description": "The client from the Basic header is unknown or its "
                                   "secret is wrong.",
                    "headers": _headers(**_TOKEN_HEADERS,
                                        **{"WWW-Authenticate": "BasicChallenge"}),
                    "content": {JSON: {**oauth_error, "example": {
                        "error": "invalid_client",
                        "error_description": "Invalid client authentication"}}}},
            "413": FAILURES[413].response() | {"headers": _headers()},
            "429": {"description": "Too many failed authentications of this client id from "
                                   "this address, or of any client ids from this address, "
                                   "in the current minute.",
                    "headers": _headers(**_TOKEN_HEADERS, **{"Retry-After": "RetryAfter"}),
                    "content": {JSON: {**oauth_error, "example": {
                        "error": "temporarily_unavailable",
                        "error_description": "Too many failed client authentications: "
                                             "retry in 42 s"}}}},
            "500": {"description": "A gateway failure (Kong's body).", "headers": _headers(),
                    "content": _content(GATEWAY, {"gateway": {
                        "message": errors.GATEWAY_FAILURE}})},
            "503": {"description": "Every secret-check slot of this process is taken, or "
                                   "it serves as many requests as it can: retry after "
                                   "Retry-After.",
                    "headers": _headers(**_TOKEN_HEADERS, **{"Retry-After": "RetryAfter"}),
                    "content": {JSON: {**oauth_error, "example": {
                        "error": "temporarily_unavailable",
                        "error_description": "Too many client authentications in "
                                             "progress: retry in 1 s"}}}},
        },
    }})


def _values(examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {"value": value} for name, value in examples.items()}


def _operation(route: BoundRoute) -> dict[str, Any]:
    statuses = sorted(set(route.statuses) | set(COMMON_STATUSES))
    examples = _error_examples(route)
    responses = {"200": _success(route)}
    for status in statuses:
        responses[str(status)] = FAILURES[status].response(examples.get(status))
    document: dict[str, Any] = {
        "operationId": route.endpoint,
        "summary": _summary(route.view),
        "tags": [route.view.__module__.rsplit(".", 1)[-1].replace("_", "-")],
        "description": "\n\n".join(part for part in (_doc_body(route.view), route.doc.notes)
                                    if part),
        "security": [{"oauth2": [route.scope]}, {"bearerAuth": []}, {"accessToken": []}],
        "parameters": _parameters(route),
        "responses": responses,
    }
    document["description"] = f"{document['description']}\n\nScope: `{route.scope}`.".strip()
    if route.body is not None:
        media = {"schema": route.body, "example": route.doc.body_example}
        document["requestBody"] = {"required": True,
                                   "content": {media_type: dict(media)
                                               for media_type in JSON_TYPES}}
    return document


def _summary(view: Callable[..., object]) -> str:
    return (view.__doc__ or "").strip().splitlines()[0].rstrip(".")


def _doc_body(view: Callable[..., object]) -> str:
    """Return the view's docstring after its first line (often nothing)."""
    lines = (view.__doc__ or "").strip().splitlines()
    return "\n".join(line.strip() for line in lines[1:]).strip()


def _finish_schemas(document: dict[str, Any], plugin: MarshmallowPlugin) -> None:
    """Mark answer members required (unless optional) and close answer objects."""
    components = document["components"]["schemas"]
    for key, name in _converter(plugin).refs.items():
        schema_cls = key[0]
        component = components.get(name)
        if component is None or not issubclass(schema_cls, EXACT_SCHEMAS):
            continue
        component["additionalProperties"] = False
        if issubclass(schema_cls, LegacyOutputSchema):
            optional = set(schema_cls.OPTIONAL)
            component["required"] = [member for member in component["properties"]
                                     if member not in optional]
            for member in optional:  # a null optional member is left out, never sent as null
                component["properties"].get(member, {}).pop("nullable", None)
    for parameter_list in _parameter_lists(document):
        for parameter in parameter_list:
            example = PATH_EXAMPLES.get(parameter["name"])
            if parameter["in"] == "path" and example is not None:
                parameter["example"] = example


def _parameter_lists(document: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    for item in document["paths"].values():
        for operation in item.values():
            yield operation.get("parameters", [])


def path_template(rule: str) -> str:
    """Return a Flask rule as an OpenAPI path: ``/a/<product_id>`` -> ``/a/{productId}``."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>",
                  lambda match: "{" + _camel(match.group(1)) + "}", rule)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
