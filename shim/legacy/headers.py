"""Response header-name case: lower case by default, as HTTP/2 delivers names.

Header names are case-insensitive in HTTP, but at least one real legacy client looks the
ETag up under the exact key ``etag``. Rewriting at the WSGI edge catches every header the
app emits, including the ones Werkzeug adds.
"""

from __future__ import annotations


class HeaderCaseMiddleware:
    """WSGI middleware that lower-cases response header names (``case="lower"``)."""

    def __init__(self, app, case: str = "lower") -> None:
        self.app = app
        self.lower = case == "lower"

    def __call__(self, environ, start_response):
        if not self.lower:
            return self.app(environ, start_response)

        def lowered(status, headers, exc_info=None):
            return start_response(status, [(name.lower(), value) for name, value in headers],
                                  exc_info)

        return self.app(environ, lowered)
