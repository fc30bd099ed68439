"""Record mode: the shim serves real traffic and writes each legacy call as a contract case.

    app, recorder = recording_app(settings, Path("recorded"))
    LocalServer(app, port=8080).serve_forever()

Where it hooks in, in record mode only (``create_app`` and the serving path know nothing of it):

- a WSGI middleware, outermost, sees the legacy request (its body buffered and handed on
  unchanged) and the answer exactly as the client gets it;
- an ``after_request`` hook notes who called (the token's scopes) and whether the call got past
  the gateway (authentication, then the rate limiter);
- each Lazada client's session gets a transport adapter wrapped around its own (requests'
  ``Session.mount``): it sees every attempt with the parameters as signed and sent, and keeps
  a copy of the answer's body as the client reads it; an observer it adds to the client marks
  where a call ends, so the retries of one call fold into its last attempt, the one the shim
  acted on;
- the app's clock: a request sees the time it arrived, held still while it is served, and the
  case keeps it as ``now_ms``, so a replay computes the same defaults and date rules.

The pieces find the request they belong to through a context variable: concurrent requests
never mix, and calls made outside a request (the token refresher) are never recorded.
Every value goes through ``shim.record.scrub`` before it is written.

A call is skipped, with the reason reported, when its case could not replay: not
authenticated (the runner always sends a valid token), refused by the shim's rate limiter
(depends on timing), a token refresh during the call, a platform call that timed out or got no
complete answer, or an answer that is not JSON.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from flask import Flask, Response, g, request
from requests.adapters import BaseAdapter

from shim import scopes
from shim.app import create_app
from shim.config import Settings
from shim.legacy import ROUTES, is_api_path
from shim.legacy.pickup_locations import LIST_API, ONE_API
from shim.record import scrub
from shim.record.cases import METHODS, OTHER_ROUTE, write_case
from shim.services import Services, get_services
from shim.upstream import UnknownApi, UpstreamTimeout
from shim.upstream.client import CallRecord, LazadaClient
from shim.upstream.errors import classify

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
READ_CHUNK = 64 * 1024
DRAIN_LIMIT = 256 * 1024  # an error page the client never read is kept up to this size
SINGLE_LOCATION_ENDPOINT = "pickup_locations.get_pickup_location"
FIXTURE_DIRS = {route.endpoint: route.fixtures for route in ROUTES}  # by Flask endpoint
# What the platform answers for an API path it does not know, when none was recorded yet.
UNKNOWN_API_ANSWER = {"type": "ISV", "code": "InvalidApiPath",
                      "message": "The specified API Path is invalid", "request_id": "recorded"}

_current: ContextVar[_Recording | None] = ContextVar("shim_record_current", default=None)


@dataclass
class _Attempt:
    """One request the client's session sent, and what came back."""

    api: str | None  # the /rss/... path; None for any other call (a token call)
    method: str
    params: list[tuple[str, str]]  # as signed and sent, system parameters included
    status: int | None = None  # None: no answer at all
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the whole body was read
    broken: bool = False  # sending or reading failed


@dataclass
class _Call:
    """One client call (``LazadaClient.rss`` or a token call) and its attempts."""

    api: str
    code: str
    attempts: list[_Attempt]


@dataclass
class _Recording:
    """Everything seen while serving one legacy request."""

    now_ms: int
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    content_type: str
    single_location_api: bool
    skip: str | None = None
    attempts: list[_Attempt] = field(default_factory=list)  # of the call in progress
    calls: list[_Call] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    caller: Any = None
    passed_gateway: bool = False
    endpoint: str | None = None
    view_args: dict[str, Any] = field(default_factory=dict)


