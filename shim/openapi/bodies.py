"""Schemas of the bodies the gateway side writes without marshmallow: errors and the token.

``shim.errors`` and ``shim.legacy.auth`` build these bodies as plain dicts; the schemas here
only describe them for the OpenAPI document (tests hold real answers against them).
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

OAUTH_ERRORS = ("invalid_request", "invalid_token", "invalid_client", "unsupported_grant_type",
                "invalid_scope", "temporarily_unavailable")


class ProblemSchema(Schema):
    """The legacy service's error body."""

    title = fields.String(required=True, metadata={
        "description": "What went wrong; fixed per status (see the examples)."})
    detail = fields.String(metadata={
        "description": "For input errors: which parameter and why."})


class GatewayMessageSchema(Schema):
    """Kong's own error body (no route, rate limit, gateway failure)."""

    message = fields.String(required=True)


class OAuthErrorSchema(Schema):
    """Kong's oauth2 plugin error body (token endpoint and missing or bad tokens)."""

    error = fields.String(required=True, validate=validate.OneOf(OAUTH_ERRORS))
    error_description = fields.String(required=True)
    state = fields.String(metadata={"description": "The request's `state`, echoed."})


class TokenSchema(Schema):
    """A bearer token for the legacy API (client credentials grant)."""

    access_token = fields.String(required=True)
    token_type = fields.String(required=True, validate=validate.OneOf(["bearer"]))
    expires_in = fields.Integer(required=True, metadata={
        "description": "Seconds the token stays valid (7200 unless configured)."})
    state = fields.String(metadata={"description": "The request's `state`, echoed."})


class TokenRequestSchema(Schema):
    """The token call's parameters, as form fields, JSON members or query parameters."""

    grant_type = fields.String(required=True, metadata={
        "description": "Must be `client_credentials`; anything else is `unsupported_grant_type`."})
    client_id = fields.String(metadata={
        "description": "With `client_secret`; else the client comes from the Basic header."})
    client_secret = fields.String()
    scope = fields.String(metadata={
        "description": "Space-separated scopes; omitted, the client's allowed scopes are granted "
                       "(unless the deployment makes scope mandatory)."})
    state = fields.String(metadata={"description": "Echoed in the answer, success or error."})
