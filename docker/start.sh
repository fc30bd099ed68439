#!/bin/sh
# The image's entrypoint: serve the legacy API with gunicorn (settings: shim/gunicorn_conf.py,
# $SHIM_CONFIG and SHIM_* variables). Arguments are passed on to `redmart-shim serve`.
#
# exec here and exec in `redmart-shim serve` leave gunicorn itself as this process (PID 1 in
# the container), so the SIGTERM of `docker stop` reaches it: it stops accepting, lets
# in-flight requests finish within graceful_timeout, and exits 0.
set -eu

: "${PORT:=8080}"
: "${SHIM_BIND:=0.0.0.0:${PORT}}"
export PORT SHIM_BIND
exec redmart-shim serve "$@"