class _TeeBody:
    """Stands in for a response's raw stream: reads pass through, and a copy is kept."""

    def __init__(self, raw: Any, attempt: _Attempt) -> None:
        self._raw = raw
        self._attempt = attempt

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return self._kept(self._raw.read, args, kwargs)

    def read1(self, *args: Any, **kwargs: Any) -> bytes:
        return self._kept(self._raw.read1, args, kwargs)

    def stream(self, amt: int = READ_CHUNK,
               decode_content: bool | None = None) -> Iterator[bytes]:
        while chunk := self.read(amt, decode_content=decode_content):
            yield chunk

    def _kept(self, read: Callable[..., bytes], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> bytes:
        try:
            chunk = read(*args, **kwargs)
        except Exception:
            self._attempt.broken = True
            raise
        if chunk:
            self._attempt.body += chunk
        else:
            self._attempt.complete = True
        return chunk

    def close(self) -> None:
        """Keep an unread body (the client skips the page of an HTTP 5xx), then close."""
        attempt = self._attempt
        if not attempt.body and not attempt.complete and not attempt.broken:
            try:
                while len(attempt.body) <= DRAIN_LIMIT and self.read(READ_CHUNK,
                                                                     decode_content=True):
                    pass
            except Exception:  # noqa: S110 (the case is skipped as broken; serving goes on)
                pass
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _RecordingAdapter(BaseAdapter):
    """A transport adapter around the session's own: notes each attempt of a recorded request."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None,
             verify: bool | str = True, cert: str | tuple[str, str] | None = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        """Send through the wrapped adapter; within a recorded request, keep the exchange."""
        def send() -> requests.Response:
            return self.inner.send(request, stream=stream, timeout=timeout, verify=verify,
                                   cert=cert, proxies=proxies)

        recording = _current.get()
        if recording is None:
            return send()
        attempt = _attempt_of(request)
        recording.secrets.update(value for name, value in attempt.params
                                 if name in ("access_token", "sign"))
        recording.attempts.append(attempt)
        try:
            response = send()
        except BaseException:
            attempt.broken = True
            raise
        attempt.status = response.status_code
        response.raw = _TeeBody(response.raw, attempt)
        return response

    def close(self) -> None:
        """Close the wrapped adapter."""
        self.inner.close()


def _attempt_of(prepared: requests.PreparedRequest) -> _Attempt:
    parts = urlsplit(prepared.url or "")
    raw = prepared.body or ""
    # A streamed body (never sent by the client) has no parameters to read.
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else \
        raw if isinstance(raw, str) else ""
    params = parse_qsl(parts.query, keep_blank_values=True)
    if body:
        params += parse_qsl(body, keep_blank_values=True)
    at = parts.path.find("/rss/")
    return _Attempt(api=parts.path[at:] if at >= 0 else None,
                    method=(prepared.method or "GET").upper(), params=params)


class _Middleware:
    """The outermost WSGI layer of a recording app: one ``_Recording`` per legacy request."""

    def __init__(self, app: WSGIApplication, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        if not is_api_path(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        recording = self.recorder._begin(environ)
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]],
                    exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
            answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), list(headers)
            return start_response(status, headers, exc_info)

        token = _current.set(recording)
        try:
            chunks = self.app(environ, capture)
            try:
                body = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        finally:
            _current.reset(token)
        self.recorder._finish(recording, answer.get("status", 500), answer.get("headers", []),
                              body)
        return [body]


class Recorder:
    """Turns the requests a recording app serves into case directories under ``out_dir``."""

    def __init__(self, out_dir: Path, *, max_body_bytes: int = 16 * 1024,
                 scrub_addresses: bool = False, report: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.out_dir = Path(out_dir)
        self.max_body_bytes = max_body_bytes
        self.scrubber = scrub.Scrubber(scrub_addresses=scrub_addresses)
        self.report = report or log.info
        self.recorded: list[str] = []
        self.skipped: list[tuple[str, str]] = []  # (method and path, reason)
        self._clock = clock
        self._lock = threading.Lock()
        self._sequence = max((_number(path.name) for path in self.out_dir.glob("*/*")),
                             default=0)
        self._unknown_api_answer: Any = None
        self._services: Services | None = None
        self._clients: set[int] = set()

    def clock(self) -> float:
        """Return the time for the app: a recorded request's arrival, held still."""
        recording = _current.get()
        return recording.now_ms / 1000 if recording is not None else self._clock()

    def attach(self, app: Flask) -> Flask:
        """Wire the recorder into ``app`` (made with ``clock=self.clock``) and return it."""
        services = get_services(app)
        self._services = services
        services.clients.watch(self._watch)  # clients of other apps are made on first use
        app.after_request(self._note_caller)
        app.wsgi_app = _Middleware(  # type: ignore[method-assign]  # Flask's middleware way
            app.wsgi_app, self)
        self._learn_secrets(services)
        return app

    def summary(self) -> str:
        """Return one line: how many calls were recorded and skipped."""
        return (f"recorded {len(self.recorded)} case(s) under {self.out_dir}, "
                f"skipped {len(self.skipped)}")

    # --- wiring -------------------------------------------------------------------------------

    def _watch(self, client: LazadaClient) -> LazadaClient:
        with self._lock:  # held until wired: no call may go out half-watched
            if id(client) in self._clients:
                return client
            for prefix, adapter in list(client.session.adapters.items()):
                client.session.mount(prefix, _RecordingAdapter(adapter))
            def observe(record: CallRecord) -> None:
                recording = _current.get()
                if recording is not None:
                    recording.calls.append(_Call(record.api, record.code, recording.attempts))
                    recording.attempts = []

            client.add_observer(observe)
            self._clients.add(id(client))
        return client

    def _learn_secrets(self, services: Any) -> None:
        settings = services.settings
        self.scrubber.add_secrets([settings.app_secret, settings.encryption_key,
                                   settings.operator_token])
        store = services.store
        try:
            sellers = store.list_sellers()
            apps = [store.get_app(key) for key in getattr(store, "list_apps", list)()]
        except Exception:  # a store that cannot list: the secrets seen on the wire still count
            log.warning("recording: could not read the sellers' tokens from the store")
            sellers, apps = [], []
        self.scrubber.add_secrets([value for seller in sellers
                                   for value in (seller.access_token, seller.refresh_token)])
        self.scrubber.add_secrets([app.app_secret for app in apps if app is not None])
        self.scrubber.add_personal(
            [seller.account for seller in sellers]
            + [str(info.get("short_code")) for seller in sellers for info in seller.user_info
               if isinstance(info, dict) and info.get("short_code")])

    def _note_caller(self, response: Response) -> Response:
        recording = _current.get()
        if recording is not None:
            recording.caller = g.get("caller")
            if g.get("bearer_token"):  # the token exactly as authentication read it
                recording.secrets.add(g.bearer_token)
            recording.passed_gateway = "rate_limit_headers" in g
            recording.endpoint = request.endpoint
            recording.view_args = dict(request.view_args or {})
        return response

    # --- one request --------------------------------------------------------------------------

    def _begin(self, environ: WSGIEnvironment) -> _Recording:
        skip = None
        body = b""
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > self.max_body_bytes:
            skip = "the body is larger than max_body_bytes"
        elif length > 0 or (length < 0 and environ.get("wsgi.input_terminated")):
            body = environ["wsgi.input"].read(length if length > 0 else
                                              self.max_body_bytes + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            if length > 0:
                environ["CONTENT_LENGTH"] = str(len(body))
        headers = {name: environ[key] for name in scrub.KEPT_REQUEST_HEADERS
                   if (key := _environ_key(name)) in environ}
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        recording = _Recording(
            now_ms=int(self._clock() * 1000),
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=environ.get("PATH_INFO", "/"),
            query=query,
            headers=headers,
            body=body,
            content_type=environ.get("CONTENT_TYPE", ""),
            single_location_api=(self._services is None
                                 or ONE_API not in self._services.unknown_apis),
            skip=skip,
        )
        recording.secrets.update(environ.get("HTTP_AUTHORIZATION", "").split())
        form = (parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
                if recording.content_type.split(";")[0].strip().lower() == FORM else [])
        recording.secrets.update(value for name, value in query + form
                                 if name == scrub.LEGACY_TOKEN_PARAM)
        return recording

    def _finish(self, recording: _Recording, status: int, headers: list[tuple[str, str]],
                body: bytes) -> None:
        shown = f"{recording.method} {self.scrubber.text(recording.path)}"
        try:
            self.scrubber.add_secrets(recording.secrets)
            reason = recording.skip or _unreplayable(recording, body)
            case = None if reason else self._case(recording, status, headers, body)
            if case is not None:
                leaks = self.scrubber.leaks(json.dumps(case, ensure_ascii=False))
                reason = f"still holds {', '.join(leaks)} after scrubbing" if leaks else None
            if reason:
                self.skipped.append((shown, reason))
                self.report(f"skipped {shown} -> {status}: {reason}")
                return
            assert case is not None  # no reason to skip: the case was made
            route = FIXTURE_DIRS.get(recording.endpoint or "", OTHER_ROUTE)
            with self._lock:
                self._sequence += 1
                name = f"{self._sequence:04d}-{recording.method.lower()}-{status}"
            write_case(self.out_dir / route / name, case)
            self.recorded.append(f"{route}/{name}")
            self.report(f"recorded {route}/{name}: {shown} -> {status}")
        except Exception as error:  # recording must never break serving
            self.skipped.append((shown, f"could not record ({type(error).__name__})"))
            self.report(f"skipped {shown} -> {status}: could not record "
                        f"({type(error).__name__})")

    def _case(self, recording: _Recording, status: int, headers: list[tuple[str, str]],
              body: bytes) -> dict[str, Any]:
        upstream = [self._exchange(call.api, call.attempts[-1]) for call in recording.calls]
        if (recording.endpoint == SINGLE_LOCATION_ENDPOINT and not recording.single_location_api
                and recording.calls and recording.calls[0].api == LIST_API):
            # The shim learnt earlier that the platform lacks the single-location API and now
            # goes straight to paging; a fresh shim (the replay) asks first, so say what the
            # platform answered then.
            store = dict(recording.calls[0].attempts[-1].params).get("storeId", "")
            location = str(int(recording.view_args.get("pickup_location_id", "0")))
            upstream.insert(0, {
                "api": ONE_API, "method": "GET",
                "params": self.scrubber.params({"storeId": store,
                                                "pickupLocationId": location}),
                "response": {"json": self.scrubber.json(
                    self._unknown_api_answer or UNKNOWN_API_ANSWER)}})
        answer = json.loads(body)
        return {
            "description": (f"Recorded: {recording.method} {self.scrubber.text(recording.path)}"
                            f" answered {status} after {len(recording.calls)} platform "
                            f"call(s)."),
            "tags": [_tag(status, bool(recording.calls))],
            "now_ms": recording.now_ms,
            "request": self._request(recording),
            "upstream": upstream,
            "expect": {
                "status": status,
                "headers": {name.lower(): self.scrubber.text(value) for name, value in headers
                            if name.lower() in scrub.KEPT_RESPONSE_HEADERS},
                "json": self.scrubber.json(answer),
            },
        }

    def _request(self, recording: _Recording) -> dict[str, Any]:
        legacy: dict[str, Any] = {
            "method": recording.method,
            "path": self.scrubber.text(recording.path),
            "query": self.scrubber.params({name: value for name, value in recording.query
                                           if name != scrub.LEGACY_TOKEN_PARAM}),
            "headers": {name: self.scrubber.text(value)
                        for name, value in recording.headers.items()},
        }
        granted = frozenset(recording.caller.scopes)
        if granted != frozenset(scopes.ALL):
            legacy["scope"] = " ".join(scope for scope in scopes.ALL if scope in granted)
        if recording.body:
            text = recording.body.decode("utf-8")
            if recording.content_type.split(";")[0].strip().lower() == FORM:
                fields = self.scrubber.params({name: value for name, value in parse_qsl(
                    text, keep_blank_values=True) if name != scrub.LEGACY_TOKEN_PARAM})
                legacy["raw_body"] = urlencode(fields)
            elif (document := _json_document(text)) is not _NOT_JSON:
                legacy["body"] = self.scrubber.json(document)
            else:
                legacy["raw_body"] = self.scrubber.body_text(text)
        return legacy

    def _exchange(self, api: str, attempt: _Attempt) -> dict[str, Any]:
        params = {name: value for name, value in attempt.params
                  if name not in scrub.DROPPED_PLATFORM_PARAMS}
        text = attempt.body.decode("utf-8", "replace")
        response: dict[str, Any] = {}
        if attempt.status != 200:
            response["status"] = attempt.status
        document = _json_document(text)
        if document is _NOT_JSON:
            response["text"] = self.scrubber.body_text(text)
        else:
            if (api == ONE_API and isinstance(document, dict)
                    and issubclass(classify(str(document.get("code"))), UnknownApi)):
                self._unknown_api_answer = document
            response["json"] = self.scrubber.json(document)
        return {"api": api, "method": attempt.method, "params": self.scrubber.params(params),
                "response": response}


_NOT_JSON = object()


def _json_document(text: str) -> Any:
    """Return the JSON value ``text`` holds, or ``_NOT_JSON`` (duplicate members count as not)."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({name for name, _ in pairs}) != len(pairs):
            raise ValueError("duplicate member")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except ValueError:
        return _NOT_JSON


def _unreplayable(recording: _Recording, body: bytes) -> str | None:
    """Return why this request's case could not replay, or ``None``."""
    if recording.method not in METHODS:
        return f"{recording.method} is not a legacy method"
    if recording.caller is None:
        return "not authenticated (every case is replayed with a valid token)"
    if not recording.passed_gateway:
        return "refused by the shim's rate limiter (depends on timing)"
    if not recording.caller.scopes:
        return "the caller's token grants no scope"
    if recording.attempts:
        return "a platform call did not finish"
    if len({name for name, _ in recording.query}) != len(recording.query):
        return "a query parameter is repeated"
    if recording.content_type.split(";")[0].strip().lower() == "multipart/form-data":
        return "a multipart body (a case keeps a text body only)"
    try:
        recording.body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8 text"
    for call in recording.calls:
        if not call.api.startswith("/rss/"):
            return "the shim refreshed a seller token while serving it"
        if call.code == UpstreamTimeout.default_code:
            return "a platform call timed out"
        last = call.attempts[-1] if call.attempts else None
        if last is None or last.status is None or last.broken or not last.complete:
            return "a platform call got no complete answer (refused, reset or cut off)"
    if _json_document(body.decode("utf-8", "replace")) is _NOT_JSON:
        return "the answer is not JSON"
    return None


def _tag(status: int, called: bool) -> str:
    """Return the case tag a recorded answer gets (fixtures/README.md lists the tags)."""
    if status < 300:
        return "success"
    if status == 404:
        return "not-found"
    if status in (409, 412):
        return "conflict"
    if status == 403:
        return "forbidden"
    if not called and status in (400, 405, 413, 415, 422):
        return "validation"
    return "upstream-error"


def _environ_key(header: str) -> str:
    name = header.upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name


def _number(name: str) -> int:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def recording_app(settings: Settings, out_dir: Path, *, scrub_addresses: bool = False,
                  report: Callable[[str], None] | None = None,
                  store: Any = None) -> tuple[Flask, Recorder]:
    """Return the shim for ``settings`` (and ``store``, as for ``create_app``) wired to record
    into ``out_dir``, and its recorder."""
    recorder = Recorder(out_dir, max_body_bytes=settings.max_body_bytes,
                        scrub_addresses=scrub_addresses, report=report)
    return recorder.attach(create_app(settings, store=store, clock=recorder.clock)), recorder
