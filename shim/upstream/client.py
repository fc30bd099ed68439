"""``LazadaClient``: signed calls to the Lazada Open Platform over one pooled session.

Transport concerns live in requests' seams: ``LazadaAuth`` (an ``AuthBase``) signs exactly
what goes on the wire over a pooled ``HTTPAdapter``. Retries follow one ``RetryPolicy``,
applied in one loop above the transport: a read (GET) is sent again after a reset
connection, an HTTP 502/503/504, an answer cut off or garbled, or a ``BackendTrouble``
refusal, with exponential backoff and jitter; any call is sent again when no connection
could be opened, as nothing was sent. A write is never sent again once it may have reached
the platform: a lost answer to an update must surface, not be replayed blindly.

Every retry also needs the client's ``RetryBudget``: retries may add at most a tenth to the
calls of the last ten seconds (plus a few, so a quiet client still gets its retry). Per-call
retry counts alone would triple the load on a platform already in trouble; the budget caps it
at 1.1 times, however many calls fail.

With ``breakers`` (``shim.upstream.breaker``), each RSS call goes through its API's circuit
breaker, once per call around the retries: while the breaker is open the call raises
``BreakerOpen`` without sending anything. Token calls are not guarded: they are rare, and a
refresh must meet the platform's real answer (a lost one has consequences of its own).

Deadlines hold: a timeout is never retried, a ``Retry-After`` header does not stretch the
wait, nothing is retried once a call has used half its read timeout, and an answer's body
must be complete within the read timeout of its headers, so a silent, stalled or trickling
platform costs a caller at most about ``connect_timeout + 2 * read_timeout`` (plus any
retries of quick failures before it).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from shim.upstream import redact
from shim.upstream.breaker import Breakers
from shim.upstream.endpoints import DEFAULT_API_URL, DEFAULT_AUTH_URL
from shim.upstream.envelope import RssResult, check_gateway, decode, parse_rss
from shim.upstream.errors import (
    BackendTrouble,
    GatewayError,
    MalformedResponse,
    TransportError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from shim.upstream.signing import SIGN_METHOD, sign

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
METHODS = frozenset({"GET", "POST"})
RETRY_METHODS = frozenset({"GET"})
RETRY_STATUSES = frozenset({502, 503, 504})  # a gateway in trouble; a 500 is the backend's answer
SYSTEM_PARAMS = frozenset({"app_key", "timestamp", "sign_method", "sign", "access_token"})
MAX_BODY_BYTES = 16 * 1024 * 1024  # far above any RSS page; a bigger answer is not Lazada's
CHUNK_BYTES = 64 * 1024
MIN_SECRET_CHARS = 8  # shorter values are not secrets, and scrubbing them would garble text
BACKOFF_MAX_S = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class CallRecord:
    """What an observer learns of one finished call: no parameter, no secret."""

    api: str
    method: str
    code: str  # "0", a Lazada error code, or the exception's code (Timeout, Unavailable...)
    seconds: float
    retries: int
    request_id: str | None


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
    """Puts the business parameters, the system parameters and the signature on a request.

    The parameters are encoded here, from the very dict that was signed (so none can appear
    twice), and are the only ones the request carries: a URL with a query or a POST with a
    body of its own is refused, so the signature covers exactly what is sent. Empty values
    are left out of both; a POST carries the parameters form-encoded.
    """

    def __init__(
        self,
        api_path: str,
        params: Mapping[str, str],
        *,
        app_key: str,
        app_secret: str,
        access_token: str | None,
        clock: Callable[[], float],
    ) -> None:
        self.api_path = api_path
        self.params = params
        self.app_key = app_key
        self._secret = app_secret
        self._access_token = access_token
        self._clock = clock
        self.signature: str | None = None  # the last sign sent, so errors can scrub it

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = request.url or ""
        if "?" in url or request.body:
            raise ValueError(f"a call to {self.api_path} carries parameters the signature "
                             "would not cover")
        # Signed at send time, so the timestamp is as fresh as it can be.
        params = {**self.params, "app_key": self.app_key,
                  "timestamp": str(int(self._clock() * 1000)), "sign_method": SIGN_METHOD}
        if self._access_token:
            params["access_token"] = self._access_token
        params = {name: value for name, value in params.items() if value != ""}
        self.signature = params["sign"] = sign(self.api_path, params, self._secret)
        encoded = urlencode(params)
        if request.method == "GET":
            request.url = f"{url}?{encoded}"
        else:
            request.body = encoded
            request.headers["Content-Type"] = FORM
            request.headers["Content-Length"] = str(len(encoded))
        return request


class RetryBudget:
    """Retries allowed to one client: ``minimum`` plus ``ratio`` of its calls, per window.

    Calls and retries are counted in one-second buckets over the last ``window_s`` seconds; a
    retry is allowed while the retries in the window stay within ``minimum + ratio * calls``.
    So retries add at most ``ratio`` to the platform's load when many calls fail, and a client
    making few calls still has ``minimum`` retries per window. Finagle's ``RetryBudget`` and
    gRPC's retry throttling follow the same idea. Safe to share between threads.
    """

    def __init__(self, *, ratio: float = 0.1, minimum: int = 10, window_s: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ratio < 0 or minimum < 0 or window_s < 1:
            raise ValueError("ratio and minimum must not be negative, window_s at least 1")
        self.ratio = ratio
        self.minimum = minimum
        self.window_s = int(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[list[int]] = deque()  # [second, calls, retries], oldest first

    def record_call(self) -> None:
        """Count one call (its first attempt)."""
        with self._lock:
            self._bucket()[1] += 1

    def try_retry(self) -> bool:
        """Return whether one more retry fits the budget now, counting it if so."""
        with self._lock:
            bucket = self._bucket()
            calls, retries = self._totals()
            if retries + 1 > self.minimum + self.ratio * calls:
                return False
            bucket[2] += 1
            return True

    def counts(self) -> tuple[int, int]:
        """Return the calls and retries counted in the current window."""
        with self._lock:
            self._bucket()
            return self._totals()

    def _bucket(self) -> list[int]:
        second = math.floor(self._clock())
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def _totals(self) -> tuple[int, int]:
        return (sum(bucket[1] for bucket in self._buckets),
                sum(bucket[2] for bucket in self._buckets))


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed call is sent again, and after how long: the client's one retry policy.

    A read is sent again after a failure another attempt may cure (``worth_retrying``); any
    call after ``UpstreamUnreachable``, as nothing was sent. At most ``retries`` times per
    call, and only while the call has used less than ``patience_s`` (half its read timeout),
    so that retries never stretch a call far past one deadline. The first retry goes at once
    (the failure was likely a stale connection); retry ``n`` then waits
    ``backoff_factor * 2^(n-1)`` plus up to ``jitter_s`` at random, at most ``backoff_max_s``,
    so that clients failing together do not come back together.
    """

    retries: int = 2
    backoff_factor: float = 0.2
    jitter_s: float = 0.2
    backoff_max_s: float = BACKOFF_MAX_S
    patience_s: float = 5.0
    random: Callable[[], float] = random.random  # in [0, 1); a seam for tests

    def worth_retrying(self, error: UpstreamError, method: str) -> bool:
        """Return whether another attempt may well succeed where this one failed."""
        if isinstance(error, UpstreamUnreachable):
            return True
        if method.upper() not in RETRY_METHODS:
            return False
        if isinstance(error, MalformedResponse):  # cut off or garbled, not an error page
            return error.http_status is None or error.http_status < 300
        if isinstance(error, UpstreamUnavailable):  # reset, or a gateway in trouble
            return error.http_status is None or error.http_status in RETRY_STATUSES
        return isinstance(error, BackendTrouble)

    def delay(self, retry: int) -> float:
        """Return the seconds to wait before retry number ``retry`` (1 for the first)."""
        if retry <= 1:
            return 0.0
        backoff = self.backoff_factor * 2.0 ** (retry - 1) + self.random() * self.jitter_s
        return min(self.backoff_max_s, backoff)


