"""The warehouse's tables: their columns, where they live, and the statements that create them.

Partitioned tables are written only by ``partition.replace_partitions``: each load writes a day's data to a
new directory under ``<table>/_v/<load_id>/`` and then points the day's partition at it, so a reader sees a
day either before or after a load, never half of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archive.schema import archive_schema
from archive.warehouse.catalog import WarehouseConfig
from archive.warehouse.history import CAMPAIGN_HISTORY, HISTORY_COLUMNS
from archive.warehouse.served import SERVED_ADS, SERVED_COLUMNS

FEEDBACK = "feedback"
CAMPAIGN_DAY = "campaign_day"
DEMOGRAPHIC_DAY = "demographic_day"
LOADS = "warehouse_loads"
#: The date partition column of every partitioned table (UTC day of the event).
DATE = "date"

_COUNTS = "requests BIGINT, events BIGINT, views BIGINT, clicks BIGINT, acquisitions BIGINT"
_MONEY = "spend_micros BIGINT, spend DECIMAL(30,6)"


@dataclass(frozen=True)
class TableSpec:
    """A table's name and its columns (DDL), partition column last."""

    name: str
    columns: str
    partitioned: bool = True


def feedback_columns() -> str:
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in archive_schema().fields)


def table_specs() -> tuple[TableSpec, ...]:
    return (
        TableSpec(FEEDBACK, feedback_columns()),
        TableSpec(
            CAMPAIGN_DAY,
            f"campaign_id STRING, served BIGINT, {_COUNTS}, {_MONEY}, ctr DOUBLE, conversion_rate DOUBLE, "
            "budget_micros BIGINT, plan_micros BIGINT, pacing_error DOUBLE",
        ),
        TableSpec(
            DEMOGRAPHIC_DAY,
            f"age_bucket STRING, gender STRING, device_type STRING, city STRING, {_COUNTS}, {_MONEY}, "
            "ctr DOUBLE",
        ),
        TableSpec(SERVED_ADS, SERVED_COLUMNS),
        TableSpec(CAMPAIGN_HISTORY, HISTORY_COLUMNS, partitioned=False),
        TableSpec(
            LOADS,
            "load_id STRING, source STRING, file STRING, size BIGINT, `date` DATE, loaded_at TIMESTAMP",
            partitioned=False,
        ),
    )


def create_table(spark: Any, spec: TableSpec, warehouse: WarehouseConfig) -> None:
    """Create ``spec``'s table at ``<warehouse>/<name>`` unless it exists: an empty DataFrame saved with
    ``mode("ignore")``, so no SQL text is built from the location."""
    columns = f"{spec.columns}, `{DATE}` DATE" if spec.partitioned else spec.columns
    writer = spark.createDataFrame([], columns).write.format("parquet").mode("ignore")
    if spec.partitioned:
        writer = writer.partitionBy(DATE)
    writer.option("path", warehouse.path(spec.name)).saveAsTable(spec.name)


#: Columns added to a table after its first release: ``ensure_tables`` adds them to a warehouse created
#: before (its older partitions read them as NULL until their day is rebuilt).
ADDED_COLUMNS = (
    (CAMPAIGN_DAY, "budget_micros", "BIGINT"),
    (CAMPAIGN_DAY, "plan_micros", "BIGINT"),
    (CAMPAIGN_DAY, "pacing_error", "DOUBLE"),
)


def ensure_tables(spark: Any, warehouse: WarehouseConfig) -> None:
    """Create the tables that do not exist yet, and add the columns an older table lacks (idempotent)."""
    for spec in table_specs():
        create_table(spark, spec, warehouse)
    for table, column, ddl in ADDED_COLUMNS:  # in order: each lands after the one before
        if column not in spark.table(table).columns:
            spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({column} {ddl})")
