"""deploy/: the Prometheus rules pass promtool and their unit tests, and every metric and label
the rules and the Grafana dashboard use exists in a live scrape of ``redmart-shim serve``.

promtool comes from Debian's prometheus package, installed by ``scripts/ensure-promtool``
when missing; if it still cannot be found the tests fail (never skip). PromQL is read with
promql-parser (the Rust parser behind GreptimeDB), not with regular expressions.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from served import free_port, running

from shim.legacy import ROUTES
from shim.record.settings import STORE_ID

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "redmart-shim.json"
ENSURE_PROMTOOL = ROOT / "scripts" / "ensure-promtool"
# What Grafana puts in a query before Prometheus sees it; the values only need to parse.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                     "$api": ".*", "$client": ".*"}
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")
TEMPLATE_LABEL = re.compile(r"\{\{\s*\$?(?:labels\.)?(\w+)\s*\}\}")  # {{route}}, {{ $labels.api }}
LOT = "/v1/products/100150/pickup-locations/23789/stock-lots"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        answer = subprocess.run([str(ENSURE_PROMTOOL)], capture_output=True, text=True,
                                timeout=900)
        found = answer.stdout.strip() if answer.returncode == 0 else None
        if not found:
            pytest.fail("promtool (Debian's prometheus package) is not installed and "
                        f"scripts/ensure-promtool could not install it: {answer.stderr[-2000:]}")
    return found


def test_the_rules_pass_promtool_check(promtool):
    answer = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=120)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "SUCCESS: 6 rules found" in answer.stdout


def test_the_rules_pass_their_unit_tests(promtool):
    answer = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                            text=True, timeout=120)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in rules()}, "every alert has a unit test"


def test_every_rule_has_a_severity_a_summary_and_a_for():
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["for"], rule["alert"]


def test_the_dashboard_is_an_importable_model_with_the_datasource_as_a_variable():
    model = json.loads(DASHBOARD.read_text())
    assert model["uid"] == "redmart-shim" and "id" not in model  # import makes the id
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in model["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"], panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


# --- every metric and label used exists in a live scrape -------------------------------------

@dataclass
class Use:
    """Where a query is used, the query, and the labels its templates name."""

    where: str
    expr: str
    template_labels: set[str] = field(default_factory=set)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def uses() -> list[Use]:
    """Every PromQL query of the rules and the dashboard, with the labels its text names."""
    found = [Use(f"rule {rule['alert']}", rule["expr"],
                 {name for text in rule["annotations"].values()
                  for name in TEMPLATE_LABEL.findall(text)})
             for rule in rules()]
    model = json.loads(DASHBOARD.read_text())
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            found.append(Use(f"panel {panel['title']!r}", grafana(target["expr"]),
                             set(TEMPLATE_LABEL.findall(target.get("legendFormat", "")))))
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = LABEL_VALUES.fullmatch(variable["query"]["query"]).groups()
            found.append(Use(f"variable {variable['name']}", metric, {label}))
    return found


def grafana(expr: str) -> str:
    """Return ``expr`` with Grafana's variables replaced, as Prometheus receives it."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


