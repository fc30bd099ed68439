"""JSON log lines that tie a legacy request to the platform's ``request_id``s.

Every record gets ``request_id`` (the legacy request's, from the ``X-Request-Id`` it came
with or a fresh one) when it is logged while a request is served. Secrets never reach a
record in the first place (see ``shim.upstream.redact``); this module only shapes lines.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, TextIO

from flask import g, has_request_context

_STANDARD = frozenset(vars(logging.makeLogRecord({})))


class RequestContextFilter(logging.Filter):
    """Adds the current legacy request id (and upstream request ids) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = g.get("request_id")
            upstream = g.get("upstream_request_ids")
            if upstream:
                record.upstream_request_ids = list(upstream)
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _ShimHandler(logging.StreamHandler[TextIO]):
    """The stderr handler ``configure`` installs, told apart from handlers of others."""


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send the root logger's records to stderr, as JSON lines or as plain text."""
    handler = _ShimHandler()
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        defaults={"request_id": "-"}))
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _ShimHandler)]:
        root.removeHandler(previous)  # ours from an earlier call; others stay
    root.addHandler(handler)
    root.setLevel(level.upper())


def dict_config(level: str = "INFO") -> dict[str, Any]:
    """Return a ``logging.config`` dictionary equal to ``configure(level, "json")``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestContextFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "filters": ["request"]}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stderr"],
                               "propagate": False},
            "gunicorn.access": {"level": level.upper(), "handlers": ["stderr"],
                                "propagate": False},
        },
    }