def _is_timeout(error: BaseException | None) -> bool:
    # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError for history's sake.
    return (isinstance(error, (urllib3.exceptions.TimeoutError, TimeoutError))
            and not isinstance(error, urllib3.exceptions.NewConnectionError))


def _timed_out(error: BaseException) -> bool:
    """Return whether a transport failure was a deadline passing, however it was wrapped."""
    if isinstance(error, requests.exceptions.Timeout):
        return True
    cause = error.args[0] if error.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        cause = cause.reason
    return _is_timeout(error) or _is_timeout(cause)


def _transport_error(error: BaseException, api: str) -> TransportError:
    """Return the ``TransportError`` for a requests or urllib3 failure, without its text."""
    if _timed_out(error):
        return UpstreamTimeout("the platform did not answer in time", api=api)
    if isinstance(error, (requests.exceptions.ChunkedEncodingError,
                          requests.exceptions.ContentDecodingError,
                          urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError)):
        return MalformedResponse("the answer was cut off or could not be decoded", api=api)
    if _never_connected(error):
        return UpstreamUnreachable("the platform could not be reached", api=api)
    return UpstreamUnavailable("the platform could not be reached", api=api)


def _never_connected(error: BaseException) -> bool:
    """Return whether no connection was opened (refused, no route, no address): nothing sent."""
    cause = error.args[0] if error.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        cause = cause.reason
    return isinstance(cause, urllib3.exceptions.NewConnectionError)


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
        observers: Iterable[Callable[[CallRecord], None]] = (),
        retry_budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        breakers: Breakers | None = None,
    ) -> None:
        self._observers = tuple(observers)
        self.breakers = breakers
        self.app_key = app_key
        self._secret = app_secret
        self.api_url = api_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        # A Retry-After header is not read: minutes of it would hold a legacy caller that long.
        self.retry_policy = RetryPolicy(retries=read_retries, backoff_factor=backoff_factor,
                                        jitter_s=backoff_factor, patience_s=read_timeout / 2,
                                        random=jitter)
        self.retry_budget = retry_budget or RetryBudget()
        self._clock = clock
        self._sleep = sleep
        self._owns_session = session is None
        self.session = session or self._default_session(pool_size)
        self._environment = self._read_environment() if self._owns_session else {}

    @staticmethod
    def _default_session(pool_size: int) -> requests.Session:
        session = requests.Session()
        # No retries down in urllib3: every retry is the policy's, made in ``_retrying``.
        adapter = HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _read_environment(self) -> dict[str, dict[str, Any]]:
        """Read proxies and CA bundle from the environment once, per base URL.

        ``requests`` otherwise re-reads the environment on every call (about 0.1 ms, a
        twentieth of a loopback call); the process's environment does not change.
        """
        environment = {base_url: self._read_settings(base_url + "/")
                       for base_url in {self.api_url, self.auth_url}}
        self.session.trust_env = False
        return environment

    def _read_settings(self, url: str) -> dict[str, Any]:
        """Return the proxies, CA bundle and certificate the session would use for ``url``."""
        settings = self.session.merge_environment_settings(url, {}, None, None, None)
        return {name: value for name, value in settings.items() if name != "stream"}

    def add_observer(self, observer: Callable[[CallRecord], None]) -> None:
        """Report every call finished from now on to ``observer`` too, after the others."""
        # A new tuple, not an append: calls in flight on other threads keep a whole one.
        self._observers = (*self._observers, observer)

    def close(self) -> None:
        """Close the pooled connections of the session this client made (not an injected one)."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> LazadaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def rss(
        self,
        api_path: str,
        seller: SellerCredentials,
        params: Mapping[str, Any] | None = None,
        *,
        method: str = "GET",
    ) -> RssResult:
        """Call an ``/rss/...`` API for ``seller`` and return its successful ``result``."""
        params = params or {}
        if "storeId" in params:
            raise ValueError("storeId comes from the seller, not from the parameters")
        business = {"storeId": seller.store_id, **params}

        def attempt() -> RssResult:
            document, signature = self._send(self.api_url, api_path, business,
                                             seller.access_token, method)
            try:
                return parse_rss(api_path, document)
            except UpstreamError as error:
                raise _scrubbed(error, [self._secret, seller.access_token, signature]) from None

        # The breaker sees the call once, retries included: outside the retry loop, so a read
        # that is retrying when the breaker opens keeps its budget and fails once, not thrice.
        with self._guarded(api_path), _ObservedCall(self, api_path, method) as call:
            result = self._retrying(self.api_url + api_path, method, call, attempt)
            call.request_id = result.request_id
            return result

    def _guarded(self, api_path: str) -> AbstractContextManager[None]:
        """Return the API's circuit breaker guard (nothing without ``breakers``)."""
        if self.breakers is None:
            return nullcontext()
        return self.breakers.get(self.app_key, api_path).guard()

    def _retrying(self, url: str, method: str, call: _ObservedCall,
                  attempt: Callable[[], T]) -> T:
        """Return what ``attempt`` returns, trying again as the retry policy and budget allow.

        The one place a call is repeated, and the one place its retries are counted (the
        observers read them from the ``CallRecord``).
        """
        policy = self.retry_policy
        started = time.monotonic()
        while True:
            try:
                return attempt()
            except UpstreamError as error:
                if (not policy.worth_retrying(error, method)
                        or call.retries >= policy.retries
                        or time.monotonic() - started >= policy.patience_s
                        or not self.retry_budget.try_retry()):
                    raise
                call.retries += 1
                # A broken connection is worth an operator's eye (as urllib3 logged it); a
                # bad answer is the platform's everyday noise.
                level = logging.WARNING if error.http_status is None and isinstance(
                    error, UpstreamUnavailable) else logging.INFO
                log.log(level, "Retrying %s %s after %s (retry %d of %d)", method.upper(), url,
                        error.code, call.retries, policy.retries)
                self._sleep(policy.delay(call.retries))

    def create_token(self, code: str) -> dict[str, Any]:
        """Exchange a seller's authorization code at ``/auth/token/create``."""
        return self._token_call("/auth/token/create", {"code": code})

    def refresh_token(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for a new token pair at ``/auth/token/refresh``."""
        return self._token_call("/auth/token/refresh", {"refresh_token": refresh_token})

    def _token_call(self, api_path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        # POST keeps the code and refresh token out of URLs, and so out of any access log.
        with _ObservedCall(self, api_path, "POST") as call:
            def attempt() -> dict[str, Any]:
                document, signature = self._send(self.auth_url, api_path, params, None, "POST")
                try:
                    call.request_id = check_gateway(api_path, document)
                except UpstreamError as error:
                    hidden = [self._secret, signature, *map(str, params.values())]
                    raise _scrubbed(error, hidden) from None
                return document

            return self._retrying(self.auth_url + api_path, "POST", call, attempt)

    def _send(
        self,
        base_url: str,
        api_path: str,
        params: Mapping[str, Any],
        access_token: str | None,
        method: str,
    ) -> tuple[dict[str, Any], str]:
        """Make one signed call; return the answer's JSON object and the signature sent."""
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"method must be GET or POST, not {method!r}")
        reserved = SYSTEM_PARAMS.intersection(params)
        if reserved:
            raise ValueError(f"system parameters are the client's to set: {sorted(reserved)}")
        texts = {name: text for name, value in params.items()
                 if (text := to_param_text(value)) is not None}
        auth = LazadaAuth(api_path, texts, app_key=self.app_key, app_secret=self._secret,
                          access_token=access_token, clock=self._clock)
        session = self.session
        started = time.perf_counter()
        try:
            # Session.request, minus what a signed call cannot use: session-level params and
            # auth would go unsigned, and merging them costs requests (2.34, on Python 3.11)
            # eight runtime Protocol checks, about 50 us a call. The session's headers,
            # cookies and hooks still apply, as Session.prepare_request would apply them.
            request = requests.PreparedRequest()
            request.prepare(method=method, url=base_url + api_path, headers=session.headers,
                            cookies=session.cookies, auth=auth, hooks=session.hooks)
            settings = (self._environment.get(base_url)
                        or self._read_settings(request.url or base_url))
            # stream: the body is read below against a deadline, not by requests.
            response = session.send(request, timeout=self.timeout, allow_redirects=False,
                                    stream=True, **settings)
        except requests.exceptions.RequestException as error:
            # The exception text holds the signed URL: never chain or repeat it.
            raise _transport_error(error, api_path) from None
        status = response.status_code
        log.debug("upstream %s %s -> HTTP %s in %.1f ms", method, api_path, status,
                  (time.perf_counter() - started) * 1000)
        try:
            if status >= 500:
                raise UpstreamUnavailable(f"the platform answered HTTP {status}",
                                          api=api_path, http_status=status)
            body = self._read_body(response, api_path)
        finally:
            response.close()
        try:
            document = decode(api_path, body)
        except MalformedResponse as error:
            error.http_status = status
            raise
        if status >= 400 and "code" not in document:
            raise MalformedResponse(f"HTTP {status} without an envelope",
                                    api=api_path, http_status=status)
        return document, auth.signature or ""

    def _read_body(self, response: requests.Response, api_path: str) -> bytes:
        """Return the whole body, read within the read timeout of the headers arriving."""
        deadline = time.monotonic() + self.timeout[1]
        raw = response.raw
        # read1 returns what has arrived; read(n) would wait for n bytes of a trickle.
        read = getattr(raw, "read1", None) or raw.read
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := read(CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise MalformedResponse("the answer is too large", api=api_path,
                                            http_status=response.status_code)
                if time.monotonic() > deadline:
                    raise UpstreamTimeout("the platform did not finish its answer in time",
                                          api=api_path)
                chunks.append(chunk)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _transport_error(error, api_path) from None
        return b"".join(chunks)


class _ObservedCall:
    """One call of a client, retries included: counted in the client's retry budget when it
    starts, timed, and reported to its observers when it ends (a ``CallRecord``)."""

    # A plain context manager, not a generator: this runs around every platform call.
    __slots__ = ("_client", "_started", "api", "method", "request_id", "retries")

    def __init__(self, client: LazadaClient, api: str, method: str) -> None:
        self._client = client
        self.api = api
        self.method = method
        self.retries = 0
        self.request_id: str | None = None
        self._started = 0.0

    def __enter__(self) -> _ObservedCall:
        self._client.retry_budget.record_call()
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> None:
        observers = self._client._observers
        if not observers:
            return
        code = "0"
        if isinstance(error, UpstreamError):
            code, self.request_id = error.code, error.request_id or self.request_id
        record = CallRecord(self.api, self.method, code, time.perf_counter() - self._started,
                            self.retries, self.request_id)
        for observer in observers:
            observer(record)


def _scrubbed(error: UpstreamError, hidden: Iterable[str | None]) -> UpstreamError:
    """Return ``error`` with any secret the platform echoed removed from its texts."""
    secrets = sorted({value for value in hidden if value and len(value) >= MIN_SECRET_CHARS},
                     key=len, reverse=True)

    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        text = redact.redact(text)
        for value in secrets:
            text = text.replace(value, redact.REDACTED)
        return text

    error.message = clean(error.message) or ""
    error.args = (error.message,)
    error.request_id = clean(error.request_id)
    if isinstance(error, GatewayError):
        error.error_type = clean(error.error_type)
    return error
