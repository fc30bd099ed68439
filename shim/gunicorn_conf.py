"""Production settings for gunicorn.

``gunicorn -c python:shim.gunicorn_conf 'shim.app:create_app()'`` is what ``serve`` runs.

Every value comes from the shim's settings (the TOML file's ``[serve]`` table and
``SHIM_*`` variables alike: ``redmart-shim settings`` lists them), loaded once here.

Timeouts nest from the inside out, so that no layer gives up before the one inside it:
the upstream read deadline (read_timeout_s, 10 s) times the attempts a read may take
(1 + read_retries) plus backoff, plus the stock-lot lock wait, stays below the worker
``timeout``; ``graceful_timeout`` lets in-flight requests finish on SIGTERM.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from typing import Any

from shim import config as _shim_config  # not "config": gunicorn reads every name here
from shim import credentials as _credentials
from shim import logs as _logs
from shim.upstream import redact as _redact

try:
    # gunicorn's values need no app credentials (the bench's passthrough app has none);
    # each worker's create_app requires them. Every other error stops here, once.
    _settings = _shim_config.load(app_key="-", app_secret="-")  # noqa: S106 (signs nothing)
except _shim_config.ConfigError as _error:
    raise SystemExit(f"redmart-shim: configuration error: {_error}") from None

# In the master, so every forked worker inherits it: slow-hash memory goes back to the OS.
_credentials.return_hash_memory_to_the_os()

# State that lives in the process (issued tokens in declarative mode, memory:// rate counters,
# in-process stock-lot locks with SQLite) is only right with one process. Several workers need
# the shared kind: PostgreSQL for tokens and locks, Redis for counters.
_shared_state = bool(
    (_settings.database_url or "").startswith(("postgresql://", "postgres://"))
    and _settings.rate_limit_storage.startswith(("redis://", "rediss://")))

# Behind the nginx front (shim/front.py), serve adds --bind unix:<its runtime>/gunicorn.sock.
bind = _shim_config.normal_address(_settings.bind or _shim_config.SERVE_BIND)
workers = _settings.workers or (2 if _shared_state else 1)
if workers > 1 and not _shared_state:
    raise SystemExit(
        "redmart-shim: several workers need shared state (database_url on PostgreSQL and "
        "rate_limit_storage on Redis); use one worker (SHIM_WORKERS=1) and more threads")

# Worker model, chosen by measurement (bench/README.md): gthread. A request spends most of
# its time waiting for the platform, so the model must not tie concurrency to the worker
# count. sync does: 2 workers with a 100 ms upstream serve ~20 requests/s. gthread holds
# workers x threads calls in flight (128 by default: 1,280/s at 100 ms, above what 2 cores can
# process), and its throughput with a 100 ms upstream at 500 clients stays within the CPU-bound
# figure of an instant one. gevent was no faster per request; it serves HTTPS since this
# module stopped importing the HTTP client (requests, urllib3) before the worker patches
# (import-linter's cheap-gunicorn-config contract), but psycopg and sqlite3 calls block its
# event loop.
worker_class = _settings.worker_class
# gunicorn silently turns sync into gthread when threads > 1: the counter-example needs 1.
threads = _settings.worker_threads
worker_connections = _settings.worker_connections
timeout, graceful_timeout = _shim_config.worker_timeouts(_settings)
keepalive = 75  # above common load balancers' idle timeouts (60 s), so they close first

# Request limits: Werkzeug caps the body (max_body_bytes); gunicorn caps what comes before it.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# The access log never shows query strings: legacy clients may send access_token there.
accesslog = _settings.access_log or None  # empty: none (gunicorn would open "")
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms %({x-request-id}o)s'
errorlog = "-"


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metric files (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_starting(server: object) -> None:
    """Redact secrets from gunicorn's own lines and urllib3's (the workers inherit the filters).

    gunicorn logs a malformed request line verbatim, query string and all, and legacy
    clients may send ``access_token`` there; the access log shows no query at all. urllib3
    logs the platform's signed URLs.
    """
    _redact.install()
    _redact.install(("gunicorn.error", "gunicorn.access"))


def post_worker_init(worker: object) -> None:
    """Start the worker's background work (token refresh, usage flush, purge in database
    mode), then take what the worker loaded out of garbage collection."""
    from shim.services import services_of

    services = services_of(getattr(worker, "wsgi", None))
    if services is not None:  # another app served with these settings (the bench's) has none
        services.start()
    _freeze_startup_heap()


def _freeze_startup_heap() -> None:
    # The app's modules, routes, schemas and pools live as long as the worker, yet every full
    # (generation-2) collection walked them all again: ~55 ms every few thousand requests, the
    # page route's p99. Frozen, no collection visits them (gc.freeze, as CPython advises for
    # pre-fork servers). Collected first, so startup's garbage is freed rather than kept.
    gc.collect()
    gc.freeze()
    logging.getLogger("gunicorn.error").debug(
        "worker froze %d startup objects out of garbage collection", gc.get_freeze_count())


def worker_exit(server: object, worker: object) -> None:
    """Close what the worker's app opened: background work (pending usage written), pools."""
    from shim.services import services_of

    services = services_of(getattr(worker, "wsgi", None))  # no wsgi: the app failed to load
    if services is not None:
        services.close()


loglevel = _settings.log_level.lower()
# The master's, the workers' and gunicorn's own lines (access lines too) as the shim's JSON
# lines on stderr: one handler, so every line has the same fields and escaping.
logconfig_dict = _logs.dict_config(loglevel, access_log=accesslog or None)
forwarded_allow_ips = _settings.forwarded_allow_ips
# gunicorn's control socket is one path per user (~/.gunicorn/gunicorn.ctl), so two instances
# would share it; nothing here uses it.
control_socket_disable = True


def on_exit(server: object) -> None:
    """Remove the metric files' directory when serve made it (a temporary one)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if (os.path.basename(directory).startswith(_shim_config.METRICS_DIR_PREFIX)
            and os.path.dirname(directory) == tempfile.gettempdir()):
        shutil.rmtree(directory, ignore_errors=True)
