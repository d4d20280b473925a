"""The report as one self-contained HTML page: CSS in the page, charts as base64 ``data:`` URIs.

No external resource is referenced, so the file can be mailed, archived or opened offline as is.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from archive.charts import Chart
from archive.table import Cell, ReportFigures, Table

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; color: #1d2733; background: #f6f8fa; }
h1 { margin-bottom: 4px; } .sub { color: #5b6776; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 10px 16px;
        min-width: 130px; }
.card .v { font-size: 22px; font-weight: 600; } .card .k { color: #5b6776; font-size: 12px; }
section { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 12px 18px;
          margin: 16px 0; }
img { max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e3e7eb; padding: 4px 10px; text-align: right; }
th { background: #eef2f6; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
.note { color: #5b6776; font-size: 13px; }
"""

FILL_NOTE = (
    "Fill rate = served / requests, from the exact request counts every ad-server worker publishes per "
    "minute (requests = served + no-fill: valid requests that reached the auction; requests refused with "
    "422 or 503 are shown beside, not counted). Counts come in whole windows (a minute by default): those "
    "starting at or after --since. View rate = views / served ads exported from PostgreSQL: the share of "
    "served ads whose view was reported."
)


def _fmt(value: Cell, column: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if column in ("ctr", "conversion_rate", "fill_rate", "view_rate", "share_of_requests"):
            return f"{value * 100:.2f}%"
        return f"{value:,.4f}"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Decimal):
        return f"{value:,f}"
    return str(value)


def table_html(table: Table, *, limit: int | None = None) -> str:
    rows = table.rows if limit is None else table.rows[:limit]
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape(_fmt(v, c))}</td>" for v, c in zip(row, table.columns, strict=True))
        + "</tr>"
        for row in rows
    )
    more = (
        f'<p class="note">{len(rows)} of {len(table.rows)} rows; all in {escape(table.name)}.csv</p>'
        if len(rows) < len(table.rows)
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def chart_html(chart: Chart) -> str:
    data = base64.b64encode(chart.path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(chart.title)}" src="data:image/png;base64,{data}">'


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_html(
    figures: ReportFigures,
    charts: list[Chart],
    *,
    generated_at: datetime,
    since: datetime | None,
    top_n: int,
    until: datetime | None = None,
) -> str:
    """The whole page."""
    t = figures.totals
    cards = [
        ("events", _fmt(t.events, "")),
        ("spend", _fmt(t.spend, "")),
        ("campaigns", _fmt(t.campaigns, "")),
        ("views", _fmt(t.views, "")),
        ("clicks", _fmt(t.clicks, "")),
        ("acquisitions", _fmt(t.acquisitions, "")),
        ("CTR", _fmt(t.clicks / t.views if t.views else None, "ctr")),
        ("fill (served/requests)", _fmt(t.fill_rate, "fill_rate")),
        ("view rate (views/served)", _fmt(t.view_rate, "view_rate")),
    ]
    by_name = {c.name: c for c in charts}
    sections = [
        f"<section><h2>{escape(figures.top_campaigns.title)}</h2>{chart_html(by_name['top_campaigns'])}"
        f"{table_html(figures.top_campaigns, limit=top_n)}</section>"
    ]
    for name, table in figures.by_dimension.items():
        chart = by_name.get(f"rates_{name}")
        sections.append(
            f"<section><h2>{escape(table.title)}</h2>{chart_html(chart) if chart else ''}"
            f"{table_html(table, limit=30)}</section>"
        )
    sections.append(
        f"<section><h2>{escape(figures.spend_over_time.title)}</h2>{chart_html(by_name['spend_over_time'])}"
        f"{table_html(figures.spend_over_time, limit=24)}</section>"
    )
    served_note = (
        "" if t.served is not None else " No served_ads export found (run `adplatform archive export`)."
    )
    counts_note = (
        ""
        if t.requests is not None
        else " No request counts archived (ad servers of this version publish them to ad-request-counts)."
    )
    reasons = table_html(figures.no_fill_reasons) if figures.no_fill_reasons.rows else ""
    sections.append(
        f"<section><h2>{escape(figures.fill.title)}</h2>{table_html(figures.fill)}{reasons}"
        f'<p class="note">{escape(FILL_NOTE + counts_note + served_note)}</p></section>'
    )
    bounds = [f"since {since.astimezone(UTC):%Y-%m-%d %H:%M UTC}"] if since else []
    bounds += [f"until {until.astimezone(UTC):%Y-%m-%d %H:%M UTC}"] if until else []
    window = f"{' '.join(bounds) or 'all archived events'} · from the {figures.source}"
    dedup = (
        "when loaded into the warehouse"
        if t.duplicates_dropped is None
        else f"({t.duplicates_dropped:,} duplicates dropped)"
    )
    card_html = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>'
        for k, v in cards
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>adplatform report</title>
<style>{STYLE}</style></head>
<body>
<h1>Ad platform report</h1>
<p class="sub">{escape(window)} · events from {escape(_iso(t.first_ms))} to {escape(_iso(t.last_ms))} ·
generated {escape(generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))}</p>
<div class="cards">{card_html}</div>
<p class="note">Events are de-duplicated by event_id {escape(dedup)}.
Views, clicks and acquisitions count requests (served ads) whose feedback carried that flag, so an ad
reported as viewed and later clicked is one view; CTR = clicks / views, conversion = acquisitions / clicks.
Spend is the exact sum of expenditure_amount ({t.spend_micros:,} micro-units).</p>
{"".join(sections)}
</body></html>
"""
