"""Business parameter specs: which parameters an API takes, and how their text is read.

A parser turns the wire text into a value or raises ``ValueError``, which the gateway answers
with ``InvalidParameter``. Empty values count as absent, as on the platform's Java side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shim.sandbox.gateway import GatewayRefusal
from shim.sandbox.seed import JOB_STATUSES

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_PAGE_SIZE = 100
_NUMBER = re.compile(r"^-?[0-9]{1,19}$")


@dataclass(frozen=True)
class Param:
    """One business parameter: its name, its parser, and whether it is required."""

    name: str
    parse: Callable[[str], Any]
    required: bool = True


def number(text: str) -> int:
    """Read a Java ``Long``."""
    if not _NUMBER.match(text) or abs(int(text)) > INT64_MAX:
        raise ValueError(text)
    return int(text)


def text(value: str) -> str:
    """Read a String (any text)."""
    return value


def page(value: str) -> int:
    """Read a 1-based page number."""
    result = number(value)
    if result < 1:
        raise ValueError(value)
    return result


def page_size(value: str) -> int:
    """Read a page size between 1 and 100."""
    result = number(value)
    if not 1 <= result <= MAX_PAGE_SIZE:
        raise ValueError(value)
    return result


def id_list(value: str) -> list[int]:
    """Read a list of ids: a JSON array ``[1837,1838]`` or a plain comma list ``1837,1838``."""
    stripped = value.strip()
    if stripped.startswith("["):
        items = json.loads(stripped)
        if not isinstance(items, list):
            raise ValueError(value)
        items = [item if isinstance(item, str) else
                 str(item) if isinstance(item, int) and not isinstance(item, bool) else "x"
                 for item in items]
    else:
        items = [part.strip() for part in stripped.split(",")]
    return [number(item) for item in items]


def statuses(value: str) -> list[str]:
    """Read a comma list of pickup-job statuses (spaces around items are tolerated)."""
    items = [part.strip() for part in value.split(",")]
    if not all(item in JOB_STATUSES for item in items):
        raise ValueError(value)
    return items


def stock_update(value: str) -> int:
    """Read ``stockLotUpdateDTO``: ``{"quantityAtPickupLocation": <int or numeric string>}``."""
    document = json.loads(value)
    if not isinstance(document, dict):
        raise ValueError(value)
    quantity = document.get("quantityAtPickupLocation")
    if isinstance(quantity, str) and quantity.isascii() and quantity.isdigit():
        quantity = int(quantity)
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError(value)
    if not 0 <= quantity <= INT32_MAX:
        raise ValueError(value)
    return quantity


def read(spec: tuple[Param, ...], params: dict[str, str]) -> dict[str, Any]:
    """Return the parsed business parameters, refusing missing then invalid ones."""
    for param in spec:
        if param.required and not params.get(param.name):
            raise GatewayRefusal("MissingParameter", name=param.name)
    values: dict[str, Any] = {}
    for param in spec:
        raw = params.get(param.name)
        if not raw:
            continue
        try:
            values[param.name] = param.parse(raw)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            raise GatewayRefusal("InvalidParameter", name=param.name) from None
    return values
