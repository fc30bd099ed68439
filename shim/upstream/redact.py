"""Keep secrets that travel in query strings out of urllib3's log records.

urllib3 logs full request URLs at DEBUG (and on retries at WARNING); Lazada GET calls carry
``access_token`` and ``sign`` in that URL. The filter rewrites those records in place, so the
secrets never reach any handler, whatever level an operator turns on.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = ("access_token", "refresh_token", "sign", "code", "client_secret", "app_secret")
_PATTERN = re.compile(r"\b(" + "|".join(SECRET_PARAMS) + r")=[^&\s'\"),]*")
REDACTED = "[REDACTED]"
# A logger's filters see only the records made on that logger, not its children's: name each
# urllib3 module that logs a URL.
_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection",
            "urllib3.poolmanager")


def redact(text: str) -> str:
    """Return ``text`` with the value of every secret query parameter replaced."""
    if "=" not in text:  # the pattern needs name=value: a line without "=" has no secret value
        return text
    return _PATTERN.sub(r"\1=" + REDACTED, text)


class RedactSecretsFilter(logging.Filter):
    """A logging filter that redacts secret query parameters from the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactSecretsFilter()


def install(names: tuple[str, ...] = _LOGGERS) -> None:
    """Attach the filter to the named loggers, urllib3's by default (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
