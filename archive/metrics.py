"""The report's figures, computed by Spark over the archived events (and the exported served_ads).

Spark scans, de-duplicates (by ``event_id``: a redelivered event counts once) and aggregates; the small
aggregated rows are collected and the ratios computed from exact integer counts in Python. Money stays
``Decimal`` end to end (sums of ``DecimalType`` are exact in Spark).

Views, clicks and acquisitions are counted per *request* (served ad), not per event: the feedback flags
are cumulative (``{"view": 1, "click": 1}`` → one ``click`` event carrying ``view=1``), and a client may
report a view and later the click as two events. A request counts as viewed, clicked, acquired when any of
its events carries that flag. CTR = clicked / viewed requests; conversion = acquired / clicked requests.
Spend is the sum over events (each charge is one event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from archive.request_counts import RequestTotals, load_counts, request_totals
from archive.schema import archive_schema
from archive.table import ReportFigures, Table, Totals, rate

#: (label, lowest age, highest age); 55+ and the rest below.
AGE_BUCKETS = (("18-24", 18, 24), ("25-34", 25, 34), ("35-44", 35, 44), ("45-54", 45, 54))
AGE_ORDER = ("under 18", "18-24", "25-34", "35-44", "45-54", "55+", "unknown")
UNKNOWN = "unknown"
#: Spans up to this long are shown per minute, longer ones per hour.
MINUTE_SPAN_MS = 6 * 3600 * 1000

DIMENSION_TITLES = {
    "age_bucket": "By user age bucket",
    "gender": "By user gender",
    "device_type": "By user device type",
    "city": "By user city",
}
RATE_COLUMNS = ("views", "clicks", "acquisitions", "spend", "ctr", "conversion_rate")


def _age_bucket(column: Any) -> Any:
    from pyspark.sql import functions as F

    expr = F.when(column.isNull(), F.lit(UNKNOWN)).when(column < 18, F.lit("under 18"))
    for label, low, high in AGE_BUCKETS:
        expr = expr.when(column.between(low, high), F.lit(label))
    return expr.otherwise(F.lit("55+"))


def _dimension_columns() -> dict[str, Any]:
    from pyspark.sql import functions as F

    return {
        "age_bucket": _age_bucket(F.col("user_age")),
        "gender": F.coalesce(F.col("user_gender"), F.lit(UNKNOWN)),
        "device_type": F.coalesce(F.col("user_device_type"), F.lit(UNKNOWN)),
        "city": F.coalesce(F.col("user_city"), F.lit(UNKNOWN)),
    }


def _counts() -> list[Any]:
    """Aggregates over the per-request table (``requests``)."""
    from pyspark.sql import functions as F

    return [
        F.sum("events").alias("events"),
        F.sum("viewed").alias("views"),
        F.sum("clicked").alias("clicks"),
        F.sum("acquired").alias("acquisitions"),
        F.sum("spend").alias("spend"),
        F.sum("spend_micros").alias("spend_micros"),
    ]


def per_request(events: Any) -> Any:
    """One row per request: its campaign and user, whether it was viewed/clicked/acquired, its spend."""
    from pyspark.sql import functions as F

    same = ("campaign_id", "user_age", "user_gender", "user_device_type", "user_city")
    return events.groupBy("request_id").agg(
        # The token fixes these for every event of a request.
        *[F.first(c, ignorenulls=True).alias(c) for c in same],
        F.max("view").alias("viewed"),
        F.max("click").alias("clicked"),
        F.max("acquisition").alias("acquired"),
        F.sum("expenditure_amount").alias("spend"),
        F.sum("expenditure_micros").alias("spend_micros"),
        F.count(F.lit(1)).alias("events"),
        F.min("timestamp_ms").alias("first_ms"),
        F.max("timestamp_ms").alias("last_ms"),
    )


def _money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(0)


@dataclass(frozen=True)
class Window:
    """A report's time window: events at or after ``since``, before ``until`` (either open)."""

    since: datetime | None = None
    until: datetime | None = None

    @property
    def since_ms(self) -> int | None:
        return int(self.since.timestamp() * 1000) if self.since is not None else None

    @property
    def until_ms(self) -> int | None:
        return int(self.until.timestamp() * 1000) if self.until is not None else None


