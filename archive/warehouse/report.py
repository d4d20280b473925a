"""The report's figures from the warehouse: its aggregates (``campaign_day``, ``demographic_day``) for whole
UTC days, instead of re-reading the raw archive.

The figures are the raw report's (``archive.metrics``) for the same events, with three differences of
source and one of definition:

- spend over time (per minute or hour) and the first/last event time come from the ``feedback`` table (its
  date partitions, three columns of Parquet), since the aggregates are per day;
- served ads are ``campaign_day.served`` (the warehouse's copy of PostgreSQL's ``served_ads``) rather than an
  ``archive export`` snapshot; the fill rate still comes from the archived request counts (their requests
  have no campaign, so they are not in ``campaign_day``), for windows starting in the range;
- duplicates dropped is unknown (``None``): the load de-duplicated them;
- a request counts as viewed/clicked/acquired per *day*, so one whose feedback spans midnight (a view at
  23:59, its click at 00:01) counts on both days, where the raw report counts it once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from archive.metrics import (
    DIMENSION_TITLES,
    dimension_table,
    fill_table,
    no_fill_table,
    spend_over_time,
    top_campaigns_table,
)
from archive.request_counts import RequestTotals, load_counts, request_totals
from archive.table import ReportFigures, Table, Totals, rate
from archive.warehouse.partition import partition_dates
from archive.warehouse.served import SERVED_ADS
from archive.warehouse.tables import CAMPAIGN_DAY, DATE, DEMOGRAPHIC_DAY, FEEDBACK

_SUMS = ("events", "views", "clicks", "acquisitions", "spend_micros")


def whole_day(at: datetime | None) -> bool:
    """Whether ``at`` is open or a UTC midnight: a bound the day aggregates can honour exactly."""
    return at is None or at.astimezone(UTC).time() == time(0)


def day_of(at: datetime | None) -> date | None:
    return None if at is None else at.astimezone(UTC).date()


def in_days(since: date | None, until: date | None) -> Any:
    """The ``date`` partitions of [since, until) (either open)."""
    from pyspark.sql import functions as F

    cond = F.lit(True)
    if since is not None:
        cond = cond & (F.col(DATE) >= F.lit(since))
    if until is not None:
        cond = cond & (F.col(DATE) < F.lit(until))
    return cond


def _sums(*, with_money: bool = True) -> list[Any]:
    from pyspark.sql import functions as F

    sums = [F.sum(c).alias(c) for c in _SUMS]
    return [*sums, F.sum("spend").alias("spend")] if with_money else sums


def _money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(0)


def served_total(spark: Any, where: Any) -> int | None:
    """Served ads of the range from ``campaign_day``; None when the warehouse never loaded any."""
    from pyspark.sql import functions as F

    if not partition_dates(spark, SERVED_ADS):
        return None
    row = spark.table(CAMPAIGN_DAY).where(where).agg(F.sum("served")).first()
    return int(row[0] or 0)


def warehouse_figures(
    spark: Any,
    since: datetime | None,
    until: datetime | None,
    *,
    counts_files: list[Path] | None = None,
    stage: Callable[[str], None] | None = None,
) -> ReportFigures:
    """Every figure of the report over the whole UTC days [since, until) from the warehouse's tables
    (``spark``: a ``warehouse_session``); ``counts_files`` as for ``archive.metrics.compute_figures``."""
    from pyspark.sql import functions as F

    def step(name: str) -> None:
        if stage is not None:
            stage(name)

    if not (whole_day(since) and whole_day(until)):
        raise ValueError("the warehouse holds whole UTC days: since and until must be midnights")
    where = in_days(day_of(since), day_of(until))
    step("campaign × day aggregates")
    campaigns = (
        spark.table(CAMPAIGN_DAY)
        .where(where)
        .groupBy("campaign_id")
        .agg(*_sums())
        .where(F.col("events") > 0)  # served ads without feedback: not in the raw report's campaigns
        .orderBy(F.col("spend").desc(), F.col("campaign_id"))
        .collect()
    )
    step("served ads from the warehouse")
    served = served_total(spark, where)
    step("requests and no-fills from the ad servers' counts")
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    until_ms = int(until.timestamp() * 1000) if until is not None else None
    counted: RequestTotals | None = (
        request_totals(load_counts(spark, counts_files, since_ms, until_ms)) if counts_files else None
    )
    step("totals")
    events = spark.table(FEEDBACK).where(where)
    span = events.agg(F.min("timestamp_ms"), F.max("timestamp_ms")).first()
    views = sum(int(r["views"]) for r in campaigns)
    totals = Totals(
        events=sum(int(r["events"]) for r in campaigns),
        duplicates_dropped=None,
        views=views,
        clicks=sum(int(r["clicks"]) for r in campaigns),
        acquisitions=sum(int(r["acquisitions"]) for r in campaigns),
        spend=sum((_money(r["spend"]) for r in campaigns), Decimal(0)),
        spend_micros=sum(int(r["spend_micros"]) for r in campaigns),
        campaigns=len(campaigns),
        first_ms=int(span[0] or 0),
        last_ms=int(span[1] or 0),
        served=served,
        requests=counted,
        fill_rate=counted.fill_rate if counted is not None else None,
        view_rate=rate(views, served) if served is not None else None,
    )
    step("top-spending campaigns")
    top = top_campaigns_table(campaigns)
    demographics = spark.table(DEMOGRAPHIC_DAY).where(where).cache()
    dims: dict[str, Table] = {}
    try:
        for dimension in DIMENSION_TITLES:
            step(f"CTR and conversion by {dimension.replace('_', ' ')}")
            rows = demographics.groupBy(dimension).agg(*_sums()).collect()
            dims[dimension] = dimension_table(dimension, rows)
    finally:
        demographics.unpersist()
    step("spend over time")
    over_time, granularity = spend_over_time(events, totals.last_ms - totals.first_ms)
    return ReportFigures(
        totals=totals,
        top_campaigns=top,
        by_dimension=dims,
        spend_over_time=over_time,
        time_granularity=granularity,
        fill=fill_table(totals),
        no_fill_reasons=no_fill_table(totals),
        source="warehouse",
    )
