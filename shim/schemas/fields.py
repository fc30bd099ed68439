"""Fields shared by the schemas: strict ones for legacy input, tolerant ones for RSS answers.

Strictness matters on the legacy side beyond tidiness: Lazada's signature joins parameter
names and values with no separator, so a value like ``3limit5`` could forge another parameter
set. Every number a client sends is therefore ASCII digits in range, or it is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing

T = TypeVar("T")

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
_ASCII_INT = re.compile(r"-?[0-9]+")  # re's [0-9] is ASCII only, unlike str.isdigit()
_ASCII_DIGITS = re.compile(r"[0-9]+")
_ASCII_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")


def parse_ascii_int(value: Any, *, minimum: int, maximum: int, signed: bool = True) -> int:
    """Return ``value`` as an int if it is an int or ASCII-digit text within range.

    Raises ``ValueError`` with a message fit for a client otherwise (floats, NaN, booleans,
    Unicode digits, blanks and signs are all refused).
    """
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (_ASCII_INT if signed else _ASCII_DIGITS).fullmatch(value):
        if len(value) > 20:  # more digits than any int64: refuse before int() does the work
            raise ValueError(f"must be between {minimum} and {maximum}")
        number = int(value)
    else:
        raise ValueError("must be an integer")
    if not minimum <= number <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}")
    return number


class StrictInteger(fields.Field[int]):
    """An integer given as a JSON number or ASCII-digit text, within [minimum, maximum]."""

    def __init__(self, *, minimum: int = 0, maximum: int = INT32_MAX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minimum, self.maximum = minimum, maximum

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> int:
        try:
            return parse_ascii_int(value, minimum=self.minimum, maximum=self.maximum)
        except ValueError as error:
            raise ValidationError(str(error)) from None

    def _serialize(self, value: int | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class DigitsId(StrictInteger):
    """An id the platform stores as a Java Long: ASCII digits, 0..int64 max."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(minimum=0, maximum=INT64_MAX, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> int:
        if isinstance(value, str) and not _ASCII_DIGITS.fullmatch(value):
            raise ValidationError("must be an id made of the digits 0-9")
        return super()._deserialize(value, attr, data, **kwargs)


