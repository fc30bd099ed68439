#!/bin/sh
# Install the shim into a virtual environment, in the steps the image's build stages run;
# tests/test_docker.py runs the same steps outside Docker.
#
#   install.sh requirements PYPROJECT   print the project's dependencies, one a line
#   install.sh deps REQUIREMENTS        create the venv, install those dependencies
#   install.sh app SOURCE_DIR           install the package itself (no dependencies), check it
#
# The steps are apart so the dependency layer survives edits to the source (and to the rest
# of pyproject.toml: the image copies only the printed list into the dependency layer).
#
# SHIM_VENV (default /opt/shim) is the venv; PYTHON (default python3) runs pip against it with
# `pip --python`, so the venv itself carries no pip. pip reads its usual PIP_* settings.
set -eu

venv="${SHIM_VENV:-/opt/shim}"
python="${PYTHON:-python3}"

usage() {
    echo "usage: install.sh requirements PYPROJECT | deps REQUIREMENTS | app SOURCE_DIR" >&2
    exit 2
}

pip_in_venv() {
    "$python" -m pip --disable-pip-version-check --python "$venv/bin/python" "$@"
}

[ $# -eq 2 ] || usage
case "$1" in
    requirements)
        "$python" - "$2" <<'EOF'
import sys
import tomllib

with open(sys.argv[1], "rb") as handle:
    for requirement in tomllib.load(handle)["project"]["dependencies"]:
        print(requirement)
EOF
        ;;
    deps)
        "$python" -m venv --without-pip "$venv"
        pip_in_venv install --no-input --requirement "$2"
        ;;
    app)
        [ -x "$venv/bin/python" ] || { echo "install.sh: run 'deps' first" >&2; exit 2; }
        pip_in_venv install --no-input --no-deps "$2"
        # Fail the build, not the first request, if the dependency layer no longer fits.
        pip_in_venv check
        "$venv/bin/redmart-shim" --help >/dev/null
        ;;
    *)
        usage
        ;;
esac