def children(node: object) -> Iterator[object]:
    """Yield the expressions directly under ``node`` (none under a selector or a literal)."""
    if isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.BinaryExpr):
        yield node.lhs
        yield node.rhs
    elif isinstance(node, promql_parser.Call):
        yield from node.args
    elif isinstance(node, (promql_parser.AggregateExpr, promql_parser.ParenExpr,
                           promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        yield node.expr
    else:
        assert isinstance(node, (promql_parser.VectorSelector, promql_parser.NumberLiteral,
                                 promql_parser.StringLiteral)), node


def selectors(node: object) -> Iterator[promql_parser.VectorSelector]:
    """Yield every vector selector under ``node``."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    for child in children(node):
        yield from selectors(child)


def grouping_labels(node: object) -> Iterator[tuple[str, object]]:
    """Yield (label, the node whose selectors must carry it) for every by/without/on/ignoring
    and group_left/right label under ``node``."""
    if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
        for label in node.modifier.labels:
            yield label, node.expr
    elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None \
            and node.modifier.matching is not None:
        for label in node.modifier.matching.labels:
            yield label, node.lhs
            yield label, node.rhs
    for child in children(node):
        yield from grouping_labels(child)


def problems(use: Use, scraped: dict[str, dict[str, set[str]]]) -> list[str]:
    """Return what ``use`` names that the scrape lacks (metric, label, or matched value)."""
    tree = promql_parser.parse(use.expr)
    found: list[str] = []
    everywhere: set[str] = set()
    for selector in selectors(tree):
        labels = scraped.get(selector.name)
        if labels is None:
            found.append(f"{use.where}: metric {selector.name} is not in the scrape")
            continue
        everywhere |= labels.keys()
        for matcher in selector.matchers.matchers:
            values = labels.get(matcher.name)
            if values is None:
                found.append(f"{use.where}: {selector.name} has no label {matcher.name}")
            elif str(matcher.op) in ("MatchOp.Equal", "MatchOp.Re"):
                pattern = re.escape(matcher.value) if str(matcher.op) == "MatchOp.Equal" \
                    else matcher.value
                if not any(re.fullmatch(pattern, value) for value in values):
                    found.append(f"{use.where}: no {selector.name} sample has "
                                 f"{matcher.name} matching {matcher.value!r} ({values})")
    for label, under in grouping_labels(tree):
        if not any(label in scraped.get(s.name, {}) for s in selectors(under)):
            found.append(f"{use.where}: label {label} is on none of the metrics it groups")
    for label in use.template_labels - everywhere:
        found.append(f"{use.where}: its text names label {label}, on none of its metrics")
    return found


def test_every_query_parses_and_names_its_metrics():
    names = {s.name for use in uses() for s in selectors(promql_parser.parse(use.expr))}
    assert {"shim_legacy_requests_total", "shim_legacy_request_duration_seconds_bucket",
            "shim_upstream_calls_total", "shim_upstream_retries_total",
            "shim_seller_token_refreshes_total", "shim_seller_reauthorization_required_total",
            "shim_seller_needs_reauthorization", "shim_rate_limited_total",
            "shim_client_requests_total", "shim_upstream_breaker_state",
            "shim_admission_refused_total"} <= names


@pytest.fixture
def served(db_settings, serve_environment, db_store, tmp_path) -> Iterator[str]:
    """A real ``redmart-shim serve`` (nginx and gunicorn, PROMETHEUS_MULTIPROC_DIR set as in
    production); yield its base URL."""
    port = free_port()
    env = serve_environment(
        SHIM_OPERATOR_TOKEN=db_settings.operator_token, SHIM_BACKGROUND_TASKS="false",
        SHIM_READ_RETRIES="1", SHIM_BREAKER_FAILURES="2", SHIM_BREAKER_OPEN_S="600",
        SHIM_MAX_IN_FLIGHT="1")
    with running(["serve", "--bind", f"127.0.0.1:{port}"], env, port,
                 tmp_path / "serve.out") as base_url:
        yield base_url


def test_every_metric_and_label_used_is_in_a_live_scrape(
        served, legacy_client, sandbox, operator_token):
    legacy = legacy_client(served)
    now_ms = str(int(time.time() * 1000))
    calls = [
        ("GET", "/v1/pickup-locations", 200), ("GET", "/v1/pickup-locations/23789", 200),
        ("GET", "/v1/pickup-locations/999999", 404),
        ("GET", "/v1/products", 200), ("GET", "/v1/products/100150", 200),
        ("GET", "/v1/products/999999999", 404), ("GET", "/v1/products/abc", 400),
        ("GET", LOT, 200), ("GET", LOT + "/0", 200),
        ("GET", LOT + "/7", 404),
        ("GET", "/v1/pickup-jobs?from=" + now_ms, 200), ("GET", "/v1/pickup-jobs/1", 404),
    ]
    for method, path, status in calls:
        answer = legacy.request(method, path)
        assert answer.status_code == status, (path, answer.text)
    etag = legacy.get(LOT + "/0").headers["ETag"]
    update = legacy.patch(LOT + "/0", data=json.dumps({"quantityAtPickupLocation": 9}),
                          headers={"If-Match": etag,
                                   "Content-Type": "application/merge-patch+json"})
    assert update.status_code == 200, update.text
    stale = legacy.patch(LOT + "/0", data=json.dumps({"quantityAtPickupLocation": 8}),
                         headers={"If-Match": etag,
                                  "Content-Type": "application/merge-patch+json"})
    assert stale.status_code == 412
    # A retried read: the platform's gateway fails once.
    requests.post(f"{sandbox.base_url}/_sandbox/faults", timeout=5,
                  json={"api": "/rss/product/get", "kind": "http503", "times": 1})
    assert legacy.get("/v1/products/100150").status_code == 200
    # Over the pickup jobs' limit (1 per second by default): refused with 429.
    statuses = [legacy.get("/v1/pickup-jobs?from=" + now_ms).status_code for _ in range(3)]
    assert 429 in statuses
    # A platform API failing: its circuit breaker opens (2 failures here), its route is a 503.
    requests.post(f"{sandbox.base_url}/_sandbox/faults", timeout=5,
                  json={"api": "/rss/pickupLocations/get", "kind": "http500", "times": 2})
    assert [legacy.get("/v1/pickup-locations").status_code for _ in range(3)][-1] == 503
    # One request in flight (the platform is slow) fills the instance: the next is refused.
    requests.post(f"{sandbox.base_url}/_sandbox/latency", json={"ms": 3000}, timeout=5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(legacy.get, "/v1/products/100150")
        while "shim_requests_in_flight 1.0" not in metrics_text(served, operator_token):
            assert not slow.done(), "the slow request ended before it was seen in flight"
            time.sleep(0.05)
        assert legacy.get("/v1/products/100150").status_code == 503
        assert slow.result().status_code == 200
    requests.post(f"{sandbox.base_url}/_sandbox/latency", json={"ms": 0}, timeout=5)
    # The access token expired: refreshed, then replayed.
    sandbox.state.expire(STORE_ID, access=True, refresh=False)
    assert legacy.get("/v1/products/100150").status_code == 200
    # Both tokens refused: the seller must authorize again, and the call is a 503.
    sandbox.state.expire(STORE_ID, access=True, refresh=True)
    assert legacy.get("/v1/products/100150").status_code == 503
    scraped = scrape(served, operator_token)
    legacy.close()

    served_routes = scraped["shim_legacy_requests_total"]["route"]
    assert {route.rule for route in ROUTES} <= served_routes
    assert scraped["shim_seller_needs_reauthorization"]["seller"] == {"main"}
    assert scraped["shim_upstream_breaker_transitions_total"]["to"] == {"open"}
    assert scraped["shim_admission_refused_total"]["scope"] == {"instance"}
    found = [problem for use in uses() for problem in problems(use, scraped)]
    assert not found, "\n".join(found)


def test_the_check_finds_an_unknown_metric_label_or_value():
    scraped = {"shim_x_total": {"route": {"/v1/products"}, "status": {"200"}}}
    assert problems(Use("ok", 'sum by (route) (rate(shim_x_total{status="200"}[5m]))',
                        {"route"}), scraped) == []
    assert problems(Use("bad", 'sum by (client) (rate(shim_y_total[5m])) '
                               '+ on (route) sum by (route) (shim_x_total{status=~"5.."})'
                               ' + shim_x_total{code="0"}', {"seller"}), scraped) == [
        "bad: metric shim_y_total is not in the scrape",
        "bad: no shim_x_total sample has status matching '5..' ({'200'})",
        "bad: shim_x_total has no label code",
        "bad: label route is on none of the metrics it groups",
        "bad: label client is on none of the metrics it groups",
        "bad: its text names label seller, on none of its metrics"]


def metrics_text(base_url: str, operator_token: str) -> str:
    """Return the shim's /metrics exposition."""
    answer = requests.get(base_url + "/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {operator_token}"})
    assert answer.status_code == 200
    return answer.text


def scrape(base_url: str, operator_token: str) -> dict[str, dict[str, set[str]]]:
    """Return {sample name: {label: values seen}} from the shim's /metrics."""
    samples: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(metrics_text(base_url, operator_token)):
        for sample in family.samples:
            labels = samples.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return samples
