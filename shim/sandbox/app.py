"""``create_sandbox_app``: the Flask app that plays the Lazada Open Platform under ``/rest``.

One view serves every ``/rest/...`` path the way the gateway does: resolve the API, apply any
fault rule, check the system parameters, then hand over to the RSS or token handler. Every
call, refused or not, lands in the ledger.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, request

from shim.sandbox import auth, control, faults, rss
from shim.sandbox import params as p
from shim.sandbox.config import SandboxConfig
from shim.sandbox.gateway import (
    BusinessFailure,
    GatewayRefusal,
    business_params,
    error_body,
    failure_result,
    new_request_id,
    result_body,
    success_result,
    verify_call,
)
from shim.sandbox.state import SandboxState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

DROP = "shim.sandbox.drop"  # environ flag: close the socket instead of answering
JSON = "application/json;charset=UTF-8"


def create_sandbox_app(config: SandboxConfig) -> Flask:
    """Return a new sandbox app with its own seeded state in ``app.extensions["sandbox"]``."""
    app = Flask("shim.sandbox")
    app.extensions["sandbox"] = SandboxState(config)
    app.register_blueprint(auth.bp)
    app.register_blueprint(control.bp)
    app.add_url_rule("/rest", "rest", rest, methods=["GET", "POST"], defaults={"api": ""})
    app.add_url_rule("/rest/<path:api>", "rest", rest, methods=["GET", "POST"])
    # Flask's documented way to wrap its WSGI app in middleware; mypy sees a method overwritten.
    app.wsgi_app = DropConnection(app.wsgi_app)  # type: ignore[method-assign]
    return app


def state_of(app: Flask) -> SandboxState:
    """Return a sandbox app's state (stock, tokens, ledger, faults)."""
    state = app.extensions["sandbox"]
    assert isinstance(state, SandboxState)
    return state


def get_state() -> SandboxState:
    """Return the current app's sandbox state."""
    return state_of(current_app)


