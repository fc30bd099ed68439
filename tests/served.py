"""The shim's real entry points as subprocesses, and raw HTTP/1.1 over a socket to them.

``redmart-shim serve`` (gunicorn), ``serve --dev`` (Werkzeug's server) and ``demo`` are what
operators run; tests of what clients see on the wire (status lines, the gateway's 404) use
them rather than an app object, and read the bytes the server wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from processes import Processes

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3} [^\r\n]*)\r\n")


def free_port() -> int:
    """Return a TCP port on the loopback that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """Return this process's environment without any SHIM_* setting, plus ``settings``."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("SHIM_")}
    return {**inherited, **settings}


# gunicorn on the shim's app as the image runs it, without serve's nginx in front:
# ``Server(GUNICORN, env, port, log, module="gunicorn")`` (it binds to SHIM_BIND).
GUNICORN = ["--config", "python:shim.gunicorn_conf", "shim.app:create_app()"]


@dataclass(frozen=True)
class Server:
    """One server process to run: ``python -m <module> *args``, answering on ``port``."""

    args: list[str]
    env: dict[str, str]
    port: int
    log: Path  # its stdout and stderr
    module: str = "shim"

    @property
    def base_url(self) -> str:
        """Return the URL the server answers on."""
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running(args: list[str], env: dict[str, str], port: int, log: Path,
            timeout: float = 60.0, *, module: str = "shim") -> Iterator[str]:
    """Run ``python -m <module> *args`` (``shim`` by default) until the block ends; yield its
    base URL once healthy."""
    with running_all([Server(args, env, port, log, module)], timeout) as (base_url,):
        yield base_url


@contextmanager
def running_all(servers: Sequence[Server], timeout: float = 60.0) -> Iterator[list[str]]:
    """Start every server at once, run them until the block ends; yield their base URLs (in
    order) once every one answers its /healthz.

    Each command leads its own process group (gunicorn's workers included): it is asked to
    stop with SIGTERM, and whatever is left of the group is killed.
    """
    children = Processes()  # SIGINT at its default in the child (tests/processes.py)
    started = []
    try:
        for server in servers:
            with server.log.open("wb") as output:  # the child keeps its own descriptor
                started.append(children.start(
                    [sys.executable, "-m", server.module, *server.args], env=server.env,
                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True))
        waiting = dict(enumerate(started))  # index in ``servers``: process
        deadline = time.monotonic() + timeout
        while waiting:
            for index, process in list(waiting.items()):
                server = servers[index]
                assert process.poll() is None, \
                    f"{server.args} exited: {server.log.read_text()[-2000:]}"
                with contextlib.suppress(requests.RequestException):  # not listening yet
                    if requests.get(server.base_url + "/healthz", timeout=0.5).status_code == 200:
                        del waiting[index]
            assert time.monotonic() < deadline, \
                f"{[servers[index].args for index in waiting]} never became healthy"
            if waiting:
                time.sleep(0.1)
        yield [server.base_url for server in servers]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        children.close()


@dataclass(frozen=True)
class RawAnswer:
    """One answer as the server wrote it: the status line's code and phrase, headers, body."""

    status_line: str  # "404 Not Found": what follows "HTTP/1.1 "
    headers: dict[str, str]  # names lower-cased here, for lookup
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


def exchange(base_url: str, method: str, path: str, *, headers: dict[str, str] | None = None,
             body: bytes = b"") -> RawAnswer:
    """Send one HTTP/1.1 request on a fresh connection; return the answer as written."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    if body or method in ("POST", "PATCH", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    received = b""
    with socket.create_connection((host, int(port)), timeout=15) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        while chunk := connection.recv(65536):
            received += chunk
    match = STATUS_LINE.match(received)
    assert match, received[:200]
    head, _, payload = received.partition(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    return RawAnswer(match.group(1).decode("latin-1"),
                     {name.lower(): value for name, value in fields.items()}, payload)
