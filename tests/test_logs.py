"""The shim's log lines: one JSON object per line, whatever the values hold."""

from __future__ import annotations

import json
import logging

import pytest

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


@pytest.mark.parametrize("breaker", ["\n", "\r", "\x0b", "\x1c", "\x85", "\u2028", "\u2029"])
def test_no_value_can_break_a_line(breaker):
    line = format_line("path %s", f"/healthz{breaker}forged")
    assert line.splitlines() == [line]
    assert json.loads(line)["message"] == f"path /healthz{breaker}forged"


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