def rest(api: str) -> Response:
    """Answer one platform call, with any fault rule that fires for its path applied."""
    state = get_state()
    api_path = "/" + api
    state.pause(state.latency_ms)
    values = _params()
    request_id = new_request_id()
    entry: dict[str, Any] = {"api": api_path, "method": request.method,
                             "request_id": request_id, "params": business_params(values),
                             "source": "api"}
    rule = state.draw_fault(api_path)
    if rule is not None:
        entry["fault"] = rule.kind
        if rule.kind != faults.SLEEP:  # a sleep fault waits after the call has run, below
            state.pause(rule.latency_ms)
        if rule.kind == faults.OUTSIDE_WRITE:
            _outside_write(state, rule, values)
        elif not rule.runs_call and rule.kind not in faults.ANSWER_NORMALLY:
            if rule.land_after_ms:
                _land_later(state, rule.land_after_ms, api_path, values, request_id, entry)
            return _fault_answer(state, rule, request_id, entry)
    body = _answer(state, api_path, values, request_id, entry)
    state.record(entry)
    if rule is not None and rule.run:  # the call ran; its answer is the fault's anyway
        return _fault_answer(state, rule, request_id, entry, recorded=True)
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if rule is not None and rule.kind == faults.SLEEP:
        state.pause(rule.latency_ms)
    elif rule is not None and rule.kind == faults.TRUNCATED:
        payload = payload[: len(payload) // 2]
    elif rule is not None and rule.kind == faults.LOST:
        request.environ[DROP] = True
    return Response(payload, status=200, content_type=JSON)


def _params() -> dict[str, str]:
    # Parameters may travel in the query, the body, or both (the PHP SDK splits them); files
    # are not parameters, as they are not signed either.
    values: dict[str, str] = {}
    for source in (request.args, request.form):
        for name, value in source.items(multi=True):
            values.setdefault(name, value)
    return values


def _answer(state: SandboxState, api_path: str, values: dict[str, str], request_id: str,
            entry: dict[str, Any]) -> dict[str, Any]:
    try:
        if api_path in auth.TOKEN_APIS:
            verify_call(state, api_path, values, needs_token=False)
            store_id, body = auth.TOKEN_APIS[api_path](state, values)
            entry.update(store_id=store_id, code="0", success=True)
            return {**body, "request_id": request_id}
        api = rss.APIS.get(api_path)
        if api is None or (api.path == rss.SINGLE_LOCATION_API
                           and not state.config.single_location_api):
            raise GatewayRefusal("InvalidApiPath")
        store_id = verify_call(state, api_path, values, needs_token=True)
        entry["store_id"] = store_id
        return result_body(_run_rss(state, api, store_id, values, entry), request_id)
    except GatewayRefusal as refusal:
        entry.update(code=refusal.code, success=False, error=refusal.message)
        return error_body(refusal, request_id)


def _run_rss(state: SandboxState, api: rss.RssApi, store_id: str, values: dict[str, str],
             entry: dict[str, Any]) -> dict[str, Any]:
    parsed = p.read(api.spec, values)
    catalog = state.catalog(store_id)
    assert catalog is not None, "an access token is only issued for a store with a catalog"
    call = rss.Call(state, store_id, catalog)
    variance = state.variance
    try:
        data, page = rss.run(api, call, parsed)
    except BusinessFailure as failure:
        entry.update(call.notes, code="0", success=False, error=failure.message)
        return failure_result(failure.message, variance=variance)
    entry.update(call.notes, code="0", success=True)
    return success_result(rss.vary(api.kind, data) if variance else data, page=page,
                          variance=variance)


def _land_later(state: SandboxState, delay_ms: int, api_path: str, values: dict[str, str],
                request_id: str, entry: dict[str, Any]) -> None:
    """Run the call ``delay_ms`` from now: a backend finishing what its gateway gave up on.

    The ledger gets a second entry (``late``) for the call when it runs.
    """
    late = {**entry, "late": True}

    def land() -> None:
        if not state.stopping.wait(delay_ms / 1000):
            _answer(state, api_path, values, request_id, late)
            state.record(late)

    threading.Thread(target=land, name="sandbox-late-call", daemon=True).start()


def _fault_answer(state: SandboxState, rule: faults.FaultRule, request_id: str,
                  entry: dict[str, Any], *, recorded: bool = False) -> Response:
    """Return the fault's answer; unless the call ran (``recorded``), record it as failed."""
    outcome: dict[str, Any] = {"code": None, "success": False}
    if rule.kind == faults.RESET:
        request.environ[DROP] = True
        answer = Response(b"", status=200)
    elif rule.kind in faults.HTTP_STATUS:
        status = faults.HTTP_STATUS[rule.kind]
        outcome["http_status"] = status
        answer = Response(faults.HTML_ERROR.format(status=status), status=status,
                          mimetype="text/html")
    elif rule.kind == faults.HTML:
        answer = Response(faults.HTML_BLOCK_PAGE, status=200, mimetype="text/html")
    else:
        error_type, message = rule.gateway_error()
        refusal = GatewayRefusal(rule.kind, error_type=error_type, message=message)
        outcome.update(code=rule.kind, error=message)
        answer = Response(json.dumps(error_body(refusal, request_id)), status=200,
                          content_type=JSON)
    if not recorded:
        entry.update(outcome)
        state.record(entry)
    return answer


def _outside_write(state: SandboxState, rule: faults.FaultRule, values: dict[str, str]) -> None:
    """Change the lot a call names, as the warehouse would, and record it as an outside write.

    Nothing happens when the call names no lot, or when the change would leave the lot
    impossible (negative, or more scheduled than at the location).
    """
    try:
        key = (str(int(values["storeId"])), int(values["productId"]),
               str(int(values["pickupLocationId"])))
    except (KeyError, ValueError):
        return
    with state.lock:
        lot = state.get_lot(*key)
        if lot is None:
            return
        at = lot["quantityAtPickupLocation"] + rule.at_delta
        scheduled = lot["quantityScheduledForPickup"] + rule.scheduled_delta
        if min(at, scheduled) < 0:
            return
        change = state.set_lot(*key, at=at, scheduled=scheduled)
        if change is None or not change.applied:
            return
        state.record({"api": "/_sandbox/stock", "method": "POST", "source": "outside",
                      "via": faults.OUTSIDE_WRITE, "store_id": key[0],
                      "params": {"productId": key[1], "pickupLocationId": key[2]},
                      "code": "0", "success": True, "before": change.before,
                      "after": change.after, "applied": True})


class DropConnection:
    """WSGI middleware: when a view set ``DROP``, close the socket instead of answering.

    Raising ``ConnectionResetError`` makes werkzeug's server treat the request as a dropped
    connection (no 500 page, no log line); shutting the socket down first makes sure the
    client sees the connection end at once instead of waiting for its read timeout.
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        """Run the app; drop the connection if the view asked for it."""
        body = self.wsgi_app(environ, start_response)
        if not environ.get(DROP):
            return body
        if hasattr(body, "close"):
            body.close()
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Linger 0: the final close sends a reset rather than a graceful goodbye.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionResetError("the sandbox dropped this connection on purpose")
