"""A working stand-in for the Lazada Open Platform's RedMart APIs, for the demo and the tests.

It signs-checks, token-checks and answers the ``/rss/...`` and ``/auth/token/...`` calls the
way the reference describes, over seeded per-store data, and can misbehave on request
(faults, latency, type variance) through a control API under ``/_sandbox/``.

Dependency rule: this package imports only ``shim.upstream.signing`` (pure functions) and
``shim.serving`` (the quiet socket server) from the rest of ``shim`` (``testing.py`` also
builds the shim's client);
nothing but tests, the demo and the CLI imports it.
"""

from shim.sandbox.app import create_sandbox_app
from shim.sandbox.config import SandboxConfig, SellerAccount
from shim.sandbox.server import SandboxServer

__all__ = ["SandboxConfig", "SandboxServer", "SellerAccount", "create_sandbox_app"]
