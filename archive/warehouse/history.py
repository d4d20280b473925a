"""``campaign_history``: every campaign state published on ``ad-changes``, with the interval it was in force
(a type-2 slowly changing dimension), so any past day's budget, bid, targeting and status can be queried.

Each load reads the compacted topic from its start (one record per campaign plus the changes not yet
compacted: small), keeps the (campaign, version) pairs the table lacks, and rewrites the whole table to a
new directory with ``valid_from`` (the state's ``updated_at_s``, else the record's Kafka time) and
``valid_to`` (the next version's ``valid_from``; NULL for the current state), then points the table at it
with one ``ALTER TABLE … SET LOCATION``: re-running adds nothing, a crash leaves the old table. Versions that
Kafka compacted away before a load read them are not recoverable: run the load more often than the topic's
``min.compaction.lag.ms``.
"""

from __future__ import annotations

from typing import Any

from archive.warehouse.catalog import WarehouseConfig

CAMPAIGN_HISTORY = "campaign_history"
STATE_COLUMNS = (
    "campaign_id STRING, version BIGINT, status STRING, action STRING, text STRING, category STRING, "
    "keywords STRING, target_gender STRING, target_age_start INT, target_age_end INT, target_city STRING, "
    "target_state STRING, target_country STRING, target_income_bucket STRING, target_device STRING, "
    "cpc_micros BIGINT, cpa_micros BIGINT, cpm_units BIGINT, budget_micros BIGINT, flight_start_s BIGINT, "
    "flight_end_s BIGINT, slot_budget_micros BIGINT, updated_at_s BIGINT, frequency_cap STRING, "
    "pacing_mode STRING"
)
HISTORY_COLUMNS = f"{STATE_COLUMNS}, valid_from TIMESTAMP, valid_to TIMESTAMP"


def topic_states(spark: Any, bootstrap: str, topic: str) -> Any:
    """Every campaign state the topic holds now, with the time of its record."""
    from pyspark.sql import functions as F

    raw = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )
    state = F.from_json(F.col("value").cast("string"), STATE_COLUMNS)
    return raw.where(F.col("value").isNotNull()).select(
        state.alias("s"), F.col("timestamp").alias("record_time")
    )


def load_history(spark: Any, warehouse: WarehouseConfig, bootstrap: str, topic: str, load_id: str) -> int:
    """Add the states the table lacks; returns how many were added (0: the table was not touched)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Imported here: partition imports tables, which imports this module for the table's columns.
    from archive.warehouse.partition import delete_locations

    keys = ["campaign_id", "version"]
    columns = [c.split(" ")[0] for c in STATE_COLUMNS.split(", ")]
    current = spark.table(CAMPAIGN_HISTORY)
    fresh = topic_states(spark, bootstrap, topic).select("s.*", "record_time")
    fresh = fresh.where(F.col("campaign_id").isNotNull() & F.col("version").isNotNull())
    fresh = fresh.dropDuplicates(keys).join(current.select(*keys), keys, "left_anti").cache()
    try:
        added = int(fresh.count())
        if added == 0:
            return 0
        since = F.when(F.col("updated_at_s") > 0, F.timestamp_seconds("updated_at_s")).otherwise(
            F.col("record_time")
        )
        states = current.select(*columns, "valid_from").unionByName(
            fresh.select(*columns, since.alias("valid_from"))
        )
        per_campaign = Window.partitionBy("campaign_id").orderBy("version")
        table = states.withColumn("valid_to", F.lead("valid_from").over(per_campaign))
        location = warehouse.path(CAMPAIGN_HISTORY, "_v", load_id)
        table.coalesce(1).write.parquet(location)
    finally:
        fresh.unpersist()
    old = _location(spark)
    spark.sql(f"ALTER TABLE {CAMPAIGN_HISTORY} SET LOCATION '{location}'")
    spark.catalog.refreshTable(CAMPAIGN_HISTORY)
    delete_locations(spark, [old])
    return added


def _location(spark: Any) -> str:
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {CAMPAIGN_HISTORY}").collect():
        if row[0] == "Location":
            return str(row[1])
    raise RuntimeError(f"{CAMPAIGN_HISTORY} has no location")
