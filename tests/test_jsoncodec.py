"""``shim.jsoncodec``: orjson only where its answer is exactly the standard library's.

Reading: for any text, ``loads`` returns what ``json.loads`` returns (type-exact) or raises
as it does. Writing: whenever ``dumps_compact`` answers, the text is ``json.dumps``'s with
the legacy provider's options, byte for byte. And the cases issue 12 named: an integer
beyond 64 bits read from a platform answer stays exact, and is written back exact.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim import jsoncodec

EXAMPLES = settings(max_examples=500, derandomize=True, database=None, deadline=None)


def exact(value: Any) -> Any:
    """Return ``value`` with every number tagged by its type (1, 1.0, True and NaN differ)."""
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    return (type(value).__name__, value)


def read(reader, body: bytes) -> Any:
    try:
        return "ok", exact(reader(body))
    except (ValueError, RecursionError) as error:  # decode() catches exactly these
        return "refused", type(error).__name__ == "RecursionError"


numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
                        fullmatch=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**80, 2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


@EXAMPLES
@given(number=numbers)
def test_any_number_reads_as_json_reads_it(number):
    body = f'{{"rpc":{number},"x":[{number}]}}'.encode()
    assert read(jsoncodec.loads, body) == read(json.loads, body)


@EXAMPLES
@given(document=documents)
def test_any_document_reads_as_json_reads_it(document):
    for body in (json.dumps(document).encode(), json.dumps(document, ensure_ascii=False)
                 .encode("utf-8", "surrogatepass")):
        assert read(jsoncodec.loads, body) == read(json.loads, body)


@EXAMPLES
@given(body=st.binary(max_size=40) | st.text(max_size=20).map(
    lambda text: text.encode("utf-8", "surrogatepass")))
def test_any_bytes_read_as_json_reads_them(body):
    assert read(jsoncodec.loads, body) == read(json.loads, body)


@pytest.mark.parametrize("text", [
    "123456789012345678901234567890", "-9223372036854775809", "18446744073709551616",
    "9223372036854775808", "1e400", "-1e400", "1.7976931348623159e308", "4.9e-324", "NaN",
    "-Infinity", '"\\ud800"', "\ufeff[1]", '{"a":1,"a":2}', "-0", "-0.0", "[" * 999 + "]" * 999,
    "[" * 1024 + "]" * 1024, '{"a":' * 900 + "1" + "}" * 900, "1\x00", " [1] ",
])
def test_the_edge_cases_read_as_json_reads_them(text):
    body = text.encode("utf-8", "surrogatepass")
    assert read(jsoncodec.loads, body) == read(json.loads, body)


def test_an_integer_beyond_64_bits_stays_exact():
    body = b'{"rpc":123456789012345678901234567890,"total":-9223372036854775809}'
    document = jsoncodec.loads(body)
    assert document == {"rpc": 123456789012345678901234567890, "total": -9223372036854775809}
    assert jsoncodec.dumps_compact(document) is None  # orjson cannot write it: json does


def legacy_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, sort_keys=False)


@EXAMPLES
@given(document=documents)
def test_whatever_orjson_writes_is_what_json_writes(document):
    written = jsoncodec.dumps_compact(document)
    assert written is None or written == legacy_dumps(document)


class Colour(enum.IntEnum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Text(str):
    pass


@pytest.mark.parametrize("value", [
    1.5, 1e-05, 1e16, float("nan"), float("inf"), -0.0, [0.1], {"a": 2.5}, None, {"a": None},
    2**64, -2**63 - 1, "caf\u00e9", "a\x7fb", "\ud800", "\U0001f600", {1: "a"},
    Point(1), datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1), Text("x"),
    {"x": Text("y")}, b"bytes", {"n": "ratio:1.5"},
])
def test_what_orjson_writes_differently_is_left_to_json(value):
    assert jsoncodec.dumps_compact(value) is None


@pytest.mark.parametrize("value", [Colour.RED, [[[]]], "1e5"])
def test_what_orjson_writes_alike_is_written_by_it(value):
    assert jsoncodec.dumps_compact(value) == legacy_dumps(value)


def test_a_uuid_is_written_as_its_string():
    assert jsoncodec.dumps_compact(uuid.UUID(int=7)) == legacy_dumps(str(uuid.UUID(int=7)))


def test_a_plain_answer_is_written_by_orjson():
    answer = {"page": 1, "pageSize": 50, "items": [{"rpc": 100150, "title": "Oats 1.5 kg",
                                                     "barcodes": ["111"], "ok": True}]}
    assert jsoncodec.dumps_compact(answer) == legacy_dumps(answer)
