"""Charts for the status page, drawn here as inline SVG: no script, no font, no request.

Why not pygal (or matplotlib): pygal's SVG links a script from a CDN unless told not to and
embeds its own styles and interactivity hooks; the page's Content-Security-Policy forbids
every script, and the charts needed are three simple kinds (lines over days, a sparkline, a
timeline). Drawing them takes a hundred lines, no dependency, and gives the markup tests and
screenshots hold on to: each chart is an ``<svg class="chart ...">`` with
``data-series-count``, and each series one ``<g class="series" data-series="NAME">``
holding one path. Every name is escaped; nothing outside the page is referenced.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from shim.store.records import DAY_S

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
WARNING = " \u26a0"  # shown after a seller that must be re-authorized
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Series:
    """A named line: one value per label."""

    name: str
    values: Sequence[float]


@dataclass(frozen=True)
class TimelineRow:
    """A seller's token expiries (epoch seconds) and whether it must be re-authorized."""

    name: str
    access_expires_at: float | None
    refresh_expires_at: float | None
    needs_reauth: bool
    due: bool


def color(index: int) -> str:
    """Return the series color at ``index`` (the palette repeats)."""
    return PALETTE[index % len(PALETTE)]


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice_top(value: float) -> float:
    """Return a round number at or above ``value`` for the top of an axis."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return value  # pragma: no cover - 10 x magnitude always holds it


def _path(values: Sequence[float], *, left: float, top: float, width: float, height: float,
          ymax: float) -> str:
    step = width / max(1, len(values) - 1)
    points = [(left + i * step if len(values) > 1 else left + width / 2,
               top + height - (value / ymax) * height) for i, value in enumerate(values)]
    return "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)


def line_chart(series: Sequence[Series], *, labels: Sequence[str], chart_id: str,
               kind: str, title: str, width: int = 720, height: int = 180) -> Markup:
    """Return an SVG line chart of ``series`` over ``labels`` (first and last are shown),
    with a legend under it."""
    left, top, right, bottom = 48, 12, 12, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = _nice_top(max((max(s.values, default=0) for s in series), default=0))
    columns = 3
    legend_rows = (len(series) + columns - 1) // columns
    total_h = height + 18 * legend_rows + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {escape(kind)}" '
        f'id="{escape(chart_id)}" role="img" aria-labelledby="{escape(chart_id)}-title" '
        f'viewBox="0 0 {width} {total_h}" width="{width}" height="{total_h}" '
        f'data-series-count="{len(series)}">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<g class="axes" {_FONT} fill="#555">',
    ]
    for fraction in (0, 0.5, 1):
        y = top + plot_h - fraction * plot_h
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#ddd"/><text x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{_number(ymax * fraction)}</text>')
    if labels:
        base = top + plot_h + 16
        parts.append(f'<text x="{left}" y="{base}">{escape(labels[0])}</text>')
        parts.append(f'<text x="{left + plot_w}" y="{base}" text-anchor="end">'
                     f'{escape(labels[-1])}</text>')
    parts.append("</g>")
    for index, line in enumerate(series):
        parts.append(
            f'<g class="series" data-series="{escape(line.name)}" '
            f'data-total="{_number(sum(line.values))}"><title>{escape(line.name)}: '
            f'{_number(sum(line.values))}</title><path d="'
            f'{_path(line.values, left=left, top=top, width=plot_w, height=plot_h, ymax=ymax)}'
            f'" fill="none" stroke="{color(index)}" stroke-width="2" '
            f'stroke-linejoin="round"/></g>')
    parts.append(f'<g class="legend" {_FONT} fill="#222">')
    for index, line in enumerate(series):
        x = left + (index % columns) * (plot_w // columns)
        y = height + 4 + (index // columns) * 18
        name = line.name if len(line.name) <= 36 else line.name[:35] + "\u2026"
        parts.append(f'<g class="legend-entry" data-series="{escape(line.name)}">'
                     f'<rect x="{x}" y="{y}" width="12" height="4" fill="{color(index)}"/>'
                     f'<text x="{x + 16}" y="{y + 6}">{escape(name)}</text></g>')
    parts.append("</g></svg>")
    return Markup("".join(parts))  # noqa: S704 (every name and label went through escape)


def sparkline(values: Sequence[float], *, kind: str, title: str, width: int = 120,
              height: int = 24) -> Markup:
    """Return a small one-series SVG line of ``values`` (no axes), scaled to its maximum."""
    ymax = max(max(values, default=0), 1)
    path = _path(values, left=1, top=2, width=width - 2, height=height - 4, ymax=ymax)
    return Markup(  # noqa: S704 (every name went through escape)
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart sparkline {escape(kind)}" '
        f'role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'data-series-count="1"><title>{escape(title)}</title>'
        f'<g class="series" data-series="calls" data-total="{_number(sum(values))}">'
        f'<path d="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/></g></svg>')


def timeline(rows: Sequence[TimelineRow], *, now: float, chart_id: str,
             width: int = 720) -> Markup:
    """Return an SVG timeline: per seller, bars from now to its access and refresh expiry."""
    label_w, row_h, top = 160, 30, 22
    plot_w = width - label_w - 16
    ends = [at for row in rows for at in (row.access_expires_at, row.refresh_expires_at)
            if at is not None]
    start = now - DAY_S
    end = min(max([now + 7 * DAY_S, *ends]), now + 90 * DAY_S)

    def x(at: float) -> float:
        return label_w + (min(max(at, start), end) - start) / (end - start) * plot_w

    height = top + row_h * max(1, len(rows)) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline" '
        f'id="{escape(chart_id)}" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" data-series-count="{len(rows)}">',
        "<title>Seller tokens: access and refresh expiry</title>",
        f'<g class="axes" {_FONT} fill="#555">',
    ]
    day = int(start // DAY_S + 1) * DAY_S
    weekly = 7 * DAY_S if end - start > 21 * DAY_S else DAY_S * 2
    while day < end:
        parts.append(f'<line x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{top - 4}" '
                     f'y2="{height - 6}" stroke="#eee"/><text x="{x(day):.1f}" y="12" '
                     f'text-anchor="middle">{time.strftime("%m-%d", time.gmtime(day))}</text>')
        day += weekly
    parts.append(f'<line class="now" x1="{x(now):.1f}" x2="{x(now):.1f}" y1="{top - 6}" '
                 f'y2="{height - 4}" stroke="#222" stroke-dasharray="3 2"/></g>')
    for index, row in enumerate(rows):
        y = top + index * row_h
        reauth = row.needs_reauth
        access_state = _state(row.access_expires_at, now, due=row.due)
        refresh_state = _state(row.refresh_expires_at, now, due=False)
        access_fill = {"ok": "#2ca02c", "due": "#ff7f0e", "expired": "#d62728",
                       "unknown": "#999"}[access_state]
        parts.append(
            f'<g class="series seller" data-series="{escape(row.name)}" '
            f'data-reauth="{"needed" if reauth else "no"}" data-access="{access_state}" '
            f'data-refresh="{refresh_state}"><title>{escape(row.name)}: access '
            f'{_date(row.access_expires_at)}, refresh {_date(row.refresh_expires_at)}'
            f'{" (re-authorization needed)" if reauth else ""}</title>'
            f'<text x="4" y="{y + 15}" {_FONT} fill="{"#a40000" if reauth else "#222"}">'
            f'{escape(row.name[:24])}{WARNING if reauth else ""}</text>'
            f'<path class="access" d="M{x(now):.1f},{y + 6} '
            f'H{x(row.access_expires_at or now):.1f}" stroke="{access_fill}" stroke-width="8"/>'
            f'<path class="refresh" d="M{x(now):.1f},{y + 17} '
            f'H{x(row.refresh_expires_at or now):.1f}" stroke="'
            f'{"#d62728" if refresh_state == "expired" else "#1f77b4"}" stroke-width="5"/>'
            + (f'<text x="{x(now) + 6:.1f}" y="{y + 15}" {_FONT} fill="#555">no expiry known'
               '</text>' if access_state == refresh_state == "unknown" else "") + '</g>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every name and label went through escape)


def _state(expires_at: float | None, now: float, *, due: bool) -> str:
    """Return "unknown" (no expiry known: tokens from the settings file), "expired", "due"
    or "ok"."""
    if expires_at is None:
        return "unknown"
    return "expired" if expires_at <= now else "due" if due else "ok"


def _date(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch)) if epoch else "none"
