"""The response line and header names as legacy clients saw them on the wire.

Header names: lower case by default, as HTTP/2 delivers names. They are case-insensitive in
HTTP, but at least one real legacy client looks the ETag up under the exact key ``etag``.

Status lines: nginx (under Kong) sent reason phrases in their RFC form (``404 Not Found``),
where Werkzeug writes them in upper case (``404 NOT FOUND``); clients that parse the raw
status line see the difference. gunicorn and Werkzeug's own server both write the status a
WSGI app hands to ``start_response`` as it is, so rewriting it here fixes both.

Rewriting at the WSGI edge catches every response the app emits, including Werkzeug's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# The RFC reason phrases (Python's table), keeping the two nginx and RFC 7231/4918 used
# that Python 3.13 renamed after RFC 9110 ("Content Too Large", "Unprocessable Content").
REASONS: dict[int, str] = {status.value: status.phrase for status in HTTPStatus} | {
    413: "Request Entity Too Large", 422: "Unprocessable Entity"}


def rfc_status(status: str) -> str:
    """Return ``status`` (``"404 NOT FOUND"``) with its code's RFC reason phrase."""
    code = status[:3]
    phrase = REASONS.get(int(code)) if code.isdigit() else None
    return f"{code} {phrase}" if phrase else status


class StatusLineMiddleware:
    """WSGI middleware that gives every response its RFC reason phrase (``404 Not Found``)."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        def rewritten(status: str, headers: list[tuple[str, str]],
                      exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
            return start_response(rfc_status(status), headers, exc_info)

        return self.app(environ, rewritten)


class HeaderCaseMiddleware:
    """WSGI middleware that lower-cases response header names (``case="lower"``)."""

    def __init__(self, app: WSGIApplication, case: str = "lower") -> None:
        self.app = app
        self.lower = case == "lower"

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        if not self.lower:
            return self.app(environ, start_response)

        def lowered(status: str, headers: list[tuple[str, str]],
                    exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
            return start_response(status, [(name.lower(), value) for name, value in headers],
                                  exc_info)

        return self.app(environ, lowered)
