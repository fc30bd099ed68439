"""The layers hold at runtime: importing a lower layer loads nothing from the layers above."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from processes import default_sigint


def loaded_after(statement: str, modules: list[str]) -> dict[str, bool]:
    """Run ``statement`` in a fresh interpreter; return which of ``modules`` it loaded."""
    script = (f"{statement}\nimport json, sys\n"
              f"print(json.dumps({{name: name in sys.modules for name in {modules!r}}}))")
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60, preexec_fn=default_sigint)
    return json.loads(answer.stdout)


def test_signing_loads_no_flask():
    # The bar line, as written.
    answer = subprocess.run(
        [sys.executable, "-c",
         "import shim.upstream.signing, sys; print('flask' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60, preexec_fn=default_sigint)
    assert answer.stdout.strip() == "False"


def test_the_package_alone_loads_nothing_of_the_app():
    heavy = ["flask", "marshmallow", "limits", "prometheus_client", "requests", "shim.app"]
    assert loaded_after("import shim", heavy) == dict.fromkeys(heavy, False)


@pytest.mark.parametrize("module", ["shim.upstream", "shim.store", "shim.schemas"])
def test_lower_layers_load_no_web_framework(module):
    above = ["flask", "werkzeug", "limits", "prometheus_client", "shim.legacy", "shim.app"]
    assert loaded_after(f"import {module}", above) == dict.fromkeys(above, False)


def test_gunicorns_configuration_loads_no_http_client():
    """gunicorn's master reads it before a gevent worker patches ssl and sockets."""
    client = ["requests", "urllib3", "flask", "shim.upstream.client"]
    assert loaded_after("import shim.gunicorn_conf", client) == dict.fromkeys(client, False)
