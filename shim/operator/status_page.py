"""What the status page shows, gathered from the services: at a glance, the sellers' tokens
(table and timeline), the platform APIs over the last hour with their circuit breakers,
and the legacy clients' usage for the retirement planner (charts and table).

The breakers come from ``services.breakers.snapshot()`` (one per platform API and app; the
worst state of an API is shown); an API without one (token calls are not guarded) says
"none".
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shim import usage
from shim.operator import charts
from shim.store.records import DAY_S
from shim.upstream import breaker

if TYPE_CHECKING:
    from shim.services import Services
    from shim.upstream.breaker import BreakerView

REFRESH_S = 30  # the page reloads itself this often (meta refresh: no script)
PLAN_DAYS = 30


@functools.cache
def version() -> str:
    """Return the installed package's version."""
    return importlib.metadata.version("redmart-shim")


def when(epoch: float | None) -> str:
    """Return an epoch time as the page writes it, or "-"."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def context(services: Services) -> dict[str, Any]:
    """Return the status template's variables."""
    now = services.clock()
    store = services.store
    sellers = store.list_sellers()
    clients = store.list_clients()
    last_24h = services.usage.last_24h()  # flushes this process's counts first
    plan = usage.plan(store.usage_by_route(int(now // DAY_S) - PLAN_DAYS + 1), clients,
                      now=now, days=PLAN_DAYS,
                      retire_after_days=services.settings.retire_after_days)
    seller_rows: list[dict[str, Any]] = [{
        "seller": seller,
        "expires": when(seller.access_expires_at),
        "refresh_expires": when(seller.refresh_expires_at),
        "last_refresh": when(seller.last_refresh_at),
        "due": services.tokens.is_due(seller),
        "reauth": seller.needs_reauth or not seller.access_token,
    } for seller in sellers]
    apis = _apis(services)
    attention = ([{"kind": "reauth", "name": row["seller"].name,
                   "text": f"seller {row['seller'].name} must be re-authorized"}
                  for row in seller_rows if row["reauth"]]
                 + [{"kind": "breaker", "name": api["api"],
                     "text": f"circuit breaker {api['breaker']} for {api['api']}"}
                    for api in apis if api["breaker"] in ("open", "half_open")])
    return {
        "generated": when(now),
        "read_only": store.read_only,
        "instance": {"hostname": socket.gethostname(), "pid": os.getpid(),
                     "version": version()},
        "attention": attention,
        "retire": [client for client in plan.clients if client.ready_to_retire],
        "sellers": seller_rows,
        "timeline": charts.timeline(
            [charts.TimelineRow(row["seller"].name, row["seller"].access_expires_at,
                                row["seller"].refresh_expires_at, row["reauth"], row["due"])
             for row in seller_rows], now=now, chart_id="token-timeline"),
        "apis": apis,
        "health_since": when(services.health.started_at),
        "clients": [{"client": client, "calls": last_24h.get(client.client_id, 0)}
                    for client in clients],
        "plan": plan,
        "plan_rows": [_plan_row(client) for client in plan.clients],
        "usage_chart": charts.line_chart(
            [charts.Series(client.client_id, client.daily_calls) for client in plan.clients],
            labels=plan.day_dates(), chart_id="usage-chart", kind="usage",
            title=f"Legacy calls per day and client, last {PLAN_DAYS} days"),
        "route_charts": [(client.client_id, charts.line_chart(
            [charts.Series(route.route, route.daily_calls) for route in client.routes],
            labels=plan.day_dates(), chart_id=f"usage-routes-{index}", kind="usage-routes",
            title=f"{client.client_id}: calls per day and route", height=140))
            for index, client in enumerate(plan.clients) if client.routes],
    }


def _plan_row(client: usage.ClientPlan) -> dict[str, Any]:
    return {
        "client": client,
        "first": when(client.first_at), "last": when(client.last_at),
        "error_share": f"{client.error_share:.1%}" if client.calls else "-",
        "sparkline": charts.sparkline(client.daily_calls, kind="usage-days",
                                      title=f"{client.client_id}: calls per day"),
    }


def _apis(services: Services) -> list[dict[str, Any]]:
    """Return a row per platform API called in the last hour or having a breaker."""
    breakers: dict[str, list[BreakerView]] = {}
    for view in services.breakers.snapshot():
        breakers.setdefault(view.api, []).append(view)
    health = {api.api: api for api in services.health.snapshot()}
    rows = []
    for name in sorted(set(health) | set(breakers)):
        api = health.get(name)
        worst = _worst(breakers.get(name, ()))
        rows.append({
            "api": name,
            "calls": api.calls if api else 0,
            "error_rate": f"{api.error_rate:.1%}" if api and api.calls else "-",
            "p50": _ms(api.p50_s if api else None),
            "p99": _ms(api.p99_s if api else None),
            "sparkline": charts.sparkline(api.per_minute if api else (0,) * 60,
                                          kind="api-minutes",
                                          title=f"{name}: calls per minute, last hour"),
            "breaker": worst.state if worst else "none",
            "breaker_since": when(worst.since) if worst and worst.state != "closed" else "",
            "retry_after_s": worst.retry_after_s if worst else None,
        })
    return rows


def _worst(views: Iterable[BreakerView]) -> BreakerView | None:
    """Return the breaker furthest from closed (one per app may guard an API)."""
    return max(views, key=lambda view: breaker.STATES.index(view.state), default=None)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
