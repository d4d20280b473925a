"""The ``served_ads`` table: PostgreSQL's ``online_ads.served_ads`` by UTC day, rebuilt for the days that
changed.

``served_ads`` rows are only ever inserted (by the served-writer, once per request id), so a day has changed
exactly when PostgreSQL counts a different number of rows for it than the warehouse; such a day is read whole
from PostgreSQL (JDBC, a range on the indexed ``served_at``) and swapped in like a feedback day. A day whose
``served`` total in ``campaign_day`` differs from the table's is rebuilt too, so a load stopped between the
two swaps is finished by the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from archive.export import jdbc_target

SERVED_ADS = "served_ads"
SERVED_COLUMNS = (
    "request_id STRING, campaign_id STRING, user_id STRING, served_at TIMESTAMP, auction_cpm DECIMAL(24,10), "
    "auction_cpc DECIMAL(20,6), auction_cpa DECIMAL(20,6), bidders INT, device_type STRING, city STRING, "
    "state STRING, country STRING, age INT, gender STRING, income_bucket STRING"
)
#: Constant SQL (no values): rows per UTC day.
PG_DAY_COUNTS = (
    "SELECT CAST(CAST(served_at AT TIME ZONE 'UTC' AS date) AS text) AS day, count(*) AS n "
    "FROM online_ads.served_ads GROUP BY 1"
)
WH_DAY_COUNTS = "SELECT CAST(`date` AS STRING), count(*) FROM served_ads GROUP BY 1"
AGG_DAY_COUNTS = "SELECT CAST(`date` AS STRING), sum(served) FROM campaign_day GROUP BY 1"


def _counts(rows: Sequence[Any]) -> dict[str, int]:
    return {str(r[0]): int(r[1] or 0) for r in rows}


def changed_days(spark: Any, pg_dsn: str) -> list[str]:
    """Days whose served ads differ between PostgreSQL, the ``served_ads`` table and ``campaign_day``."""
    target = jdbc_target(pg_dsn)
    pg = _counts(spark.read.format("jdbc").options(**target.options(), query=PG_DAY_COUNTS).load().collect())
    warehouse = _counts(spark.sql(WH_DAY_COUNTS).collect())
    aggregated = _counts(spark.sql(AGG_DAY_COUNTS).collect())
    # More rows in PostgreSQL: new served ads. Fewer (an `adplatform reset` emptied it): the warehouse keeps
    # its history, so that is not a change.
    grown = {d for d, n in pg.items() if n > warehouse.get(d, 0)}
    unaggregated = {d for d, n in warehouse.items() if n != aggregated.get(d, 0)}
    return sorted(grown | unaggregated)


def served_rows(spark: Any, pg_dsn: str, days: Sequence[str]) -> Any:
    """PostgreSQL's served ads of ``days``, with their ``date``."""
    from pyspark.sql import functions as F

    target = jdbc_target(pg_dsn)
    first = datetime.combine(date.fromisoformat(min(days)), datetime.min.time(), UTC)
    end = datetime.combine(date.fromisoformat(max(days)) + timedelta(days=1), datetime.min.time(), UTC)
    frame = spark.read.format("jdbc").options(**target.options(), dbtable="online_ads.served_ads").load()
    # The range is pushed down to PostgreSQL (served_at is indexed); the exact days are kept in Spark.
    frame = frame.where((F.col("served_at") >= F.lit(first)) & (F.col("served_at") < F.lit(end)))
    frame = frame.withColumn("date", F.to_date("served_at"))
    return frame.where(F.col("date").isin([date.fromisoformat(d) for d in days]))
