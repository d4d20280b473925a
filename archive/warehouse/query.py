"""``adplatform sql``: a Spark SQL statement over the warehouse's catalog, printed for people or scripts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

OutputFormat = Literal["table", "csv", "json"]


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of plain Python values."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def run_query(spark: Any, statement: str, *, limit: int | None = None) -> QueryResult:
    frame = spark.sql(statement)
    if limit is not None:
        frame = frame.limit(limit)
    rows = frame.collect()
    return QueryResult(tuple(frame.columns), tuple(tuple(r) for r in rows))


def _text(value: Any, *, exact: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if exact else f"{value:.6g}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json_value(value: Any) -> Any:
    # Money stays exact: decimals as JSON numbers' text would be parsed as floats by most readers.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def format_result(result: QueryResult, fmt: OutputFormat) -> str:
    """The result as an aligned text table, CSV (header first) or JSON lines (one object per row)."""
    if fmt == "json":
        return "".join(
            json.dumps({c: _json_value(v) for c, v in zip(result.columns, row, strict=True)}) + "\n"
            for row in result.rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_text(v, exact=True) for v in row] for row in result.rows)
        return out.getvalue()
    return _table(result.columns, [[_text(v) for v in row] for row in result.rows])


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    head = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    return "\n".join([head.rstrip(), line, *body, count]) + "\n"
