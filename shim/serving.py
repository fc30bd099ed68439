"""A WSGI app on a real local socket, in a thread (tests, the demo) or in the foreground.

Werkzeug's request log is replaced: its lines carry full query strings, and both the
legacy API (``access_token``) and the platform (``access_token``, ``sign``) put secrets there.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from shim.upstream.redact import redact

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.05  # how fast stop() is noticed; werkzeug's default is 0.5 s


class QuietRequestHandler(WSGIRequestHandler):
    """A request handler that logs paths without query strings, and redacts everything else."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log method, path and status at DEBUG; the query string stays out."""
        path = urlsplit(getattr(self, "path", "")).path
        log.debug("%s %s -> %s", getattr(self, "command", "-"), path, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        """Log server messages (errors) with any secret parameter values redacted."""
        text = message % args if args else message
        getattr(log, type if type in ("info", "warning", "error") else "info")(
            "%s", redact(text).rstrip())


class LocalServer:
    """Serves ``app`` on ``host:port`` (0: any free port) from a daemon thread.

    Use as a context manager, or ``start()``/``stop()``; ``serve_forever()`` serves in the
    calling thread instead.
    """

    def __init__(self, app: WSGIApplication, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: Any = None) -> None:
        self.app = app
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=QuietRequestHandler,
            ssl_context=ssl_context)
        scheme = "https" if ssl_context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        self.port = self._server.server_port
        self.base_url = f"{scheme}://{shown}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> LocalServer:
        """Start serving in a daemon thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S},
                name=f"server-{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C)."""
        self._server.serve_forever(poll_interval=POLL_INTERVAL_S)

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
