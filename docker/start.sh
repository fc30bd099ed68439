#!/bin/sh
# The image's entrypoint: serve the legacy API with nginx in front of gunicorn (settings:
# shim/gunicorn_conf.py, shim/front.py, $SHIM_CONFIG and SHIM_* variables). Arguments are
# passed on to `redmart-shim serve`.
#
# exec leaves `redmart-shim serve` as this process (PID 1 in the container), supervising
# nginx and gunicorn, so the SIGTERM of `docker stop` reaches it: nginx stops accepting and
# answers what it holds, then gunicorn finishes within graceful_timeout, and serve exits 0.
set -eu

# The address: $SHIM_BIND, else 0.0.0.0:$PORT when a platform gives PORT, else the settings
# file's [serve] bind, else serve's 0.0.0.0:8080. healthcheck.py probes the same one.
if [ -z "${SHIM_BIND:-}" ] && [ -n "${PORT:-}" ]; then
    SHIM_BIND="0.0.0.0:${PORT}"
    export SHIM_BIND
fi
exec redmart-shim serve "$@"
