"""The Lazada Open Platform client: signing, transport, envelopes and errors.

Dependency rule: nothing in this package imports Flask or anything else from ``shim``; it
speaks Lazada on one side and plain Python on the other, so it can be tested (and reused)
without an app.

The package exports what is cheap to import (errors, signing). The client itself comes from
``shim.upstream.client``: it loads requests, urllib3 and ssl, which gunicorn's master must
not import before a gevent worker has patched them (``shim.config`` reads
``shim.upstream.endpoints``, and gunicorn's configuration reads the settings).
"""

from shim.upstream.errors import (
    AccessTokenRefused,
    BackendFailure,
    BackendLate,
    BackendTrouble,
    BreakerOpen,
    BusinessError,
    BusinessNotFound,
    CallRefused,
    CodeRefused,
    GatewayError,
    MalformedResponse,
    QuotaSpent,
    RefreshRefused,
    RefreshUnsupported,
    SellerNotActive,
    SellerNotVerified,
    Throttled,
    TransportError,
    UnknownApi,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from shim.upstream.signing import sign

__all__ = [
    "AccessTokenRefused",
    "BackendFailure",
    "BackendLate",
    "BackendTrouble",
    "BreakerOpen",
    "BusinessError",
    "BusinessNotFound",
    "CallRefused",
    "CodeRefused",
    "GatewayError",
    "MalformedResponse",
    "QuotaSpent",
    "RefreshRefused",
    "RefreshUnsupported",
    "SellerNotActive",
    "SellerNotVerified",
    "Throttled",
    "TransportError",
    "UnknownApi",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UpstreamUnreachable",
    "sign",
]
