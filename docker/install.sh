#!/bin/sh
# Install the shim into a virtual environment, in the two steps the image's build stage runs.
#
#   install.sh deps LOCK        create the venv, install the locked dependencies (hashes checked)
#   install.sh app SOURCE_DIR   install the package itself (no dependencies), check it
#
# The steps are apart so the dependency layer survives edits to the source. LOCK is
# requirements.lock, with the hash of every file; when docker/wheels/ (next to this script)
# holds wheels, they are the only source, so the build needs no package index. The lock also
# pins the build backend: the package is built with it, offline, and it is removed after.
#
# SHIM_VENV (default /opt/shim) is the venv; PYTHON (default python3) runs pip against it with
# `pip --python`, so the venv itself carries no pip. pip reads its usual PIP_* settings.
set -eu

venv="${SHIM_VENV:-/opt/shim}"
python="${PYTHON:-python3}"
wheels="$(dirname "$0")/wheels"
build_backend=setuptools  # pyproject.toml's [build-system]; not needed at run time

usage() {
    echo "usage: install.sh deps LOCK | app SOURCE_DIR" >&2
    exit 2
}

pip_in_venv() {
    "$python" -m pip --disable-pip-version-check --python "$venv/bin/python" "$@"
}

[ $# -eq 2 ] || usage
case "$1" in
    deps)
        "$python" -m venv --without-pip "$venv"
        if ls "$wheels"/*.whl >/dev/null 2>&1; then
            pip_in_venv install --no-input --require-hashes --no-index --find-links "$wheels" \
                --requirement "$2"
        else
            pip_in_venv install --no-input --require-hashes --requirement "$2"
        fi
        ;;
    app)
        [ -x "$venv/bin/python" ] || { echo "install.sh: run 'deps' first" >&2; exit 2; }
        pip_in_venv install --no-input --no-deps --no-index --no-build-isolation "$2"
        pip_in_venv uninstall --yes "$build_backend"
        # Fail the build, not the first request, if the dependency layer no longer fits.
        pip_in_venv check
        "$venv/bin/redmart-shim" --help >/dev/null
        ;;
    *)
        usage
        ;;
esac
