"""PNG charts of the report's figures, drawn with matplotlib's object API on the Agg canvas.

``matplotlib.figure.Figure`` renders without pyplot, so there is no global state, no GUI backend and no
figure leak. Amounts are converted to float for drawing only; the tables and CSVs keep them exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import matplotlib.dates as mdates
from matplotlib.figure import Figure

from archive.table import Cell, ReportFigures, Table

#: Calm, colour-blind-safe pair for CTR / conversion bars, and the spend colour.
CTR_COLOR, CONV_COLOR, SPEND_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"
MAX_CATEGORIES = 15


@dataclass(frozen=True)
class Chart:
    """One chart as written to disk."""

    name: str
    title: str
    path: Path


def _num(value: Cell) -> float:
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    return 0.0


def _save(fig: Figure, directory: Path, name: str, title: str) -> Chart:
    path = directory / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    return Chart(name, title, path)


def top_campaigns_chart(table: Table, directory: Path, top_n: int) -> Chart:
    rows = table.rows[:top_n]
    labels = [str(r[0]) for r in rows][::-1]
    spend = [_num(r[1]) for r in rows][::-1]
    fig = Figure(figsize=(8, max(2.5, 0.35 * len(rows) + 1)))
    ax = fig.add_subplot()
    ax.barh(labels, spend, color=SPEND_COLOR)
    ax.set_xlabel("spend")
    ax.set_title(f"Top {len(rows)} campaigns by spend")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, directory, "top_campaigns", "Top-spending campaigns")


def rate_chart(table: Table, directory: Path) -> Chart:
    """CTR and conversion rate side by side for each group of a dimension (largest groups first)."""
    rows = table.rows[:MAX_CATEGORIES]
    labels = [str(r[0]) for r in rows]
    ctr = [_num(r[table.columns.index("ctr")]) * 100 for r in rows]
    conv = [_num(r[table.columns.index("conversion_rate")]) * 100 for r in rows]
    positions = list(range(len(rows)))
    width = 0.4
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    ax.bar([p - width / 2 for p in positions], ctr, width, label="CTR (clicks/views)", color=CTR_COLOR)
    ax.bar(
        [p + width / 2 for p in positions], conv, width, label="conversion (acq./clicks)", color=CONV_COLOR
    )
    crowded = len(rows) > 6 or max((len(label) for label in labels), default=0) > 10
    ax.set_xticks(positions, labels, rotation=25 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("%")
    ax.set_title(table.title)
    # Headroom so the legend never sits on the bars.
    ax.set_ylim(0, max([*ctr, *conv, 1.0]) * 1.3)
    ax.legend(loc="upper right", fontsize="small", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, directory, f"rates_{table.name}", table.title)


def spend_chart(table: Table, granularity: str, directory: Path) -> Chart:
    """Spend per bucket on a real time axis (a bucket without events shows as a gap, not squeezed out)."""
    parsed = [datetime.strptime(str(v), "%Y-%m-%dT%H:%MZ") for v in table.column("bucket_start")]
    times = [float(mdates.date2num(t)) for t in parsed]  # type: ignore[no-untyped-call]  # unannotated
    spend = [_num(v) for v in table.column("spend")]
    width_days = (1 / 1440 if granularity == "minute" else 1 / 24) * 0.9  # date2num units are days
    fig = Figure(figsize=(9, 3.4))
    ax = fig.add_subplot()
    ax.bar(times, spend, width=width_days, align="edge", color=SPEND_COLOR)
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib leaves it unannotated
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]  # same
    ax.set_ylabel("spend")
    ax.set_title(f"Spend per {granularity} (UTC)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, directory, "spend_over_time", table.title)


def draw_charts(figures: ReportFigures, directory: Path, *, top_n: int = 20) -> list[Chart]:
    """Every chart of the report, as PNG files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    charts = [top_campaigns_chart(figures.top_campaigns, directory, top_n)]
    charts.extend(rate_chart(table, directory) for table in figures.by_dimension.values())
    charts.append(spend_chart(figures.spend_over_time, figures.time_granularity, directory))
    return charts