def load_events(
    spark: Any, files: list[Path], since_ms: int | None, until_ms: int | None = None
) -> tuple[Any, int]:
    """The archived events in the window, de-duplicated by ``event_id`` and cached; and the raw count."""
    from pyspark.sql import functions as F

    frame = spark.read.schema(archive_schema()).json([str(f) for f in files])
    frame = frame.where(F.col("event_id").isNotNull())
    if since_ms is not None:
        frame = frame.where(F.col("timestamp_ms") >= since_ms)
    if until_ms is not None:
        frame = frame.where(F.col("timestamp_ms") < until_ms)
    raw = int(frame.count())
    return frame.dropDuplicates(["event_id"]).cache(), raw


def totals(requests: Any, raw_count: int, served: int | None, counted: RequestTotals | None = None) -> Totals:
    from pyspark.sql import functions as F

    row = requests.agg(
        *_counts(),
        F.countDistinct("campaign_id").alias("campaigns"),
        F.min("first_ms").alias("first_ms"),
        F.max("last_ms").alias("last_ms"),
    ).first()
    views = int(row["views"] or 0)
    return Totals(
        events=int(row["events"]),
        duplicates_dropped=raw_count - int(row["events"]),
        views=views,
        clicks=int(row["clicks"] or 0),
        acquisitions=int(row["acquisitions"] or 0),
        spend=_money(row["spend"]),
        spend_micros=int(row["spend_micros"] or 0),
        campaigns=int(row["campaigns"]),
        first_ms=int(row["first_ms"] or 0),
        last_ms=int(row["last_ms"] or 0),
        served=served,
        requests=counted,
        fill_rate=counted.fill_rate if counted is not None else None,
        view_rate=rate(views, served) if served is not None else None,
    )


def top_campaigns(requests: Any) -> Table:
    """Every campaign by spend (highest first): the HTML shows the top, the CSV has them all."""
    from pyspark.sql import functions as F

    rows = (
        requests.groupBy("campaign_id")
        .agg(*_counts())
        .orderBy(F.col("spend").desc(), F.col("campaign_id"))
        .collect()
    )
    return top_campaigns_table(rows)


def top_campaigns_table(rows: list[Any]) -> Table:
    """The top-campaigns table from collected rows (campaign_id, spend, spend_micros, views, clicks,
    acquisitions), already ordered by spend, highest first."""
    return Table(
        name="top_campaigns",
        title="Top-spending campaigns",
        columns=("campaign_id", "spend", "spend_micros", "views", "clicks", "acquisitions", "ctr"),
        rows=tuple(
            (
                r["campaign_id"],
                _money(r["spend"]),
                int(r["spend_micros"] or 0),
                int(r["views"]),
                int(r["clicks"]),
                int(r["acquisitions"]),
                rate(int(r["clicks"]), int(r["views"])),
            )
            for r in rows
        ),
    )


def by_dimension(requests: Any, dimension: str) -> Table:
    """Views, clicks, acquisitions, spend, CTR (clicks/views) and conversion rate (acquisitions/clicks)."""
    key = _dimension_columns()[dimension]
    collected = requests.groupBy(key.alias(dimension)).agg(*_counts()).collect()
    return dimension_table(dimension, collected)


def dimension_table(dimension: str, collected: list[Any]) -> Table:
    """A by-dimension table from collected rows (the dimension, views, clicks, acquisitions, spend), in
    the report's order (age buckets by age; others by views, unknown last)."""
    rows = [
        (
            str(r[dimension]),
            int(r["views"]),
            int(r["clicks"]),
            int(r["acquisitions"]),
            _money(r["spend"]),
            rate(int(r["clicks"]), int(r["views"])),
            rate(int(r["acquisitions"]), int(r["clicks"])),
        )
        for r in collected
    ]
    if dimension == "age_bucket":
        rows.sort(key=lambda row: AGE_ORDER.index(row[0]))
    else:
        rows.sort(key=lambda row: (row[0] == UNKNOWN, -row[1], row[0]))
    return Table(dimension, DIMENSION_TITLES[dimension], (dimension, *RATE_COLUMNS), tuple(rows))


