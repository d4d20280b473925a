"""The report's vocabulary: plain tables and figures that CSV, chart and HTML writers consume (no Spark)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from archive.request_counts import RequestTotals

Cell = str | int | float | Decimal | None


@dataclass(frozen=True)
class Table:
    """A small result table: collected from Spark, written as CSV and rendered in the HTML."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def column(self, name: str) -> list[Cell]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def records(self) -> list[dict[str, Cell]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Totals:
    """Headline figures over the report window (after de-duplication by ``event_id``)."""

    events: int
    #: Duplicates dropped by this report's read; None when read from the warehouse (de-duplicated at load).
    duplicates_dropped: int | None
    #: Requests (served ads) with a view, a click, an acquisition (see archive.metrics).
    views: int
    clicks: int
    acquisitions: int
    #: Exact sum of ``expenditure_amount``, and of ``expenditure_micros`` as a cross-check.
    spend: Decimal
    spend_micros: int
    campaigns: int
    first_ms: int
    last_ms: int
    #: Served ads in the window from the warehouse export, when exported.
    served: int | None
    #: The ad servers' exact request counts (``archive.request_counts``); None when none are archived.
    requests: RequestTotals | None
    #: Served / requests, from those counts (both sides from one source, so never above 1).
    fill_rate: float | None
    #: Views / exported served ads: the share of served ads whose view was reported (impression rate).
    view_rate: float | None


@dataclass(frozen=True)
class ReportFigures:
    """Everything the report shows."""

    totals: Totals
    top_campaigns: Table
    #: age_bucket, gender, device_type, city → views, clicks, acquisitions, spend, ctr, conversion_rate.
    by_dimension: dict[str, Table]
    spend_over_time: Table
    #: "minute" or "hour".
    time_granularity: str
    fill: Table
    #: No-fills by reason, with their share of requests.
    no_fill_reasons: Table
    #: Where the figures were read: ``archive`` (the raw files) or ``warehouse`` (its aggregates).
    source: str = "archive"

    def tables(self) -> list[Table]:
        return [
            self.top_campaigns,
            *self.by_dimension.values(),
            self.spend_over_time,
            self.fill,
            self.no_fill_reasons,
        ]


def rate(numerator: int, denominator: int) -> float | None:
    """A ratio of counts; None (not 0) when the denominator is 0, so 'no views' is not 'CTR 0%'."""
    return numerator / denominator if denominator else None


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(table: Table, directory: Path) -> Path:
    """``<directory>/<table.name>.csv`` with a header; Decimals exact, empty cells for None."""
    path = directory / f"{table.name}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([_csv_cell(v) for v in row])
    return path
