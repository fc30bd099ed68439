"""``LazadaClient``: signed calls to the Lazada Open Platform over one pooled session.

Transport concerns live in requests' seams: ``LazadaAuth`` (an ``AuthBase``) signs exactly
what goes on the wire, and an ``HTTPAdapter`` with a urllib3 ``Retry`` retries idempotent
reads (GET) after a reset connection or a 502/503/504, with backoff and jitter. A read whose
answer arrived but was cut off or garbled, or that the platform failed with one of its
"backend trouble, try again" codes (``RETRY_CODES``), is retried here, above the transport.
Writes are never retried here: a lost answer to an update must surface, not be replayed
blindly.

Every retry, at either level, also needs the client's ``RetryBudget``: retries may add at
most a tenth to the calls of the last ten seconds (plus a few, so a quiet client still gets
its retry). Per-call retry counts alone would triple the load on a platform already in
trouble; the budget caps it at 1.1 times, however many calls fail.

Deadlines hold: a timeout is never retried, a ``Retry-After`` header does not stretch the
wait, and an answer's body must be complete within the read timeout of its headers, so a
silent, stalled or trickling platform costs a caller at most about
``connect_timeout + 2 * read_timeout`` (plus any retries of quick failures before it).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shim.upstream import redact
from shim.upstream.envelope import RssResult, check_gateway, decode, parse_rss
from shim.upstream.errors import (
    GatewayError,
    MalformedResponse,
    TransportError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shim.upstream.signing import SIGN_METHOD, sign

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
DEFAULT_API_URL = "https://api.lazada.sg/rest"
DEFAULT_AUTH_URL = "https://auth.lazada.com/rest"
METHODS = frozenset({"GET", "POST"})
RETRY_METHODS = frozenset({"GET"})
RETRY_STATUSES = frozenset({502, 503, 504})  # a gateway in trouble; a 500 is the backend's answer
SYSTEM_PARAMS = frozenset({"app_key", "timestamp", "sign_method", "sign", "access_token"})
MAX_BODY_BYTES = 16 * 1024 * 1024  # far above any RSS page; a bigger answer is not Lazada's
CHUNK_BYTES = 64 * 1024
MIN_SECRET_CHARS = 8  # shorter values are not secrets, and scrubbing them would garble text
# The platform's "the backend failed, try again" gateway codes (reference section 5.2): a read
# refused with one of these is retried like a 503. shim.errors maps each to a 503 as well.
RETRY_CODES = frozenset({"ServiceTimeout", "HttpConnectError", "UnknownRuntimeException",
                         "SYSTEM_ERROR", "InternalError", "6", "E006", "1000"})
BACKOFF_MAX_S = 2.0

# The call in progress in this thread (its retry count), so that urllib3's Retry, deep inside
# requests, can count the retries it makes into the call's CallRecord.
_CURRENT_CALL: ContextVar[dict[str, Any] | None] = ContextVar("lazada_call", default=None)


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
        self.signature: str | None = None  # the last sign sent, so errors can scrub it

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
        self.signature = params["sign"] = sign(self.api_path, params, self._secret)
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


def _count_retry() -> None:
    call = _CURRENT_CALL.get()
    if call is not None:
        call["retries"] += 1


class ReadRetry(Retry):
    """urllib3's ``Retry``, except that a timeout ends the call (a deadline is not retried)
    and that every retry must fit the client's ``RetryBudget``."""

    def __init__(self, *args: Any, budget: RetryBudget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget

    def new(self, **kw: Any) -> ReadRetry:
        """Return a copy with ``kw`` changed, sharing this one's budget."""
        kw.setdefault("budget", self.budget)
        return super().new(**kw)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        """Give up at once on a timeout or an empty budget; count anything else as usual."""
        if _is_timeout(error):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.budget is not None and not self.budget.try_retry():
            # As if the retries were used up: an error is raised, a 5xx answer is returned.
            reason = error or urllib3.exceptions.ResponseError("the retry budget is spent")
            raise urllib3.exceptions.MaxRetryError(_pool, url, reason)
        _count_retry()
        return retry


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
    return UpstreamUnavailable("the platform could not be reached", api=api)


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
        observer: Callable[[CallRecord], None] | None = None,
        retry_budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        redact.install()
        self.observer = observer
        self.app_key = app_key
        self._secret = app_secret
        self.api_url = api_url.rstrip("/")
        self.auth_url = auth_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.read_retries = read_retries
        self.backoff_factor = backoff_factor
        self.retry_budget = retry_budget or RetryBudget()
        self._clock = clock
        self._sleep = sleep
        self._owns_session = session is None
        self.session = session or self._default_session(read_retries, backoff_factor, pool_size,
                                                         self.retry_budget)
        self._environment = self._read_environment() if self._owns_session else {}

    @staticmethod
    def _default_session(read_retries: int, backoff_factor: float, pool_size: int,
                         budget: RetryBudget) -> requests.Session:
        retry = ReadRetry(
            budget=budget,
            total=read_retries,
            connect=read_retries,
            read=read_retries,
            status=read_retries,
            other=0,
            allowed_methods=RETRY_METHODS,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor,
            backoff_max=BACKOFF_MAX_S,
            # A Retry-After of minutes would hold a legacy caller that long; fail fast instead.
            respect_retry_after_header=False,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _read_environment(self) -> dict[str, dict[str, Any]]:
        """Read proxies and CA bundle from the environment once, per base URL.

        ``requests`` otherwise re-reads the environment on every call (about 0.1 ms, a
        twentieth of a loopback call); the process's environment does not change.
        """
        environment = {
            base_url: {name: value for name, value in self.session.merge_environment_settings(
                base_url + "/", {}, None, None, None).items() if name != "stream"}
            for base_url in {self.api_url, self.auth_url}
        }
        self.session.trust_env = False
        return environment

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
        with self._observed(api_path, method) as call:
            started = time.monotonic()
            while True:
                try:
                    document, signature = self._send(self.api_url, api_path, business,
                                                     seller.access_token, method)
                    try:
                        result = parse_rss(api_path, document)
                    except UpstreamError as error:
                        raise _scrubbed(error, [self._secret, seller.access_token,
                                                signature]) from None
                except UpstreamError as error:
                    if self._retry_answer(method, error, call, started):
                        continue
                    raise
                call["request_id"] = result.request_id
                return result

    def _retry_answer(self, method: str, error: UpstreamError, call: dict[str, Any],
                      started: float) -> bool:
        """Return whether to try again a read whose answer was unusable, after backing off.

        Only answers worth another try count (``_worth_retrying``), within the call's
        ``read_retries`` (transport retries included) and the budget, and only while the
        call has used less than half its read timeout, so that retries never stretch a call
        far past one deadline.
        """
        if (method.upper() not in RETRY_METHODS or not _worth_retrying(error)
                or call["retries"] >= self.read_retries
                or time.monotonic() - started >= self.timeout[1] / 2
                or not self.retry_budget.try_retry()):
            return False
        # urllib3's schedule: the first retry at once, then backoff_factor * 2^(n - 1).
        if call["retries"]:
            self._sleep(min(BACKOFF_MAX_S, self.backoff_factor * 2 ** call["retries"]))
        call["retries"] += 1
        log.info("retrying %s after %s", error.api, error.code)
        return True

    def create_token(self, code: str) -> dict[str, Any]:
        """Exchange a seller's authorization code at ``/auth/token/create``."""
        return self._token_call("/auth/token/create", {"code": code})

    def refresh_token(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for a new token pair at ``/auth/token/refresh``."""
        return self._token_call("/auth/token/refresh", {"refresh_token": refresh_token})

    def _token_call(self, api_path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        # POST keeps the code and refresh token out of URLs, and so out of any access log.
        with self._observed(api_path, "POST") as call:
            document, signature = self._send(self.auth_url, api_path, params, None, "POST")
            try:
                call["request_id"] = check_gateway(api_path, document)
            except UpstreamError as error:
                hidden = [self._secret, signature, *map(str, params.values())]
                raise _scrubbed(error, hidden) from None
            return document

    @contextmanager
    def _observed(self, api_path: str, method: str) -> Iterator[dict[str, Any]]:
        """Time the block, count it in the retry budget, and report it to the observer."""
        call: dict[str, Any] = {"retries": 0, "request_id": None}
        self.retry_budget.record_call()
        started = time.perf_counter()
        code = "0"
        current = _CURRENT_CALL.set(call)
        try:
            yield call
        except UpstreamError as error:
            code, call["request_id"] = error.code, error.request_id or call["request_id"]
            raise
        finally:
            _CURRENT_CALL.reset(current)
            if self.observer is not None:
                self.observer(CallRecord(api_path, method, code, time.perf_counter() - started,
                                         call["retries"], call["request_id"]))

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
        auth = LazadaAuth(api_path, app_key=self.app_key, app_secret=self._secret,
                          access_token=access_token, clock=self._clock)
        carrier = {"params": texts} if method == "GET" else {"data": texts}
        started = time.perf_counter()
        try:
            # stream: the body is read below against a deadline, not by requests.
            response = self.session.request(method, base_url + api_path, auth=auth,
                                            timeout=self.timeout, allow_redirects=False,
                                            stream=True, **carrier,
                                            **self._environment.get(base_url, {}))
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


def _worth_retrying(error: UpstreamError) -> bool:
    """Return whether another attempt may well succeed where this read failed: its answer
    arrived cut off or garbled (with HTTP 2xx, or none), or with a backend-trouble code."""
    if isinstance(error, MalformedResponse):
        return error.http_status is None or error.http_status < 300
    return isinstance(error, GatewayError) and error.code in RETRY_CODES


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
