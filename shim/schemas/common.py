"""Pieces shared by several resources: paging on both sides, and schema base classes."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from marshmallow import EXCLUDE, RAISE, Schema, fields, post_dump

from shim.schemas.fields import INT32_MAX, LooseInteger, LooseNestedList, StrictInteger

DEFAULT_PAGE = 1
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class LegacyInputSchema(Schema):
    """Base for what legacy clients send: unknown query parameters are ignored, as before."""

    class Meta:
        unknown = EXCLUDE


class LegacyBodySchema(Schema):
    """Base for legacy JSON bodies: an unknown member is a client mistake worth a 400."""

    class Meta:
        unknown = RAISE


class RssSchema(Schema):
    """Base for upstream answers: new upstream fields are ignored, never an error."""

    class Meta:
        unknown = EXCLUDE


class LegacyOutputSchema(Schema):
    """Base for legacy answers."""

    OPTIONAL: tuple[str, ...] = ()  # wire names that may be absent (LegacyOptionalsSchema)


class LegacyOptionalsSchema(LegacyOutputSchema):
    """Base for legacy answers with optional members: absent (or null) upstream stays absent.

    A separate base so that schemas without optional members (most items of a 100-item page)
    do not pay for a post-dump hook.
    """

    @post_dump
    def drop_absent_optionals(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for key in self.OPTIONAL:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class LegacyPageQuerySchema(LegacyInputSchema):
    """``page`` and ``pageSize`` with the legacy defaults and bounds."""

    page = StrictInteger(minimum=1, maximum=INT32_MAX, load_default=DEFAULT_PAGE,
                         metadata={"description": "The page to return, from 1."})
    page_size = StrictInteger(minimum=1, maximum=MAX_PAGE_SIZE, load_default=DEFAULT_PAGE_SIZE,
                              data_key="pageSize", metadata={"description": "Items per page."})


class RssPageParamsSchema(Schema):
    """The paging parameters of a paged RSS call."""

    page = fields.Integer()
    page_size = fields.Integer(data_key="pageSize")


def rss_page_schema(item_schema: type[Schema]) -> type[Schema]:
    """Return a schema loading a paged RSS ``result`` whose ``data`` holds ``item_schema``."""
    return RssSchema.from_dict(
        {
            "data": LooseNestedList(item_schema),
            "page": LooseInteger(allow_none=True),
            "page_size": LooseInteger(allow_none=True, data_key="pageSize"),
            "total": LooseInteger(allow_none=True),
        },
        name=f"RssPageOf{item_schema.__name__}",
    )


class LegacyPageSchema(LegacyOptionalsSchema):
    """Base of the legacy Page envelopes that ``legacy_page_schema`` makes."""

    ITEM: ClassVar[type[Schema]]  # the schema of the items
    OPTIONAL = ("total",)


def legacy_page_schema(item_schema: type[Schema]) -> type[LegacyPageSchema]:
    """Return a schema dumping the legacy Page envelope around ``item_schema`` items."""
    schema = cast(type[LegacyPageSchema], LegacyPageSchema.from_dict(
        {
            "page": fields.Integer(),
            "page_size": fields.Integer(data_key="pageSize"),
            "items": fields.Nested(item_schema, many=True),
            "total": fields.Integer(allow_none=True),
        },
        name=f"LegacyPageOf{item_schema.__name__}",
    ))
    schema.ITEM = item_schema
    return schema


def example_page(item: dict[str, Any]) -> dict[str, Any]:
    """Return a legacy Page holding only ``item``, as the documentation shows one."""
    return {"page": DEFAULT_PAGE, "pageSize": DEFAULT_PAGE_SIZE, "items": [item], "total": 1}


def dump_one(schema: Schema, record: Any) -> dict[str, Any]:
    """Return ``record`` dumped through ``schema``: one JSON object."""
    dumped: dict[str, Any] = schema.dump(record)
    return dumped


def dump_many(schema: Schema, records: list[Any]) -> list[dict[str, Any]]:
    """Return ``records`` dumped through ``schema``: a JSON array of objects."""
    dumped: list[dict[str, Any]] = schema.dump(records, many=True)
    return dumped


def page_of(requested: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """Return the legacy page: the upstream's paging figures where it gave them."""
    return {
        "page": loaded.get("page") or requested["page"],
        "page_size": loaded.get("page_size") or requested["page_size"],
        "items": loaded["data"],
        "total": loaded.get("total"),
    }
