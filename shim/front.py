"""The front ``serve`` puts on the public address: nginx, buffering whole requests for gunicorn.

gunicorn's gthread worker reads a request's headers in a pool thread with no deadline, so a
few dozen sockets that send one header line every few seconds hold every thread. nginx reads
them in an event loop instead, and hands gunicorn (on a private unix socket) only complete
requests:

    client ──> nginx on bind ──(whole requests)──> gunicorn on <runtime>/gunicorn.sock

- header and body read deadlines (``front_header_timeout_s``, ``front_body_timeout_s``);
- ``front_connections_per_address`` requests in progress per client address, past it 429
  (/healthz, /readyz and /metrics exempt: a saturated address never fails a probe);
- token calls (POST /oauth2/token, whose unknown client ids each cost a slow hash) at most
  ``front_token_rate_per_address`` a second per client address and ``front_token_rate`` from
  all together (each with its burst), past either the token endpoint's 429
  ``temporarily_unavailable`` at once, so a flood never reaches gunicorn;
- bodies over ``max_body_bytes`` refused (413) before gunicorn sees a byte;
- ambiguous framing (Content-Length with Transfer-Encoding, two lengths, bare CR, NUL) is
  nginx's 400; bodies reach gunicorn with one Content-Length;
- every answer nginx writes itself has the legacy body of ``shim.errors`` (files generated
  here at each start, never a second copy of the shapes), with ``nosniff``;
- the client's address reaches the app in X-Forwarded-For, appended by nginx: the app trusts
  one more hop than ``trusted_proxy_hops`` (``create_app(behind_front=True)``), so whatever a
  client writes there itself is never taken for its address;
- nginx's lines go to ``serve``, which strips query strings (legacy clients send
  ``access_token`` there) and writes them as the shim's JSON lines.

``serve`` supervises both: SIGTERM or SIGINT stop nginx gracefully (in-flight requests are
answered), then gunicorn; when either exits on its own, the other is stopped and ``serve``
exits non-zero.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from shim import config, errors
from shim.legacy import NO_ROUTE
from shim.legacy.admission import EXEMPT_PATHS as UNCAPPED
from shim.legacy.auth import TOKEN_PATH, token_rate_limited
from shim.legacy.ratelimit import RATE_LIMITED
from shim.upstream import redact

log = logging.getLogger("shim.front")

RUNTIME_PREFIX = "redmart-shim-front-"  # serve's runtime directory, in the temp folder
SOCKET_NAME = "gunicorn.sock"
PAGES = "_front"  # the internal location of the error pages; clients cannot request it
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
# How long gunicorn may take to bind its socket before serve gives up.
START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
HEADER_BUFFER = "8k"  # a request line or header field longer than this: 414 or 400


class FrontMissing(RuntimeError):
    """Raised when the front is configured but nginx is not installed."""


def find_nginx(configured: str = "") -> str | None:
    """Return the path of the nginx binary (``configured``, else searched), or None."""
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) \
            else None
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in NGINX_PATHS if os.access(path, os.X_OK)), None)


@dataclass(frozen=True)
class Page:
    """One answer nginx writes itself: the file under ``PAGES``, its status, its body."""

    name: str
    status: int
    error: errors.LegacyError

    @property
    def retry_after(self) -> bool:
        """Return whether the answer tells the client to come back (429, 503)."""
        return "Retry-After" in self.error.headers

    @property
    def pragma(self) -> bool:
        """Return whether the answer says ``Pragma: no-cache`` (the token endpoint's do)."""
        return "Pragma" in self.error.headers


def pages(settings: config.Settings) -> list[Page]:
    """Return the answers nginx writes itself, each built from the app's own error types."""
    unavailable = errors.Problem(503, "Service Unavailable", headers={"Retry-After": "1"})
    return [
        Page("400", 400, errors.bad_request("the request is malformed")),
        Page("400-header", 400, errors.bad_request("a request header is too large")),
        Page("404", 404, errors.GatewayMessage(404, NO_ROUTE)),
        Page("408", 408, errors.Problem(408, "Request Timeout")),
        Page("413", 413, errors.payload_too_large(settings.max_body_bytes)),
        Page("414", 414, errors.Problem(414, "URI Too Long")),
        Page("429", 429, errors.GatewayMessage(429, RATE_LIMITED, headers={"Retry-After": "1"})),
        Page("429-token", 429, token_rate_limited()),
        Page("500", 500, errors.GatewayMessage(500, errors.GATEWAY_FAILURE)),
        # gunicorn gone or its worker killed: a read may be retried, a write's fate is open.
        Page("503", 503, unavailable),
        Page("503-write", 503, errors.OutcomeUnknown()),
    ]


def write_pages(settings: config.Settings, directory: Path) -> None:
    """Write each page's body as the app writes JSON (compact, member order kept)."""
    (directory / PAGES).mkdir(parents=True, exist_ok=True)
    for page in pages(settings):
        body = json.dumps(page.error.body(), separators=(",", ":"), ensure_ascii=False)
        (directory / PAGES / f"{page.name}.json").write_text(body, encoding="utf-8")


def _client_key(hops: int) -> str:
    """Return the nginx map that names the client for the connection cap.

    With no proxy in front, the peer's address; behind ``hops`` trusted proxies, the address
    the outermost of them appended to X-Forwarded-For (the hops-th from the right).
    """
    if hops == 0:
        return "map $remote_addr $front_client { default $binary_remote_addr; }"
    tail = r"\s*,\s*[^,\s]+" * (hops - 1)
    return (f'map $http_x_forwarded_for $front_client {{\n'
            f'        "~(?<front_peer>[^,\\s]+){tail}\\s*$" $front_peer;\n'
            f'        default $binary_remote_addr;\n    }}')


def _burst(burst: int) -> str:
    """Return limit_req's burst parameters (none: every call past the rate is refused)."""
    return f" burst={burst} nodelay" if burst else ""  # nginx refuses "burst=0"


def _error_pages(too_many: str, indent: int) -> str:
    """Return the error_page lines of a server or location, 429 answered by page ``too_many``.

    A location that declares any error_page inherits none of its server's: each gets them all.
    """
    return ("\n" + " " * indent).join([
        *(f"error_page {code} ={page} /{PAGES}/{name}.json;" for code, page, name in (
            (400, 400, "400"), (494, 400, "400-header"), (404, 404, "404"),
            (408, 408, "408"), (413, 413, "413"), (414, 414, "414"), (429, 429, too_many),
            (500, 500, "500"))),
        f"error_page 502 503 504 =503 /{PAGES}/503$front_write.json;"])


def nginx_conf(settings: config.Settings, *, runtime: Path, listen: str, worker_timeout_s: int,
               graceful_timeout_s: int) -> str:
    """Return nginx's configuration for these settings (everything under ``runtime``)."""
    hops = settings.trusted_proxy_hops
    if hops == 0:  # nothing in front: the scheme is nginx's, no client may claim another
        forwarded = ("proxy_set_header X-Forwarded-Proto $scheme;\n"
                     '            proxy_set_header X-Forwarded-Protocol "";\n'
                     '            proxy_set_header X-Forwarded-Ssl "";\n'
                     '            proxy_set_header X-Forwarded-Host "";')
    else:  # the trusted proxies' own values pass through; the app counts them
        forwarded = "# X-Forwarded-Proto and -Host as the trusted proxies wrote them"
    # Bodies stay in memory up to the cap: nothing is written to disk for a legacy request.
    body = settings.max_body_bytes
    pages_at = runtime / "pages"
    access_log = ("access_log /dev/stderr front if=$front_own;" if settings.access_log
                  else "access_log off;")
    page_list = pages(settings)
    error_pages, token_error_pages = _error_pages("429", 8), _error_pages("429-token", 12)
    retry_after = "|".join(sorted({page.name for page in page_list if page.retry_after}))
    per_address = settings.front_token_rate_per_address
    pragma = "|".join(sorted({page.name for page in page_list if page.pragma}))
    proxy = """proxy_pass http://shim;
            proxy_http_version 1.1;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP "";
            {forwarded}
            proxy_connect_timeout 5s;
            proxy_send_timeout {timeout}s;
            # Above gunicorn's worker timeout: gunicorn ends a stuck request first.
            proxy_read_timeout {timeout}s;
            # Only a pooled connection gunicorn had closed is retried (on a fresh one), and
            # never for a write: nginx does not resend non-idempotent requests.
            proxy_next_upstream error;""".format(forwarded=forwarded, timeout=worker_timeout_s + 5)
    # Probes and scrapes are never past the cap (nor counted in it): an address saturated
    # with API calls, or a load balancer without trusted_proxy_hops, must not make an
    # orchestrator see the instance as unhealthy. Each proxies exactly as ``location /``.
    uncapped = "\n\n        ".join(
        f"location = {path} {{\n            {proxy}\n        }}" for path in sorted(UNCAPPED))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = 65536 if hard in (resource.RLIM_INFINITY, -1) else min(hard, 65536)
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""  # as serve, not nobody
    return f"""# Written by redmart-shim serve from its settings at each start (shim/front.py).
{user}worker_processes 1;
worker_shutdown_timeout {graceful_timeout_s}s;
pid {runtime}/nginx.pid;
error_log stderr {"info" if settings.log_level.lower() == "debug" else "warn"};
daemon off;

worker_rlimit_nofile {files};
events {{
    worker_connections {files // 2};
}}

http {{
    # Answers nginx writes itself are logged by serve (query strings removed); the
    # others by gunicorn's access log.
    map $upstream_status $front_own {{ "" 1; default 0; }}
    log_format front '$remote_addr "$front_request" $status $body_bytes_sent';
    {access_log}

    client_body_temp_path {runtime}/body;
    proxy_temp_path {runtime}/proxy;
    fastcgi_temp_path {runtime}/fastcgi;
    uwsgi_temp_path {runtime}/uwsgi;
    scgi_temp_path {runtime}/scgi;

    server_tokens off;
    types {{ application/json json; }}
    default_type application/json;
    charset off;

    client_header_timeout {settings.front_header_timeout_s}s;
    client_body_timeout {settings.front_body_timeout_s}s;
    send_timeout 30s;
    keepalive_timeout 75s;  # above common load balancers' 60 s, as gunicorn's keepalive
    keepalive_requests 1000;
    reset_timedout_connection on;
    client_header_buffer_size 1k;
    large_client_header_buffers 4 {HEADER_BUFFER};
    ignore_invalid_headers on;
    underscores_in_headers off;
    client_max_body_size {body};
    client_body_buffer_size {body};

    {_client_key(hops)}
    limit_conn_zone $front_client zone=per_address:10m;
    limit_conn_status 429;
    limit_conn_log_level warn;
    limit_req_zone $front_client zone=token_per_address:10m rate={per_address}r/s;
    limit_req_zone $front_token_all zone=token_all:64k rate={settings.front_token_rate}r/s;
    map $uri $front_token_all {{ default token; }}  # one key: every address together
    limit_req_status 429;
    limit_req_log_level info;  # below error_log's level: a flood is not one line per call

    map $uri $front_retry {{ default ""; "~^/{PAGES}/({retry_after})\\.json$" 1; }}
    map $uri $front_pragma {{ default ""; "~^/{PAGES}/({pragma})\\.json$" no-cache; }}
    map $request $front_request {{ default ""; "~^(?<front_r>\\S+ [^?\\s]*)" $front_r; }}

    # A write whose answer never came (gunicorn's worker killed): its outcome is unknown.
    map $request_method $front_write {{ default "-write"; GET ""; HEAD ""; }}

    upstream shim {{
        server unix:{runtime}/{SOCKET_NAME} max_fails=0;
        keepalive 32;
        keepalive_timeout 30s;  # below gunicorn's keepalive (75 s): nginx closes idle ones first
    }}

    server {{
        listen {listen} backlog=4096;

        {error_pages}

        location / {{
            limit_conn per_address {settings.front_connections_per_address};
            {proxy}
        }}

        # Token calls: rate-limited here, their refusals in the token endpoint's own shape.
        location = {TOKEN_PATH} {{
            limit_req zone=token_per_address{_burst(settings.front_token_burst_per_address)};
            limit_req zone=token_all{_burst(settings.front_token_burst)};
            limit_conn per_address {settings.front_connections_per_address};
            {token_error_pages}
            {proxy}
        }}

        # Probes and scrapes: neither counted in the per-address cap nor refused by it.
        {uncapped}

        location /{PAGES}/ {{
            internal;
            root {pages_at};
            etag off;
            add_header X-Content-Type-Options nosniff always;
            add_header Cache-Control no-store always;
            add_header Retry-After $front_retry always;
            add_header Pragma $front_pragma always;
        }}
    }}
}}
"""


# --- running both -----------------------------------------------------------------------------

_QUERY = re.compile(r"\?[^\s\"]*")
_LEVEL = re.compile(r"\[(debug|info|notice|warn|error|crit|alert|emerg)\]")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
           "warn": logging.WARNING, "error": logging.ERROR, "crit": logging.CRITICAL,
           "alert": logging.CRITICAL, "emerg": logging.CRITICAL}


