"""The platform's token answers (``/auth/token/create`` and ``/auth/token/refresh``).

The two answers differ (``country_user_info`` vs ``country_user_info_list``; the list may
even arrive as an object keyed by country; ``refresh_expires_in`` as text or number), so this
schema accepts every form; ``shim.token_lifecycle.grant_from`` makes the stored grant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate

from shim.schemas.common import RssSchema
from shim.schemas.fields import LooseInteger, LooseString


class UserInfoField(fields.Field[tuple[dict[str, str], ...]]):
    """``country_user_info``: a list of objects, or one object keyed by country."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> tuple[dict[str, str], ...]:
        if value is None:
            return ()
        if isinstance(value, dict):
            value = [{"country": country, **entry} if isinstance(entry, dict) else entry
                     for country, entry in value.items()]
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise ValidationError("not a list of objects")
        return tuple({key: "" if item is None else str(item) for key, item in entry.items()}
                     for entry in value)


MAX_LIFETIME_S = 10 * 365 * 86400  # Lazada's are days (access) and weeks (refresh)


class RssTokenSchema(RssSchema):
    """A token answer; ``shim.token_lifecycle.grant_from`` turns its lifetimes into expiries."""

    access_token = fields.String(required=True, validate=validate.Length(min=1))
    refresh_token = fields.String(required=True, validate=validate.Length(min=1))
    expires_in = LooseInteger(required=True)
    refresh_expires_in = LooseInteger(required=True)
    account = LooseString(load_default=None)
    country = LooseString(load_default=None)
    user_info = UserInfoField(load_default=(), allow_none=True)

    @pre_load
    def either_user_info(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "user_info" not in data:
            info = data.get("country_user_info", data.get("country_user_info_list"))
            data = {**data, "user_info": info}
        return data

    @post_load
    def sensible_lifetimes(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["user_info"] = data.get("user_info") or ()
        # A lifetime of 1e300 s would be stored, then break every date shown from it.
        if not all(0 < data[name] <= MAX_LIFETIME_S
                   for name in ("expires_in", "refresh_expires_in")):
            raise ValidationError("token lifetimes must be positive and at most ten years")
        return data
