"""Production settings for gunicorn.

``gunicorn -c python:shim.gunicorn_conf 'shim.app:create_app()'`` is what ``serve`` runs.

Every value can be overridden by the environment (SHIM_BIND, SHIM_WORKERS, ...).

Timeouts nest from the inside out, so that no layer gives up before the one inside it:
the upstream read deadline (SHIM_READ_TIMEOUT_S, 10 s) times the attempts a read may take
(1 + SHIM_READ_RETRIES) plus backoff, plus the stock-lot lock wait, stays below the worker
``timeout``; ``graceful_timeout`` lets in-flight requests finish on SIGTERM.
"""

from __future__ import annotations

import os

from shim import config as _shim_config  # not "config": gunicorn reads every name here
from shim import logs as _logs
from shim.upstream import redact as _redact

# State that lives in the process (issued tokens in declarative mode, memory:// rate counters,
# in-process stock-lot locks with SQLite) is only right with one process. Several workers need
# the shared kind: PostgreSQL for tokens and locks, Redis for counters.
try:
    _settings = _shim_config.load()
    _shared_state = bool(
        (_settings.database_url or "").startswith(("postgresql://", "postgres://"))
        and _settings.rate_limit_storage.startswith(("redis://", "rediss://")))
except _shim_config.ConfigError:  # each worker's create_app reports it, clearly
    _shared_state = False

_read_timeout_s = float(os.environ.get("SHIM_READ_TIMEOUT_S", "10"))
_read_retries = int(os.environ.get("SHIM_READ_RETRIES", "2"))
_lock_timeout_s = float(os.environ.get("SHIM_LOCK_TIMEOUT_S", "15"))
_request_budget_s = _read_timeout_s * (1 + _read_retries) + 2 + _lock_timeout_s

bind = os.environ.get("SHIM_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("SHIM_WORKERS", "2" if _shared_state else "1"))
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
worker_class = os.environ.get("SHIM_WORKER_CLASS", "gthread")
# gunicorn silently turns sync into gthread when threads > 1: the counter-example needs 1.
threads = int(os.environ.get("SHIM_THREADS", "1" if worker_class == "sync" else "64"))
worker_connections = int(os.environ.get("SHIM_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("SHIM_WORKER_TIMEOUT_S", str(int(_request_budget_s) + 10)))
graceful_timeout = int(os.environ.get("SHIM_GRACEFUL_TIMEOUT_S", str(int(_request_budget_s) + 5)))
keepalive = 75  # above common load balancers' idle timeouts (60 s), so they close first

# Request limits: Werkzeug caps the body (max_body_bytes); gunicorn caps what comes before it.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# The access log never shows query strings: legacy clients may send access_token there.
accesslog = os.environ.get("SHIM_ACCESS_LOG", "-")
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms %({x-request-id}o)s'
errorlog = "-"


def child_exit(server, worker) -> None:
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
    """Start the worker's background work: token refresh, usage flush, purge (database mode)."""
    from shim.services import services_of

    services = services_of(getattr(worker, "wsgi", None))
    if services is not None:  # another app served with these settings (the bench's) has none
        services.start()


def worker_exit(server: object, worker: object) -> None:
    """Close what the worker's app opened: background work (pending usage written), pools."""
    from shim.services import services_of

    services = services_of(getattr(worker, "wsgi", None))  # no wsgi: the app failed to load
    if services is not None:
        services.close()


loglevel = os.environ.get("SHIM_LOG_LEVEL", "info").lower()
# The master's, the workers' and gunicorn's own lines (access lines too) as the shim's JSON
# lines on stderr: one handler, so every line has the same fields and escaping.
logconfig_dict = _logs.dict_config(loglevel, access_log=accesslog or None)
forwarded_allow_ips = os.environ.get("SHIM_FORWARDED_ALLOW_IPS", "127.0.0.1")
