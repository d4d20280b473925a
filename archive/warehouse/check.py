"""The books add up: the ledger's spend (``online_ads.spend_events``, PostgreSQL) against the warehouse's
``feedback`` and ``campaign_day``, per campaign and UTC day, to the micro (``adplatform warehouse check``).

The ledger books each charged event once by ``event_id`` on the day of its timestamp, the warehouse files
it under the same day: any difference is a lost, doubled or not-yet-loaded charge. Only the days the
warehouse holds are compared (a partition of ``feedback`` or ``campaign_day``); the ledger's other days are
named as not loaded yet, not as differences (also ``adplatform reconcile --check --warehouse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from archive.export import jdbc_target
from archive.warehouse.partition import partition_dates
from archive.warehouse.tables import CAMPAIGN_DAY, DATE, FEEDBACK

#: Constant SQL (no values): per campaign and UTC day, in micros.
LEDGER_QUERY = (
    "SELECT campaign_id, CAST(occurred_at AT TIME ZONE 'UTC' AS date) AS day, "
    "CAST(sum(amount) * 1000000 AS bigint) AS ledger_micros "
    "FROM online_ads.spend_events GROUP BY 1, 2"
)


@dataclass(frozen=True)
class SpendDifference:
    """One campaign-day whose three spends are not all equal (micros; 0 where a side has no row)."""

    campaign_id: str
    day: str
    ledger_micros: int
    feedback_micros: int
    campaign_day_micros: int


@dataclass(frozen=True)
class BooksCheck:
    """Totals of the three sides and every campaign-day where they differ."""

    campaign_days: int
    ledger_micros: int
    feedback_micros: int
    campaign_day_micros: int
    differences: tuple[SpendDifference, ...]
    #: Days with ledger spend and no warehouse partition (not loaded yet): not compared.
    unloaded_days: tuple[str, ...] = ()

    @property
    def balanced(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        spend = Decimal(self.ledger_micros).scaleb(-6)
        if self.balanced:
            text = (
                f"books add up: {self.campaign_days} campaign-days, "
                f"spend {spend} in ledger, feedback and campaign_day"
            )
        else:
            text = (
                f"books differ on {len(self.differences)} of {self.campaign_days} campaign-days: "
                f"ledger {self.ledger_micros}, feedback {self.feedback_micros}, "
                f"campaign_day {self.campaign_day_micros} micros"
            )
        if self.unloaded_days:
            text += f" (ledger days not loaded yet, not compared: {', '.join(self.unloaded_days)})"
        return text

    def difference_lines(self) -> list[str]:
        """One line per differing campaign-day."""
        return [
            f"{d.day} {d.campaign_id}: ledger {d.ledger_micros}, feedback {d.feedback_micros}, "
            f"campaign_day {d.campaign_day_micros}"
            for d in self.differences
        ]

    def as_json(self) -> dict[str, Any]:
        """The totals, the verdict and the differences, for scripts (the demo's conservation line)."""
        return {
            "balanced": self.balanced,
            "campaign_days": self.campaign_days,
            "ledger_micros": self.ledger_micros,
            "feedback_micros": self.feedback_micros,
            "campaign_day_micros": self.campaign_day_micros,
            "unloaded_days": list(self.unloaded_days),
            "differences": [vars(d) for d in self.differences],
        }


def ledger_frame(spark: Any, pg_dsn: str) -> Any:
    target = jdbc_target(pg_dsn)
    return spark.read.format("jdbc").options(**target.options(), query=LEDGER_QUERY).load()


def check_books(spark: Any, pg_dsn: str) -> BooksCheck:
    """Compare the three spends per campaign-day of the days the warehouse holds (the ledger's
    ``amount > 0`` rows only exist for charged events, so a day with only free views is 0 on every side)."""
    from pyspark.sql import functions as F

    for table in (FEEDBACK, CAMPAIGN_DAY):  # another process (a spark-submit load) may have moved them
        spark.catalog.refreshTable(table)
    loaded = partition_dates(spark, FEEDBACK) | partition_dates(spark, CAMPAIGN_DAY)
    ledger = ledger_frame(spark, pg_dsn).select("campaign_id", F.col("day").alias(DATE), "ledger_micros")
    ledger_days = {str(r[0]) for r in ledger.select(DATE).distinct().collect()}
    ledger = ledger.where(F.col(DATE).isin([date.fromisoformat(d) for d in sorted(loaded)]))
    feedback = (
        spark.table(FEEDBACK)
        .groupBy("campaign_id", DATE)
        .agg(F.sum("expenditure_micros").alias("feedback_micros"))
    )
    aggregate = spark.table(CAMPAIGN_DAY).select(
        "campaign_id", DATE, F.col("spend_micros").alias("campaign_day_micros")
    )
    joined = ledger.join(feedback, ["campaign_id", DATE], "full_outer").join(
        aggregate, ["campaign_id", DATE], "full_outer"
    )
    sides = ("ledger_micros", "feedback_micros", "campaign_day_micros")
    joined = joined.select(
        "campaign_id",
        F.col(DATE).cast("string").alias(DATE),
        *[F.coalesce(F.col(s), F.lit(0)).cast("bigint").alias(s) for s in sides],
    )
    rows = joined.collect()
    differences = tuple(
        SpendDifference(r[0], r[1], int(r[2]), int(r[3]), int(r[4]))
        for r in sorted(rows, key=lambda r: (r[1], r[0]))
        if not int(r[2]) == int(r[3]) == int(r[4])
    )
    return BooksCheck(
        campaign_days=len(rows),
        ledger_micros=sum(int(r[2]) for r in rows),
        feedback_micros=sum(int(r[3]) for r in rows),
        campaign_day_micros=sum(int(r[4]) for r in rows),
        differences=differences,
        unloaded_days=tuple(sorted(ledger_days - loaded)),
    )
