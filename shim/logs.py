"""JSON log lines that tie a legacy request to the platform's ``request_id``s.

One setup for every way the shim runs: ``configure()`` for the CLI, the demo and
``serve --dev``, ``dict_config()`` (the same handler, filters and formatter) for gunicorn's
master and workers, whose own lines and access lines become JSON lines too.

Every record gets ``request_id`` (the legacy request's, from the ``X-Request-Id`` it came
with or a fresh one) when it is logged while a request is served, and
``upstream_request_ids`` once the platform has answered. Secrets never reach a record in the
first place (see ``shim.upstream.redact``); this module only shapes lines, one per record,
with every control character escaped so that no value can start a line of its own.
"""

from __future__ import annotations

import json
import logging
import logging.config
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from shim.upstream import redact
from shim.upstream.redact import RedactSecretsFilter

_STANDARD = frozenset(vars(logging.makeLogRecord({})))
# json.dumps escapes U+0000-U+001F; these other characters end a line for some readers
# (str.splitlines, editors, log shippers), so they are escaped as well.
_LINE_BREAKERS = {code: f"\\u{code:04x}" for code in (*range(0x7F, 0xA0), 0x2028, 0x2029)}
# json.dumps(..., default=str, ensure_ascii=False) without building an encoder per record.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)
# What an access line carries, from gunicorn's atoms: field name -> atom.
_ACCESS_FIELDS = {"remote": "h", "method": "m", "path": "U", "status": "s", "bytes": "B",
                  "ms": "M", "request_id": "{x-request-id}o"}


class RequestContextFilter(logging.Filter):
    """Adds the current legacy request id (and upstream request ids) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Flask is looked up, not imported: gunicorn's master loads this module with its
        # configuration, which imports no web framework; without Flask, no request either.
        flask = sys.modules.get("flask")
        if flask is None or hasattr(record, "request_id") or not flask.has_request_context():
            return True
        record.request_id = flask.g.get("request_id")
        upstream = flask.g.get("upstream_request_ids")
        if upstream:
            record.upstream_request_ids = list(upstream)
        return True


class AccessFieldsFilter(logging.Filter):
    """Turns gunicorn's access-log atoms into fields (request_id from ``X-Request-Id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping) and not hasattr(record, "request_id"):
            for name, atom in _ACCESS_FIELDS.items():
                value = atoms[atom]  # gunicorn's SafeAtoms: "-" for what the request lacks
                if isinstance(value, str) and value.isdigit() and name != "path":
                    value = int(value)
                setattr(record, name, None if value in ("-", None) else value)
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    # The second of the last record's time and its text: most lines share it with the one
    # before, and strftime costs as much as the rest of the time field.
    _last_second: tuple[int, str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.format_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        text = _ENCODER.encode(line)
        if text.isascii() and "\x7f" not in text:  # no line breaker: ASCII's only one is DEL
            return text
        return text.translate(_LINE_BREAKERS)

    def format_time(self, record: logging.LogRecord) -> str:
        """Return the record's time in UTC to the millisecond: ``2026-12-06T07:41:36.785Z``."""
        second = math.floor(record.created)  # as gmtime rounds it
        last = self._last_second
        if last is None or last[0] != second:
            last = self._last_second = (
                second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{last[1]}.{int(record.msecs):03d}Z"


def level_name(level: str) -> str:
    """Return the logging level name for ``level`` (``info``: ``INFO``); ValueError if none."""
    name = level.strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError(f"{level!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return name


def dict_config(level: str = "INFO", *, access_log: str | None = "-") -> dict[str, Any]:
    """Return the ``logging.config`` dictionary of the shim's JSON lines on stderr.

    gunicorn's error and access loggers are configured too; ``access_log`` is ``-``
    (stderr), a file path, or ``None`` (no access lines).
    """
    name = level_name(level)
    handlers: dict[str, Any] = {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json",
                   "filters": ["redact", "request"], "stream": "ext://sys.stderr"}}
    access_handlers = []
    if access_log and access_log != "-":
        handlers["access"] = {"class": "logging.FileHandler", "filename": access_log,
                              "formatter": "json", "filters": ["redact"]}
        access_handlers = ["access"]
    elif access_log:
        access_handlers = ["stderr"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestContextFilter},
                    "redact": {"()": RedactSecretsFilter},
                    "access": {"()": AccessFieldsFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": handlers,
        "root": {"level": name, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": name, "handlers": ["stderr"], "propagate": False},
            # Access lines are INFO: the configured level decides whether they show.
            "gunicorn.access": {"level": name, "handlers": access_handlers,
                                "filters": ["access"], "propagate": False},
        },
    }


class _ShimHandler(logging.StreamHandler[TextIO]):
    """The stderr handler ``configure`` installs, told apart from handlers of others."""


def configure(level: str = "INFO") -> None:
    """Send every record to stderr as JSON lines at ``level`` (the CLI, demo, ``--dev``).

    The handler is the one ``dict_config()`` describes; handlers others added to the root
    logger (a test's capture) stay, an earlier call's handler is replaced.
    """
    handler = _ShimHandler()
    handler.addFilter(RedactSecretsFilter())
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _ShimHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level_name(level))
    redact.install()  # urllib3's URL lines, before any handler (a test's capture too) sees them