class CommaList(fields.Field[list[Any]]):
    """A comma-separated query value, loaded as a list with each part checked by ``inner``."""

    def __init__(self, inner: fields.Field[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> list[Any]:
        if not isinstance(value, str):
            raise ValidationError("must be a comma-separated list")
        # Spaces around items are tolerated; any other whitespace (CR, LF, tabs) is refused by
        # the item's own field, so it can never reach a signed parameter.
        parts = [part.strip(" ") for part in value.split(",")]
        if any(part == "" for part in parts) and value.strip(" ") != "":
            raise ValidationError("must not contain empty items")
        items: list[Any] = []
        errors: dict[int, str] = {}
        for index, part in enumerate(p for p in parts if p):
            try:
                items.append(self.inner.deserialize(part))
            except ValidationError as error:
                errors[index] = f"{part!r}: " + "; ".join(_messages(error))
        if errors:
            raise ValidationError(list(errors.values()))
        return items


def _messages(error: ValidationError) -> list[str]:
    messages = error.messages
    return messages if isinstance(messages, list) else [str(messages)]


# --- tolerant fields for RSS answers (reference section 7) --------------------------------

class LeanField(fields.Field[T]):
    """A field that loads a present value without marshmallow's generic work.

    ``Field.deserialize`` checks for a missing or null value, runs field-level pre-load
    functions, ``_deserialize``, then builds an ``And`` of the validators and runs it, then
    post-load functions: per value, the bulk of a 100-item page's load (issue 12). For a
    present, non-null value of a field with no validators and no such functions, all that
    is ``_deserialize`` alone; anything else takes the generic path, so the answers and the
    errors are marshmallow's own (``tests/test_straight.py`` compares the two).
    """

    def deserialize(self, value: Any, attr: str | None = None,
                    data: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        if (value is None or value is missing or self.validators or self.pre_load
                or self.post_load):
            return super().deserialize(value, attr, data, **kwargs)
        return self._deserialize(value, attr, data, **kwargs)


class LooseInteger(LeanField[int]):
    """An int the platform may send as a number, numeric text or an integral float."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError("not a number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip().strip('"')
            if _ASCII_INT.fullmatch(text):
                return int(text)
            # float() alone would also take "1_000", "nan" and non-ASCII digits.
            if _ASCII_DECIMAL.fullmatch(text):
                number = float(text)
                if math.isfinite(number) and number.is_integer():
                    return int(number)
        raise ValidationError("not an integer")


class LooseString(LeanField[str]):
    """Text the platform may send as a string or a number (ids); ``None`` becomes ``""``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        if not kwargs.get("required"):
            kwargs.setdefault("load_default", "")
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return _text(value)

    def deserialize(self, value: Any, attr: str | None = None,
                    data: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        loaded = super().deserialize(value, attr, data, **kwargs)
        return "" if loaded is None else loaded


class LooseOptionalString(LeanField[str]):
    """Optional text the platform may send as a string or a number; null or absent stays absent.

    Unlike ``LooseString`` it never invents ``""``: the legacy output leaves the member out.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> str:
        if isinstance(value, bool):
            raise ValidationError("not text")
        return _text(value)


def _text(value: Any) -> str:
    # An id sent as 1837.0 must read "1837", or it would never equal the id a client sends.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValidationError("not text")


Plan = tuple[tuple[str, str, fields.Field[Any]], ...]  # (wire name, loaded key, field)
Loader = Callable[[Any], dict[str, Any]]
_UNPLANNED: Any = object()


class LooseNestedList(fields.Nested):
    """Objects of ``nested`` in a list the platform may send as ``null`` or leave out.

    Both load as ``[]``. When ``nested`` is a flat schema (no hooks, unknown members
    excluded), a list of objects is loaded by a function generated from the schema's load
    fields (``compile_loader``) that does what ``Schema._deserialize`` does, without the
    schema's per-item machinery (a nested ``Schema.load`` per product for
    ``pickupLocations`` was a fifth of a page's load). Any error, and anything else, takes
    marshmallow's path, which gives the exact error.
    """

    def __init__(self, nested: type[Schema], **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        kwargs.setdefault("load_default", list)
        super().__init__(nested, many=True, **kwargs)
        self._loader: Loader | None = _UNPLANNED

    def deserialize(self, value: Any, attr: str | None = None,
                    data: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        loader = self._loader if self._loader is not _UNPLANNED else self._make_loader()
        if loader is not None and type(value) is list and not kwargs:
            try:
                return [loader(item) for item in value]
            except ValidationError:
                pass  # marshmallow's path below raises the exact error
        loaded = super().deserialize(value, attr, data, **kwargs)
        return [] if loaded is None else loaded

    def plan(self) -> Plan | None:
        """Return how to load one item by hand, or None when only the schema may do it."""
        schema = self.schema
        flat = (not (self.validators or self.pre_load or self.post_load)
                and self.unknown in (None, EXCLUDE) and schema.unknown == EXCLUDE
                and self.only is None and not self.exclude and schema.dict_class is dict
                and not any(schema._hooks.values()))
        plan = tuple((field.data_key if field.data_key is not None else name,
                      field.attribute or name, field)
                     for name, field in schema.load_fields.items())
        return plan if flat and not any("." in key for _, key, _ in plan) else None

    def _make_loader(self) -> Loader | None:
        plan = self.plan()
        self._loader = None if plan is None else compile_loader(plan, self.schema)
        return self._loader


def load_flat(item: Any, plan: Plan) -> dict[str, Any]:
    """Return ``item`` loaded as ``Schema._deserialize`` would, or raise ValidationError.

    The reference ``compile_loader``'s functions are checked against (tests/test_straight.py).
    """
    if type(item) is not dict:
        raise ValidationError("not an object")
    loaded = {}
    for name, key, field in plan:
        value = field.deserialize(item.get(name, missing), name, item)
        if value is not missing:
            loaded[key] = value
    return loaded


# Fields whose deserialize returns a value of exactly this type unchanged (LeanField's path,
# then _deserialize: ``isinstance(value, int)`` returns it; ``_text`` returns ``str(value)``).
_UNCHANGED = {LooseInteger: "int", LooseString: "str", LooseOptionalString: "str"}


def compile_loader(plan: Plan, schema: Schema) -> Loader:
    """Return a function that does ``load_flat(item, plan)``, generated for ``plan``.

    The loop is unrolled, and a value whose type a field returns unchanged skips the field
    (only for the exact field classes of ``_UNCHANGED``, with no validators or field-level
    functions); every other value goes through the field's ``deserialize``, as in the loop.
    """
    source = ["def load(item):",
              "    if type(item) is not dict:",
              "        raise ValidationError('not an object')",
              "    loaded = {}"]
    scope: dict[str, Any] = {"ValidationError": ValidationError, "missing": missing}
    for index, (name, key, field) in enumerate(plan):
        scope[f"field{index}"] = field
        source.append(f"    value = item.get({name!r}, missing)")
        unchanged = _UNCHANGED.get(type(field))
        call = f"field{index}.deserialize(value, {name!r}, item)"
        if unchanged and not (field.validators or field.pre_load or field.post_load):
            source += [f"    if type(value) is not {unchanged}:", f"        value = {call}"]
        else:
            source.append(f"    value = {call}")
        source += ["    if value is not missing:", f"        loaded[{key!r}] = value"]
    source.append("    return loaded")
    # The source is built from the schema's own field names, written as Python literals.
    exec(compile("\n".join(source), f"<loader of {type(schema).__name__}>", "exec"), scope)  # noqa: S102
    loader: Loader = scope["load"]
    return loader


class LooseList(LeanField[list[Any]], fields.List[Any]):
    """A list the platform may send as ``null`` or leave out; both load as ``[]``."""

    def __init__(self, inner: fields.Field[Any], **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        kwargs.setdefault("load_default", list)
        super().__init__(inner, **kwargs)

    def deserialize(self, value: Any, attr: str | None = None,
                    data: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        loaded = super().deserialize(value, attr, data, **kwargs)
        return [] if loaded is None else loaded
