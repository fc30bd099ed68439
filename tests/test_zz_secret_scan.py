"""After the whole run: no log record of any test holds a secret.

The collector in conftest.py receives every record at DEBUG (urllib3's request lines
included) formatted as the JSON lines the shim writes in production. Two nets: the exact
secrets the suite made (app secret, seller tokens, client secrets, issued bearer tokens,
the operator token), and the shapes of secrets made elsewhere (sandbox-issued tokens,
authorization codes, request signatures).
"""

from __future__ import annotations

import pytest
from secret_shapes import SHAPES


def test_no_log_line_of_the_run_holds_a_secret(log_lines, session_secrets, request):
    if request.session.testscollected < 200:
        pytest.skip("meaningful only after the full suite: run it with the other tests")
    assert len(log_lines) > 1000, "the collector saw almost nothing: is it attached?"
    assert any('"logger": "urllib3.connectionpool"' in line for line in log_lines)
    found = []
    for line in log_lines:
        for secret in session_secrets:
            if len(secret) >= 8 and secret in line:
                found.append(("session secret", line[:300]))
        for name, shape in SHAPES.items():
            if shape.search(line):
                found.append((name, line[:300]))
    assert found == []
