"""One pass per answer: RSS schemas derived to load platform answers straight into legacy JSON.

The declared pair stays the definition: the ``Rss*Schema`` says how a platform value is read,
the ``Legacy*Schema`` (the OpenAPI definition and the contract) what the client gets. Loading
with the first and dumping with the second was two passes over a page, the second one only
renaming the keys the first produced (issue 12). ``straight(rss, legacy)`` derives from the
pair one schema: the RSS schema's own fields, each loading under the legacy wire name of the
legacy field of the same name, in the legacy order.

It derives only where the dump pass provably changes nothing but the names, and refuses
(``TypeError``, at import) anything else, so it can never drift from the declarations:

- both schemas declare the same field names in the same order (absent stays absent on both
  paths: a dump skips what the loaded object lacks);
- neither has hooks (``pre_load``, ``post_load``, ``post_dump``, validators);
- each legacy field dumps the value its RSS field loads unchanged: ``Integer`` of an
  integer-loading field, ``String`` of a text-loading field, ``List(String)`` of a list of
  text, ``Raw`` of anything, ``Nested`` of a nested pair derived the same way, and a nested
  object of text members of a field that loads exactly that object (``LEGACY_SHAPE``).

``tests/test_straight.py`` checks the derived loaders against the two passes of the declared
schemas (hypothesis), and ``tests/test_differential.py`` checks the whole answers.
"""

from __future__ import annotations

import copy
from typing import Any

from marshmallow import Schema, fields

from shim.schemas.common import LegacyPageSchema, RssSchema, page_of
from shim.schemas.fields import LooseInteger, LooseList, LooseOptionalString, LooseString

_INTEGERS = (LooseInteger,)
_TEXTS = (LooseString, LooseOptionalString)


def straight(rss: type[Schema], legacy: type[Schema]) -> type[Schema]:
    """Return ``rss`` derived to load straight into what ``legacy`` dumps; TypeError if it
    cannot be exactly that."""
    _no_hooks(rss)
    _no_hooks(legacy)
    rss_fields, legacy_fields = rss._declared_fields, legacy._declared_fields
    if list(rss_fields) != list(legacy_fields):
        raise TypeError(f"{rss.__name__} and {legacy.__name__} declare different fields")
    derived: dict[str, fields.Field[Any]] = {}
    for name, loading in rss_fields.items():
        dumping = legacy_fields[name]
        field = copy.copy(loading)
        if isinstance(dumping, fields.Nested) and isinstance(loading, fields.Nested):
            if dumping.many != loading.many or not isinstance(dumping.nested, type) \
                    or not isinstance(loading.nested, type):
                raise TypeError(f"{legacy.__name__}.{name}: nested schemas do not pair")
            field.nested = straight(loading.nested, dumping.nested)  # type: ignore[attr-defined]
            field._schema = None  # type: ignore[attr-defined]
        elif not _unchanged_by_dump(loading, dumping):
            raise TypeError(f"{legacy.__name__}.{name}: the dump would change what "
                            f"{rss.__name__}.{name} loads")
        field.attribute = dumping.data_key or name
        derived[name] = field
    return type(f"{rss.__name__}AsLegacy", (rss,), derived)


def straight_result(item: type[Schema]) -> type[Schema]:
    """Return a schema loading a single-object ``result`` whose ``data`` is ``item`` or null."""
    return RssSchema.from_dict({"data": fields.Nested(item, allow_none=True)},
                               name=f"RssResultOf{item.__name__}")


def _no_hooks(schema: type[Schema]) -> None:
    if any(schema._hooks.values()):
        raise TypeError(f"{schema.__name__} has hooks: derive nothing from it")


def _unchanged_by_dump(loading: fields.Field[Any], dumping: fields.Field[Any]) -> bool:
    """Return whether ``dumping`` dumps every value ``loading`` loads unchanged."""
    if type(dumping) is fields.Raw:
        return True
    if type(dumping) is fields.Integer:
        return isinstance(loading, _INTEGERS) and not dumping.as_string
    if type(dumping) is fields.String:
        return isinstance(loading, _TEXTS)
    if type(dumping) is fields.List:
        return (type(dumping.inner) is fields.String and isinstance(loading, LooseList)
                and isinstance(loading.inner, _TEXTS))
    target = getattr(dumping, "nested", None)
    if type(dumping) is fields.Nested and not dumping.many and isinstance(target, type) \
            and issubclass(target, Schema):
        shape = getattr(loading, "LEGACY_SHAPE", None)
        nested = target._declared_fields
        _no_hooks(target)
        return shape is not None and list(shape) == [
            field.data_key or name for name, field in nested.items()] and all(
            type(field) is fields.String for field in nested.values())
    return False


def straight_page(schema: type[LegacyPageSchema], requested: dict[str, Any],
                  loaded: dict[str, Any]) -> dict[str, Any]:
    """Return the legacy Page ``schema`` dumps for ``loaded`` items already in legacy JSON.

    What ``schema`` would do with ``page_of(requested, loaded)``: its members in its order
    under their wire names, the optional ones left out when null.
    """
    page = page_of(requested, loaded)
    answer = {}
    for name, key in _page_keys(schema):
        value = page[name]
        if value is not None or key not in schema.OPTIONAL:
            answer[key] = value
    return answer


_PAGE_KEYS: dict[type[LegacyPageSchema], tuple[tuple[str, str], ...]] = {}


def _page_keys(schema: type[LegacyPageSchema]) -> tuple[tuple[str, str], ...]:
    keys = _PAGE_KEYS.get(schema)
    if keys is None:
        declared = schema._declared_fields
        if [type(field) for field in declared.values()] != [
                fields.Integer, fields.Integer, fields.Nested, fields.Integer]:
            raise TypeError(f"{schema.__name__} is not the Page envelope")
        keys = _PAGE_KEYS[schema] = tuple((name, field.data_key or name)
                                          for name, field in declared.items())
    return keys
