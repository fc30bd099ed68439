"""Traces (shim/tracing.py): a span per legacy request, a child per platform call, through
real HTTP against the sandbox, read with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from processes import default_sigint
from served import clean_env, free_port, running

from shim.app import create_app
from shim.config import ConfigError
from shim.services import get_services
from shim.serving import LocalServer

LOT = "/v1/products/100150/pickup-locations/23789/stock-lots/0"
LOT_RULE = ("/v1/products/<product_id>/pickup-locations/<pickup_location_id>/stock-lots/"
            "<stock_lot_id>")
MERGE_PATCH = "application/merge-patch+json"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def traced(db_settings, db_store):
    """A shim (database mode: it refreshes) with tracing on, its spans kept in memory;
    yield (server, exporter)."""
    app = create_app(replace(db_settings, tracing=True), store=db_store)
    exporter = InMemorySpanExporter()
    get_services(app).tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    with LocalServer(app) as server:
        yield server, exporter
    get_services(app).close()


def patch_lot(legacy, quantity: int, **headers):
    return legacy.patch(LOT, data=json.dumps({"quantityAtPickupLocation": quantity}),
                        headers={"If-Match": '"10"', "Content-Type": MERGE_PATCH, **headers})


def test_one_patch_is_one_trace_with_the_read_and_the_update_as_children(
        traced, legacy_client, sandbox):
    server, exporter = traced
    legacy = legacy_client(server.base_url)
    legacy.token()  # the token request's own trace is not the one under test
    exporter.clear()
    answer = patch_lot(legacy, 9)
    assert answer.status_code == 200, answer.text
    legacy.close()
    spans = exporter.get_finished_spans()
    (root,) = [span for span in spans if span.parent is None]
    assert {span.context.trace_id for span in spans} == {root.context.trace_id}
    assert root.name == f"PATCH {LOT_RULE}" and root.kind is SpanKind.SERVER
    assert root.attributes["http.route"] == LOT_RULE
    assert root.attributes["http.request.method"] == "PATCH"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["shim.client"] == "full"
    assert root.attributes["shim.request_id"] == answer.headers["X-Request-Id"]
    children = sorted((span for span in spans if span is not root), key=lambda s: s.start_time)
    assert [span.name for span in children] == ["/rss/stockLot/get", "/rss/stockLot/update"]
    sent = [entry for entry in sandbox.state.ledger() if entry["api"] in
            ("/rss/stockLot/get", "/rss/stockLot/update")]
    for child, entry in zip(children, sent, strict=True):
        assert child.parent.span_id == root.context.span_id
        assert child.kind is SpanKind.CLIENT
        assert dict(child.attributes) == {
            "http.request.method": "POST" if child.name.endswith("update") else "GET",
            "lazada.api": child.name, "lazada.code": "0", "lazada.retries": 0,
            "lazada.request_id": entry["request_id"]}
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time


def test_a_clients_traceparent_is_continued(traced, legacy_client):
    server, exporter = traced
    legacy = legacy_client(server.base_url)
    legacy.token()
    exporter.clear()
    answer = legacy.get("/v1/products/100150",
                        headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert answer.status_code == 200
    legacy.close()
    spans = exporter.get_finished_spans()
    assert {format(span.context.trace_id, "032x") for span in spans} == {CLIENT_TRACE}
    (root,) = [span for span in spans if span.kind is SpanKind.SERVER]
    assert format(root.parent.span_id, "016x") == CLIENT_SPAN and root.parent.is_remote


def test_platform_failures_and_5xx_are_errors_with_their_code(traced, legacy_client, sandbox):
    server, exporter = traced
    legacy = legacy_client(server.base_url)
    legacy.token()
    exporter.clear()
    sandbox.state.expire("414", access=True, refresh=True)  # the tokens are refused
    assert legacy.get("/v1/products/100150").status_code == 503
    legacy.close()
    spans = exporter.get_finished_spans()
    (root,) = [span for span in spans if span.kind is SpanKind.SERVER]
    assert root.status.status_code is StatusCode.ERROR
    codes = [span.attributes["lazada.code"] for span in spans if span is not root]
    assert "IllegalAccessToken" in codes
    assert all(span.status.status_code is StatusCode.ERROR
               for span in spans if span is not root and span.attributes["lazada.code"] != "0")


def test_no_secret_is_in_any_span(traced, legacy_client, sandbox, test_secrets, db_store,
                                  db_settings):
    server, exporter = traced
    legacy = legacy_client(server.base_url)
    token = legacy.token()
    assert patch_lot(legacy, 8).status_code == 200
    sandbox.state.expire("414", access=True, refresh=False)  # a refresh, then the replay
    assert legacy.get("/v1/products/100150?access_token=query-secret-123").status_code in (
        200, 400)
    assert legacy.get(LOT).status_code == 200
    legacy.close()
    spans = exporter.get_finished_spans()
    assert any(span.name == "/auth/token/refresh" for span in spans)
    text = "\n".join(
        [span.name for span in spans]
        + [repr(value) for span in spans for value in span.attributes.values()]
        + [repr(value) for span in spans for value in span.resource.attributes.values()]
        + [str(span.status.description) for span in spans])
    refreshed = db_store.get_seller("main")  # the tokens the sandbox issued on refresh
    assert refreshed.access_token != test_secrets.access_token
    secrets = [*test_secrets.all(), token, refreshed.access_token, refreshed.refresh_token,
               db_settings.encryption_key, "query-secret-123", "access_token", "sign"]
    assert not [secret for secret in secrets if secret in text]


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        self.server.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def collector():
    """An OTLP/HTTP collector on a free local port: yield (endpoint, a function returning
    the span names received by service name)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def spans() -> dict[str, set[str]]:
        names: dict[str, set[str]] = {}
        for body in server.received:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                names.setdefault(service["service.name"], set()).update(
                    span.name for scope in resource.scope_spans for span in scope.spans)
        return names

    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", spans
    server.shutdown()
    server.server_close()


