"""Everything the Lazada client raises, as one tree rooted at ``UpstreamError``.

    UpstreamError              code, message, request_id, api
    ├── TransportError         no usable answer arrived
    │   ├── UpstreamTimeout    connect or read deadline passed
    │   ├── UpstreamUnavailable connection refused/reset, or HTTP 5xx
    │   └── MalformedResponse  an answer that is not a Lazada envelope (HTML, truncated JSON)
    ├── GatewayError           the platform refused the call: ``code`` is not "0"
    └── BusinessError          the RSS service answered ``result.success`` false

Messages never carry a URL, a parameter value or a response body: those hold the access token
and the signature, and these exceptions end up in logs.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Raised when a Lazada call does not produce a successful result."""

    default_code = "UpstreamError"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        api: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.request_id = request_id
        self.api = api
        self.http_status = http_status

    def __str__(self) -> str:
        where = f" from {self.api}" if self.api else ""
        rid = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{rid}"


class TransportError(UpstreamError):
    """Raised when no usable answer arrived from the platform."""

    default_code = "TransportError"


class UpstreamTimeout(TransportError):
    """Raised when the connect or read deadline passed."""

    default_code = "Timeout"


class UpstreamUnavailable(TransportError):
    """Raised on a refused or reset connection, or an HTTP 5xx answer."""

    default_code = "Unavailable"


class MalformedResponse(TransportError):
    """Raised when the answer is not a Lazada JSON envelope."""

    default_code = "MalformedResponse"


class GatewayError(UpstreamError):
    """Raised when the platform answers with a non-zero ``code`` (signature, token, limits...)."""

    def __init__(self, message: str, *, error_type: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.error_type = error_type  # ISV (caller), ISP (backend) or SYSTEM (gateway)


class BusinessError(UpstreamError):
    """Raised when the RSS service answers ``result.success`` false with an ``errorMessage``."""

    default_code = "BusinessFailure"