def spend_over_time(events: Any, span_ms: int) -> tuple[Table, str]:
    """Spend and events per minute (short windows) or per hour, by event time (UTC)."""
    from pyspark.sql import functions as F

    granularity = "minute" if span_ms <= MINUTE_SPAN_MS else "hour"
    # Formatted by Spark in the session zone (UTC): collected timestamps would be shifted to the local zone.
    bucket = F.date_format(
        F.date_trunc(granularity, F.timestamp_millis(F.col("timestamp_ms"))), "yyyy-MM-dd'T'HH:mm'Z'"
    )
    collected = (
        events.groupBy(bucket.alias("bucket"))
        .agg(
            F.sum("expenditure_amount").alias("spend"),
            F.sum("expenditure_micros").alias("spend_micros"),
            F.count(F.lit(1)).alias("events"),
        )
        .orderBy("bucket")
        .collect()
    )
    rows = tuple(
        (str(r["bucket"]), _money(r["spend"]), int(r["spend_micros"] or 0), int(r["events"]))
        for r in collected
    )
    table = Table(
        "spend_over_time",
        f"Spend per {granularity}",
        ("bucket_start", "spend", "spend_micros", "events"),
        rows,
    )
    return table, granularity


def served_count(
    spark: Any, served_dir: Path, since: datetime | None, until: datetime | None = None
) -> int | None:
    """Served ads in the window from the exported Parquet; None when nothing was exported."""
    from pyspark.sql import functions as F

    if not served_dir.is_dir():
        return None
    if not any(served_dir.rglob("*.parquet")):
        return 0  # exported while online_ads.served_ads was empty
    frame = spark.read.parquet(str(served_dir))
    if since is not None:
        since_ms = int(since.timestamp() * 1000)
        frame = frame.where(F.col("served_at") >= F.timestamp_millis(F.lit(since_ms)))
    if until is not None:
        until_ms = int(until.timestamp() * 1000)
        frame = frame.where(F.col("served_at") < F.timestamp_millis(F.lit(until_ms)))
    return int(frame.count())


FILL_COLUMNS = (
    "requests", "served", "no_fill", "fill_rate", "rejected", "not_ready", "served_ads_exported", "views",
    "view_rate",
)  # fmt: skip


def fill_table(t: Totals) -> Table:
    """Fill rate = served / requests from the ad servers' exact counts (requests = served + no-fill: valid
    requests that reached the auction; 422s and 503s beside it); view rate = views / exported served ads."""
    c = t.requests
    counted = (
        (None,) * 6 if c is None else (c.requests, c.served, c.no_fill, c.fill_rate, c.rejected, c.not_ready)
    )
    return Table("fill_rate", "Fill rate", FILL_COLUMNS, ((*counted, t.served, t.views, t.view_rate),))


def no_fill_table(t: Totals) -> Table:
    c = t.requests
    rows = () if c is None else tuple((r, n, rate(n, c.requests)) for r, n in c.no_fill_reasons.items())
    return Table("no_fill_reasons", "No-fill by reason", ("reason", "no_fill", "share_of_requests"), rows)


def compute_figures(
    spark: Any,
    files: list[Path],
    served_dir: Path,
    since: datetime | None,
    *,
    stage: Any = None,
    counts_files: list[Path] | None = None,
    until: datetime | None = None,
) -> ReportFigures:
    """All figures from the raw archive files; ``stage(name)`` is called before each step (progress).
    ``counts_files``: the archived request counts (``archive.request_counts.counts_files``), for the fill
    rate. The window is [since, until)."""

    def step(name: str) -> None:
        if stage is not None:
            stage(name)

    step("reading and de-duplicating the archive")
    window = Window(since, until)
    since_ms, until_ms = window.since_ms, window.until_ms
    events, raw = load_events(spark, files, since_ms, until_ms)
    requests = per_request(events).cache()
    try:
        step("served ads from the warehouse export")
        served = served_count(spark, served_dir, since, until)
        step("requests and no-fills from the ad servers' counts")
        counted = (
            request_totals(load_counts(spark, counts_files, since_ms, until_ms)) if counts_files else None
        )
        step("totals")
        t = totals(requests, raw, served, counted)
        step("top-spending campaigns")
        top = top_campaigns(requests)
        dims: dict[str, Table] = {}
        for dimension in DIMENSION_TITLES:
            step(f"CTR and conversion by {dimension.replace('_', ' ')}")
            dims[dimension] = by_dimension(requests, dimension)
        step("spend over time")
        over_time, granularity = spend_over_time(events, t.last_ms - t.first_ms)
    finally:
        requests.unpersist()
        events.unpersist()
    return ReportFigures(
        totals=t,
        top_campaigns=top,
        by_dimension=dims,
        spend_over_time=over_time,
        time_granularity=granularity,
        fill=fill_table(t),
        no_fill_reasons=no_fill_table(t),
    )


STAGES = 6 + len(DIMENSION_TITLES)
