"""The aggregates reports read, rebuilt from the ``feedback`` table for given days.

Counts are per request and day, as ``archive.metrics`` counts them: feedback flags are cumulative (a click
event carries ``view=1``), so a request counts as viewed, clicked or acquired on a day when any of its events
that day carries the flag. Spend is summed per event, in exact micros (``spend_micros``) and as the decimal
(``spend``), so the aggregate's spend equals the feedback table's to the micro.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archive.metrics import _dimension_columns
from archive.warehouse.history import CAMPAIGN_HISTORY
from archive.warehouse.served import SERVED_ADS
from archive.warehouse.tables import CAMPAIGN_DAY, DATE, FEEDBACK


def per_request(spark: Any, days: Sequence[str]) -> Any:
    """One row per (day, request) of ``days``: campaign, user, flags, events, spend."""
    from pyspark.sql import functions as F

    events = spark.table(FEEDBACK).where(F.col(DATE).isin(list(days)))
    same = ("campaign_id", "user_age", "user_gender", "user_device_type", "user_city")
    return events.groupBy(DATE, "request_id").agg(
        *[F.first(c, ignorenulls=True).alias(c) for c in same],
        F.max("view").alias("viewed"),
        F.max("click").alias("clicked"),
        F.max("acquisition").alias("acquired"),
        F.count(F.lit(1)).alias("events"),
        F.sum("expenditure_micros").alias("spend_micros"),
        F.sum("expenditure_amount").alias("spend"),
    )


def _sums() -> list[Any]:
    from pyspark.sql import functions as F

    return [
        F.count(F.lit(1)).alias("requests"),
        F.sum("events").alias("events"),
        F.sum("viewed").alias("views"),
        F.sum("clicked").alias("clicks"),
        F.sum("acquired").alias("acquisitions"),
        F.sum("spend_micros").alias("spend_micros"),
        F.sum("spend").cast("decimal(30,6)").alias("spend"),
    ]


def _ratio(numerator: str, denominator: str) -> Any:
    from pyspark.sql import functions as F

    return F.when(F.col(denominator) > 0, F.col(numerator) / F.col(denominator))


def served_counts(spark: Any, days: Sequence[str]) -> Any:
    """Served ads per (day, campaign) of ``days`` from the ``served_ads`` table."""
    from pyspark.sql import functions as F

    served = spark.table(SERVED_ADS).where(F.col(DATE).isin(list(days)))
    return served.groupBy(DATE, "campaign_id").agg(F.count(F.lit(1)).alias("served"))


#: The columns of the day's plan, in the table's order (after ``ctr`` and ``conversion_rate``).
PLAN_COLUMNS = ("budget_micros", "plan_micros", "pacing_error")


def _even_spent(budget: Any, start_s: Any, end_s: Any, at_s: Any) -> Any:
    """``index.delivery.expected_spend_micros`` as a Spark expression, for whole seconds ``at_s``: the
    budget times the elapsed share of the flight, rounded down to the micro, clamped to [0, budget] (NULL
    without a flight); exact
    (``budget × seconds`` overflows a long for a large budget over a long flight, so in DECIMAL(38,0))."""
    from pyspark.sql import functions as F

    duration = end_s - start_s
    elapsed = F.least(F.greatest(at_s - start_s, F.lit(0)), duration)
    product = budget.cast("decimal(38,0)") * elapsed.cast("decimal(38,0)")
    whole = duration.cast("decimal(38,0)")
    # Floor division, exact: what is left is a multiple of the duration, so the quotient has no fraction
    # for a decimal division to round.
    floored = (product - F.pmod(product, whole)) / whole
    # No flight (NULL bounds): NULL, not the budget, so the day has no plan rather than a plan of 0.
    return F.when(duration > 0, floored.cast("bigint")).when(duration <= 0, budget)


def day_plans(keys: Any, history: Any) -> Any:
    """The day's plan of each (``date``, ``campaign_id``) of ``keys``, from the ``campaign_history`` state
    in force at the day's end (begun before the next UTC midnight, not ended before it):

    - ``budget_micros``: that state's (total) budget; NULL for a campaign that had no state yet;
    - ``plan_micros``: what the even plan of that state spends during the day, the dashboard's "on pace"
      line (``index.delivery.expected_spend_micros``) at the next midnight minus at this one: the budget's
      share of the flight that falls in the day (the whole day inside the flight, part of it on the
      flight's first and last days, 0 outside it). The slot pacer paces ``asap`` and ``even`` campaigns
      alike over the flight, so the plan is the same for both modes."""
    from pyspark.sql import functions as F

    k = keys.select(DATE, "campaign_id").distinct().alias("k")
    h = history.select(
        "campaign_id", "valid_from", "valid_to", "budget_micros", "flight_start_s", "flight_end_s"
    ).alias("h")
    end = F.to_timestamp(F.date_add(F.col(f"k.{DATE}"), 1))  # the next midnight (sessions are UTC)
    on = (
        (F.col("k.campaign_id") == F.col("h.campaign_id"))
        & (F.col("h.valid_from") < end)
        & (F.col("h.valid_to").isNull() | (F.col("h.valid_to") >= end))
    )
    start_s = F.unix_timestamp(F.to_timestamp(F.col(f"k.{DATE}")))
    budget, first, last = (F.col(f"h.{c}") for c in ("budget_micros", "flight_start_s", "flight_end_s"))
    plan = _even_spent(budget, first, last, start_s + 86_400) - _even_spent(budget, first, last, start_s)
    return k.join(h, on, "left").select(
        f"k.{DATE}", "k.campaign_id", "h.budget_micros", plan.cast("bigint").alias("plan_micros")
    )


def pacing_error(spend_micros: Any, plan_micros: Any) -> Any:
    """(spend − plan) / plan: +0.05 spent 5% more than the day's share of the budget, −0.05 5% less; NULL
    without a plan (no campaign state yet, the day outside the flight, a zero budget)."""
    from pyspark.sql import functions as F

    return F.when(plan_micros > 0, (spend_micros - plan_micros) / plan_micros)


def stale_budget_days(spark: Any) -> list[str]:
    """Days of ``campaign_day`` whose budgets or plans are not the history's (a state loaded after the day
    was aggregated, a table from before the columns): their aggregates are rebuilt by the next load."""
    from pyspark.sql import functions as F

    for table in (CAMPAIGN_DAY, CAMPAIGN_HISTORY):  # another process may have moved them since
        spark.catalog.refreshTable(table)
    stored = spark.table(CAMPAIGN_DAY).select(DATE, "campaign_id", "budget_micros", "plan_micros")
    expected = day_plans(stored, spark.table(CAMPAIGN_HISTORY)).select(
        DATE,
        "campaign_id",
        F.col("budget_micros").alias("expected_budget"),
        F.col("plan_micros").alias("expected_plan"),
    )
    stale = stored.join(expected, [DATE, "campaign_id"]).where(
        ~F.col("budget_micros").eqNullSafe(F.col("expected_budget"))
        | ~F.col("plan_micros").eqNullSafe(F.col("expected_plan"))
    )
    return sorted(str(r[0]) for r in stale.select(DATE).distinct().collect())


def campaign_day(requests: Any, served: Any, history: Any) -> Any:
    """campaign × day, columns in the table's order: a campaign-day with served ads and no feedback has
    zero counts, one with feedback and no served ads (served-writer behind) ``served`` 0; the budget, the
    day's plan and the pacing error from ``history`` (``campaign_history``, see ``day_plans``)."""
    from pyspark.sql import functions as F

    frame = requests.groupBy(DATE, "campaign_id").agg(*_sums())
    frame = frame.join(served, [DATE, "campaign_id"], "full_outer")
    zero = ("served", "requests", "events", "views", "clicks", "acquisitions", "spend_micros")
    frame = frame.fillna(0, subset=list(zero)).withColumn(
        "spend", F.coalesce(F.col("spend"), F.lit(0).cast("decimal(30,6)"))
    )
    frame = frame.select(
        "campaign_id",
        "served",
        "requests",
        "events",
        "views",
        "clicks",
        "acquisitions",
        "spend_micros",
        "spend",
        _ratio("clicks", "views").alias("ctr"),
        _ratio("acquisitions", "clicks").alias("conversion_rate"),
        DATE,
    )
    plans = day_plans(frame, history)
    frame = frame.join(plans, [DATE, "campaign_id"], "left").withColumn(
        "pacing_error", pacing_error(F.col("spend_micros"), F.col("plan_micros"))
    )
    return frame.select(*[c for c in frame.columns if c not in (DATE, *PLAN_COLUMNS)], *PLAN_COLUMNS, DATE)


def demographic_day(requests: Any) -> Any:
    """age bucket × gender × device × city × day, columns in the table's order."""
    dims = _dimension_columns()
    frame = requests.select("*", *[expr.alias(name) for name, expr in dims.items()])
    frame = frame.groupBy(DATE, *dims).agg(*_sums())
    return frame.select(
        *dims,
        "requests",
        "events",
        "views",
        "clicks",
        "acquisitions",
        "spend_micros",
        "spend",
        _ratio("clicks", "views").alias("ctr"),
        DATE,
    )
