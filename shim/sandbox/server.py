"""Run the sandbox on a real socket: ``SandboxServer`` in a thread, ``run`` in the foreground.

werkzeug's request log is replaced (``shim.serving.QuietRequestHandler``): its lines carry
the full query string, which holds access tokens and signatures on every GET call.

``down()`` and ``up()`` play a platform outage: the port stops answering (connections are
refused, open ones are cut), then the same app, with its state and ledger, serves the same
port again.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer

from shim.sandbox.app import create_sandbox_app, state_of
from shim.sandbox.config import SandboxConfig
from shim.sandbox.state import SandboxState
from shim.serving import QuietRequestHandler

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.01  # how fast stop() is noticed (tests start and stop many servers)


class SandboxServer:
    """The sandbox on an ephemeral local port, served from a daemon thread.

    Use as a context manager; ``api_url`` and ``auth_url`` are the same ``/rest`` base,
    since one server plays both api.lazada.sg and auth.lazada.com.
    """

    def __init__(self, config: SandboxConfig, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: Any = None) -> None:
        self.app = create_sandbox_app(config)
        self._host, self._ssl_context = host, ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._server = self._bind(port)
        self.port = self._server.server_port
        scheme = "https" if ssl_context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"{scheme}://{shown}:{self.port}"
        self._thread: threading.Thread | None = None
        self._down = False

    def _bind(self, port: int) -> BaseWSGIServer:
        return _TrackingServer(self, self._host, port)

    @property
    def api_url(self) -> str:
        """Return the base URL of the platform APIs (like https://api.lazada.sg/rest)."""
        return self.base_url + "/rest"

    @property
    def auth_url(self) -> str:
        """Return the base URL of the token APIs (like https://auth.lazada.com/rest)."""
        return self.api_url

    @property
    def state(self) -> SandboxState:
        """Return the running app's state (stock, tokens, ledger, faults)."""
        return state_of(self.app)

    def start(self) -> SandboxServer:
        """Start serving in a daemon thread; return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S},
                name=f"sandbox-{self._server.server_port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers, and close the listening socket."""
        self.state.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def down(self) -> None:
        """Play an outage: stop listening, cut open connections, wake sleeping handlers."""
        if self._down:
            return
        self._down = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        # Cut connections before waking sleeping handlers, so that no late answer gets out.
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.state.stopping.set()

    def up(self) -> SandboxServer:
        """End the outage: serve the same app and state on the same port again; return self."""
        if self._down:
            self.state.stopping.clear()
            self._server = self._bind(self.port)
            self._down = False
            self.start()
        return self

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _TrackingServer(ThreadedWSGIServer):
    """werkzeug's threaded server, remembering open connections so down() can cut them."""

    def __init__(self, owner: SandboxServer, host: str, port: int) -> None:
        super().__init__(host, port, owner.app, QuietRequestHandler,
                         ssl_context=owner._ssl_context)
        self._owner = owner

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: Any) -> None:
        """Remember the connection (kept-alive ones too), then serve it in a thread."""
        if isinstance(request, socket.socket):
            with self._owner._connections_lock:
                self._owner._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """Forget the connection, then close it."""
        if isinstance(request, socket.socket):
            with self._owner._connections_lock:
                self._owner._connections.discard(request)
        super().shutdown_request(request)


def run(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8800,
        ssl_context: Any = None) -> None:
    """Serve the sandbox in the foreground until interrupted."""
    server = SandboxServer(config, host, port, ssl_context)
    log.info("Lazada sandbox serving on %s (control API at %s/_sandbox)",
             server.api_url, server.base_url)
    try:
        server.serve_forever()
    finally:
        server.stop()