EXPORTED = {"GET /v1/products/<product_id>", "/rss/product/get"}


def test_spans_are_exported_over_otlp_http_when_configured(settings, legacy_client, collector):
    endpoint, spans = collector
    app = create_app(replace(settings, otlp_endpoint=endpoint))  # which turns tracing on
    with LocalServer(app) as server:
        legacy = legacy_client(server.base_url)
        assert legacy.get("/v1/products/100150").status_code == 200
        legacy.close()
    get_services(app).close()  # sends what the batch still holds
    assert set(spans()) == {"redmart-shim"}
    assert spans()["redmart-shim"] >= EXPORTED


def test_serve_exports_its_workers_spans_by_the_setting(
        write_declarative_config, sandbox, test_secrets, legacy_client, collector, tmp_path):
    """As deployed: `redmart-shim serve` (nginx, gunicorn's forked workers) with only
    SHIM_OTLP_ENDPOINT set; the worker's spans leave by its stop at the latest."""
    endpoint, spans = collector
    config = tmp_path / "shim.toml"
    write_declarative_config(config, sandbox.api_url)
    port = free_port()
    env = clean_env(SHIM_APP_SECRET=test_secrets.app_secret,
                    SHIM_MAIN_ACCESS_TOKEN=test_secrets.access_token,
                    SHIM_OTLP_ENDPOINT=endpoint)
    with running(["serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"], env, port,
                 tmp_path / "serve.log") as base_url:
        legacy = legacy_client(base_url)
        assert legacy.get("/v1/products/100150").status_code == 200
        legacy.close()
    assert spans().get("redmart-shim", set()) >= EXPORTED, (tmp_path / "serve.log").read_text()


def test_an_endpoint_must_be_an_http_url(settings):
    with pytest.raises(ConfigError, match="otlp_endpoint must be an http"):
        replace(settings, otlp_endpoint="collector:4318")


def test_without_tracing_a_serving_app_loads_no_opentelemetry(settings):
    """Startup cost: with tracing off, serving a request imports nothing of OpenTelemetry."""
    script = (
        "import sys\n"
        "from shim.config import Settings\n"
        "from shim.app import create_app\n"
        f"settings = Settings(app_key='1', app_secret='x' * 16, api_url={settings.api_url!r})\n"
        "app = create_app(settings)\n"
        "assert app.test_client().get('/v1/products').status_code == 401\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n")
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, preexec_fn=default_sigint)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "[]"
