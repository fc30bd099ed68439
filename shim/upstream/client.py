"""``LazadaClient``: signed calls to the Lazada Open Platform over one pooled session.

Transport concerns live in requests' seams: ``LazadaAuth`` (an ``AuthBase``) signs exactly
what goes on the wire, and an ``HTTPAdapter`` with urllib3's ``Retry`` retries idempotent
reads (GET) with backoff and jitter. Writes are never retried here: a lost answer to an
update must surface, not be replayed blindly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shim.upstream import redact
from shim.upstream.envelope import RssResult, check_gateway, decode, parse_rss
from shim.upstream.errors import MalformedResponse, UpstreamTimeout, UpstreamUnavailable
from shim.upstream.signing import SIGN_METHOD, sign

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
DEFAULT_API_URL = "https://api.lazada.sg/rest"
DEFAULT_AUTH_URL = "https://auth.lazada.com/rest"


@dataclass(frozen=True)
class SellerCredentials:
    """What one RSS call needs to act for a seller: the store and its access token."""

    store_id: str
    access_token: str

    def __repr__(self) -> str:  # keep the token out of tracebacks and debug output
        return f"SellerCredentials(store_id={self.store_id!r}, access_token=***)"


def to_param_text(value: Any) -> str | None:
    """Return the exact text a parameter is signed and sent as (``None`` means "do not send")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        if not value:
            return None  # an empty filter is no filter; sending "[]" would be signed and read
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = str(value)
    return text or None


class LazadaAuth(requests.auth.AuthBase):
    """Adds the system parameters and the signature to a prepared request.

    It reads back every parameter the request carries (query string and form body), so the
    signature always covers what is actually sent.
    """

    def __init__(
        self,
        api_path: str,
        *,
        app_key: str,
        app_secret: str,
        access_token: str | None,
        clock: Callable[[], float],
    ) -> None:
        self.api_path = api_path
        self.app_key = app_key
        self._secret = app_secret
        self._access_token = access_token
        self._clock = clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(request.url)
        in_body = request.method != "GET"
        carried = parse_qsl(_body_text(request) if in_body else parts.query,
                            keep_blank_values=True)
        params = dict(carried)
        if len(params) != len(carried):
            raise ValueError(f"duplicate parameter in a call to {self.api_path}")
        params.update(
            app_key=self.app_key,
            timestamp=str(int(self._clock() * 1000)),
            sign_method=SIGN_METHOD,
        )
        if self._access_token:
            params["access_token"] = self._access_token
        params = {name: value for name, value in params.items() if value != ""}
        params["sign"] = sign(self.api_path, params, self._secret)
        encoded = urlencode(params)
        if in_body:
            request.body = encoded
            request.headers["Content-Type"] = FORM
            request.headers["Content-Length"] = str(len(encoded))
        else:
            request.url = urlunsplit(parts._replace(query=encoded))
        return request


def _body_text(request: requests.PreparedRequest) -> str:
    body = request.body or ""
    return body.decode("utf-8") if isinstance(body, bytes) else body


class LazadaClient:
    """Makes signed calls to the RSS and token APIs and returns parsed payloads."""

    def __init__(
        self,
        *,
        app_key: str,
        app_secret: str,
        api_url: str = DEFAULT_API_URL,
        auth_url: str = DEFAULT_AUTH_URL,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        read_retries: int = 2,
        backoff_factor: float = 0.2,
        pool_size: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        redact.install()
        self.app_key = app_key
        self._secret = app_secret
        self.api_url = api_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self._clock = clock
        self.session = session or self._default_session(read_retries, backoff_factor, pool_size)

    @staticmethod
    def _default_session(read_retries: int, backoff_factor: float, pool_size: int):
        retry = Retry(
            total=read_retries,
            connect=read_retries,
            read=read_retries,
            status=read_retries,
            other=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=(500, 502, 503, 504),
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor,
            backoff_max=2.0,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def rss(
        self,
        api_path: str,
        seller: SellerCredentials,
        params: Mapping[str, Any] | None = None,
        *,
        method: str = "GET",
    ) -> RssResult:
        """Call an ``/rss/...`` API for ``seller`` and return its successful ``result``."""
        business = {"storeId": seller.store_id, **(params or {})}
        document = self._send(self.api_url, api_path, business, seller.access_token, method)
        return parse_rss(api_path, document)

    def create_token(self, code: str) -> dict[str, Any]:
        """Exchange a seller's authorization code at ``/auth/token/create``."""
        return self._token_call("/auth/token/create", {"code": code})

    def refresh_token(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for a new token pair at ``/auth/token/refresh``."""
        return self._token_call("/auth/token/refresh", {"refresh_token": refresh_token})

    def _token_call(self, api_path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        # POST keeps the code and refresh token out of URLs, and so out of any access log.
        document = self._send(self.auth_url, api_path, params, None, "POST")
        check_gateway(api_path, document)
        return document

    def _send(
        self,
        base_url: str,
        api_path: str,
        params: Mapping[str, Any],
        access_token: str | None,
        method: str,
    ) -> dict[str, Any]:
        texts = {name: text for name, value in params.items()
                 if (text := to_param_text(value)) is not None}
        auth = LazadaAuth(api_path, app_key=self.app_key, app_secret=self._secret,
                          access_token=access_token, clock=self._clock)
        carrier = {"params": texts} if method == "GET" else {"data": texts}
        started = time.perf_counter()
        try:
            response = self.session.request(method, base_url + api_path, auth=auth,
                                            timeout=self.timeout, allow_redirects=False,
                                            **carrier)
            body = response.content
        except requests.exceptions.Timeout:
            raise UpstreamTimeout("the platform did not answer in time", api=api_path) from None
        except (requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError):
            raise MalformedResponse("the answer was cut off", api=api_path) from None
        except requests.exceptions.RequestException:
            # The exception text holds the signed URL: never chain or repeat it.
            raise UpstreamUnavailable("the platform could not be reached", api=api_path) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.debug("upstream %s %s -> HTTP %s in %.1f ms", method, api_path,
                  response.status_code, elapsed_ms)
        if response.status_code >= 500:
            raise UpstreamUnavailable(f"the platform answered HTTP {response.status_code}",
                                      api=api_path, http_status=response.status_code)
        document = decode(api_path, body)
        if response.status_code >= 400 and "code" not in document:
            raise MalformedResponse(f"HTTP {response.status_code} without an envelope",
                                    api=api_path, http_status=response.status_code)
        return document