def clean_line(line: str) -> str:
    """Return one nginx line without query strings (nor any secret parameter left)."""
    return redact.redact(_QUERY.sub("", line.rstrip("\r\n")))


# A client's own mistake (a body over the cap, a malformed request, a timeout) is no
# operator's error, whatever level nginx gives it.
_CLIENT_FAULT = re.compile(r"\] \d+#\d+: \*\d+ client (intended|sent|timed out|prematurely)")


def line_level(line: str) -> int:
    """Return the level one of nginx's lines is logged at."""
    if _CLIENT_FAULT.search(line):
        return logging.INFO
    level = _LEVEL.search(line)
    return _LEVELS[level.group(1)] if level else logging.INFO


def _relay(stream: IO[bytes]) -> None:
    """Write each of nginx's lines as one of the shim's, query strings removed."""
    for raw in stream:
        line = clean_line(raw.decode("utf-8", "replace"))
        if line:
            log.log(line_level(line), "nginx: %s", line)


def _prctl(option: int, value: int) -> None:
    """Call Linux's prctl; elsewhere (or when it fails) do nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value)


def _children() -> list[int]:
    """Return the ids of this process's living children (Linux's /proc; else none)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", encoding="ascii") as listed:
                found.extend(int(pid) for pid in listed.read().split())
    return found


