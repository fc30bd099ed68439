"""The shapes of secrets the suite did not make itself, for the after-the-run scans.

Sandbox-issued tokens, authorization codes, request signatures and secret-bearing
parameters: the log scan (test_zz_secret_scan.py) looks for them in every log line of the
run, and test_security.py's ``TestAfterTheRun`` in every response and written file.
"""

from __future__ import annotations

import re

SHAPES = {
    "sandbox token": re.compile(r"5000[01][0-9a-f]{48}"),
    "authorization code": re.compile(r"\b0_\d+_[A-Za-z0-9_-]{20,}"),
    "signature": re.compile(r"(?<![0-9A-F])[0-9A-F]{64}(?![0-9A-F])"),
    # demo-secret is the demo client's published secret (README, the demo's banner), not one.
    "secret parameter": re.compile(
        r"\b(access_token|refresh_token|sign|client_secret)=(?!\[REDACTED\]|demo-secret\b)"
        r"[^&\s\"']+"),
}
