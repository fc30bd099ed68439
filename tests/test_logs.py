"""The shim's log lines: one JSON object per line, whatever the values hold."""

from __future__ import annotations

import json
import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shim import logs


def format_line(message: str, *args: object) -> str:
    record = logging.LogRecord("shim.test", logging.WARNING, __file__, 1, message, args, None)
    logs.RequestContextFilter().filter(record)
    return logs.JsonFormatter().format(record)


def test_a_line_is_one_json_object_with_the_common_fields():
    record = json.loads(format_line("seller %s", "main"))
    assert record["level"] == "WARNING" and record["logger"] == "shim.test"
    assert record["message"] == "seller main" and record["request_id"] is None
    assert record["time"].endswith("Z")


@pytest.mark.parametrize("breaker", ["\n", "\r", "\x0b", "\x1c", "\x7f", "\x85", "\u2028",
                                     "\u2029"])
def test_no_value_can_break_a_line(breaker):
    line = format_line("path %s", f"/healthz{breaker}forged")
    assert line.splitlines() == [line]
    assert json.loads(line)["message"] == f"path /healthz{breaker}forged"


def json_dumps_escaped(line: object) -> str:
    """What a line is: json.dumps's text, every line breaker escaped (no shortcut taken)."""
    return json.dumps(line, default=str, ensure_ascii=False).translate(logs._LINE_BREAKERS)


# Text near the line breakers and the ASCII/non-ASCII border, and any text.
_TEXT = st.one_of(st.text(alphabet=st.sampled_from("a\n\x1f\x7f\x80\x85\x9f\xa0\u2028\u2029")),
                  st.text())
_VALUES = st.one_of(_TEXT, st.integers(), st.floats(), st.none(), st.booleans(),
                    st.lists(_TEXT, max_size=3))


@given(message=_TEXT, value=_VALUES, key=st.sampled_from(["path", "client", "ms", "_x"]))
def test_a_line_is_json_dumps_with_every_line_breaker_escaped(message, value, key):
    record = logging.LogRecord("shim.test", logging.INFO, __file__, 1, "%s", (message,), None)
    setattr(record, key, value)
    line = logs.JsonFormatter().format(record)
    assert line == json_dumps_escaped(json.loads(line))
    assert line.splitlines() == [line]


@given(st.lists(st.floats(min_value=-1e9, max_value=4e9), min_size=1, max_size=20)
       .flatmap(lambda starts: st.permutations([t + d for t in starts for d in (0, 0.4, 1)])))
def test_the_time_is_strftime_s_for_every_record_in_any_order(times):
    formatter = logs.JsonFormatter()  # one formatter: it keeps the last second's text
    for created in times:
        record = logging.makeLogRecord({"created": created, "msecs": (created % 1) * 1000})
        assert formatter.format_time(record) == (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int(record.msecs):03d}Z")


def test_a_value_json_cannot_write_is_written_as_its_str():
    record = logging.LogRecord("shim.test", logging.INFO, __file__, 1, "m", (), None)
    record.when = logs  # a module: json.dumps's default=str
    assert json.loads(logs.JsonFormatter().format(record))["when"] == str(logs)


def test_a_level_name_is_checked():
    assert logs.level_name(" info ") == "INFO"
    with pytest.raises(ValueError, match="not a log level"):
        logs.level_name("loud")


def test_configure_replaces_its_own_handler_and_keeps_others():
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        logs.configure("warning")
        logs.configure("info")
        ours = [h for h in root.handlers if isinstance(h, logs._ShimHandler)]
        assert len(ours) == 1 and root.level == logging.INFO
        assert [h for h in root.handlers if h not in ours] == [
            h for h in before if not isinstance(h, logs._ShimHandler)]
    finally:
        root.handlers[:] = before
        root.setLevel(level)