def _die_with_parent() -> None:
    """Run in a child before exec: SIGTERM it when serve dies, even by SIGKILL (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_socket(path: Path, gunicorn: subprocess.Popen[bytes]) -> bool:
    """Wait until gunicorn listens on ``path``; False if it exited first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if gunicorn.poll() is not None:
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return True
            except OSError:
                time.sleep(0.05)
    return False


def _stop_orphans() -> None:
    """Stop whatever processes are still serve's children (orphaned nginx workers)."""
    left = _children()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


class Supervisor:
    """nginx in front of gunicorn: start both, stop both, exit when either goes."""

    def __init__(self, settings: config.Settings, gunicorn: Sequence[str], *, nginx: str,
                 listen: str, worker_timeout_s: int, graceful_timeout_s: int) -> None:
        self.settings = settings
        self.gunicorn_args = list(gunicorn)
        self.nginx_path = nginx
        self.listen = listen
        self.worker_timeout_s = worker_timeout_s
        self.graceful_timeout_s = graceful_timeout_s
        self.stopping = False

    def run(self) -> int:
        """Serve until a signal or a child's exit; return serve's exit status."""
        # nginx's workers outlive a master killed outright: they become serve's, to stop.
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        runtime = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))
        try:
            return self._run(runtime)
        finally:
            _stop_orphans()
            shutil.rmtree(runtime, ignore_errors=True)

    def _run(self, runtime: Path) -> int:
        write_pages(self.settings, runtime / "pages")
        conf = runtime / "nginx.conf"
        conf.write_text(nginx_conf(self.settings, runtime=runtime, listen=self.listen,
                                   worker_timeout_s=self.worker_timeout_s,
                                   graceful_timeout_s=self.graceful_timeout_s))
        sock = runtime / SOCKET_NAME
        gunicorn = subprocess.Popen(  # noqa: S603 (our interpreter, our arguments)
            # nginx bounds the request line (414 past HEADER_BUFFER, with the legacy body):
            # gunicorn's own limit, at its maximum, never answers first with its plain text.
            [*self.gunicorn_args[:-1], "--bind", f"unix:{sock}", "--limit-request-line",
             "8190", self.gunicorn_args[-1]],
            preexec_fn=_die_with_parent)  # before any thread of ours
        previous = {number: signal.signal(number, self._on_signal)
                    for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not _wait_for_socket(sock, gunicorn) or self.stopping:
                if self.stopping:
                    return self._finish(gunicorn, None, 0)
                if gunicorn.poll() is not None:
                    return self._finish(gunicorn, None, gunicorn.wait() or 1)
                log.error("gunicorn did not listen on %s within %.0f s", sock, START_TIMEOUT_S)
                return self._finish(gunicorn, None, 1)
            nginx = subprocess.Popen(  # noqa: S603 (the nginx binary found, our arguments)
                [self.nginx_path, "-p", str(runtime), "-c", str(conf), "-e", "stderr"],
                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
            assert nginx.stderr is not None
            threading.Thread(target=_relay, args=(nginx.stderr,), name="nginx-log",
                             daemon=True).start()
            self._nginx = nginx
            log.info("redmart-shim: nginx on %s in front of gunicorn on %s", self.listen, sock)
            return self._supervise(gunicorn, nginx)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        if self.stopping:  # asked twice: stop now
            nginx = getattr(self, "_nginx", None)
            if nginx is not None and nginx.poll() is None:
                nginx.terminate()
            return
        self.stopping = True
        nginx = getattr(self, "_nginx", None)
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: answer what is in flight, then exit

    def _supervise(self, gunicorn: subprocess.Popen[bytes],
                   nginx: subprocess.Popen[bytes]) -> int:
        while True:
            if self.stopping and nginx.poll() is None:
                # nginx answers what it holds, then exits; gunicorn serves it meanwhile.
                try:
                    nginx.wait(timeout=self.graceful_timeout_s + 5)
                except subprocess.TimeoutExpired:
                    nginx.terminate()
            if nginx.poll() is not None:
                status = nginx.wait()
                if not self.stopping:
                    log.error("nginx exited (status %s); stopping gunicorn", status)
                return self._finish(gunicorn, None, 0 if self.stopping else (status or 1))
            if gunicorn.poll() is not None:
                status = gunicorn.wait()
                log.error("gunicorn exited (status %s); stopping nginx", status)
                return self._finish(None, nginx, status or 1)
            with contextlib.suppress(ChildProcessError, InterruptedError):
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)

    def _finish(self, gunicorn: subprocess.Popen[bytes] | None,
                nginx: subprocess.Popen[bytes] | None, status: int) -> int:
        """Stop what is still running (gracefully, then not); return ``status``."""
        for process, graceful in ((nginx, signal.SIGQUIT), (gunicorn, signal.SIGTERM)):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(graceful)
            try:
                process.wait(timeout=self.graceful_timeout_s + 5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return status


def serve(settings: config.Settings, gunicorn: Sequence[str], *, listen: str,
          worker_timeout_s: int, graceful_timeout_s: int) -> int:
    """Run gunicorn (its command line, app last) behind nginx on ``listen``; return the status.

    Raises FrontMissing when nginx is not installed.
    """
    nginx = find_nginx(settings.front_nginx)
    if nginx is None:
        missing = (f"nginx is not at {settings.front_nginx} (front_nginx)" if settings.front_nginx
                   else "nginx is not installed")
        raise FrontMissing(
            f"{missing}: serve puts it in front of gunicorn ([serve] front = "
            '"nginx"); install it (Debian: apt-get install nginx-light), or set front = '
            '"none" (SHIM_FRONT=none) only behind a proxy of your own that buffers whole '
            "requests with read deadlines")
    return Supervisor(settings, gunicorn, nginx=nginx, listen=listen,
                      worker_timeout_s=worker_timeout_s,
                      graceful_timeout_s=graceful_timeout_s).run()
