"""Response header-name case: lower case by default, as HTTP/2 delivers names.

Header names are case-insensitive in HTTP, but at least one real legacy client looks the
ETag up under the exact key ``etag``. Rewriting at the WSGI edge catches every header the
app emits, including the ones Werkzeug adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


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
