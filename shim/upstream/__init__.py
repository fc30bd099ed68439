"""The Lazada Open Platform client: signing, transport, envelopes and errors.

Dependency rule: nothing in this package imports Flask or anything from ``shim.legacy``;
it speaks Lazada on one side and plain Python on the other, so it can be tested (and reused)
without an app.
"""

from shim.upstream.client import LazadaClient, SellerCredentials
from shim.upstream.errors import (
    BusinessError,
    GatewayError,
    MalformedResponse,
    TransportError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shim.upstream.signing import sign

__all__ = [
    "BusinessError",
    "GatewayError",
    "LazadaClient",
    "MalformedResponse",
    "SellerCredentials",
    "TransportError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "sign",
]
