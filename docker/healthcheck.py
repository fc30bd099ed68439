"""The image's HEALTHCHECK: exit 0 if ``GET /healthz`` answers 200 here, else 1.

It probes the address ``serve`` listens on (nginx's, in front of gunicorn; gunicorn's own
with ``front = "none"``), resolved as serve resolves it: the settings loaded by
``shim.config`` from ``$SHIM_CONFIG`` and SHIM_* variables, so ``SHIM_BIND``, else the
file's ``[serve] bind``, else 0.0.0.0:8080. The one rule start.sh adds, ``$PORT`` when
SHIM_BIND is unset, is applied here too: a HEALTHCHECK runs with the container's environment,
not with what start.sh exported. A wildcard host is probed on loopback (127.0.0.1, or ::1 for
``[::]``: nginx listens there on IPv6 only). Standard library and shim.config only (the slim
image has no curl; no Flask, no HTTP client), and never through a proxy from the environment.
Settings given to the container as arguments (``serve --bind``) are not seen: give them as
SHIM_BIND or in the file.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from shim import config

TIMEOUT_S = 3.0
LOOPBACK = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}  # noqa: S104 (compared, not bound)


def serve_environment(env: Mapping[str, str]) -> Mapping[str, str]:
    """Return the environment start.sh gives serve: ``$PORT`` as SHIM_BIND when it is unset."""
    if env.get("PORT") and not env.get("SHIM_BIND"):
        return {**env, "SHIM_BIND": f"0.0.0.0:{env['PORT']}"}
    return env


def health_url(env: Mapping[str, str] = os.environ) -> str:
    """Return the URL of this container's liveness endpoint, on the address serve listens on."""
    settings = config.load(env=serve_environment(env))
    host, port = config.host_port(settings.bind or config.SERVE_BIND)
    return f"http://{LOOPBACK.get(host, host)}:{port}/healthz"


def main() -> int:
    """Probe the endpoint once; return the exit status."""
    try:
        url = health_url()
    except config.ConfigError as error:  # its messages name settings, never secret values
        print(f"healthcheck: configuration error: {error}", file=sys.stderr)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except OSError as error:  # refused, reset, timed out: not (yet) serving
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
