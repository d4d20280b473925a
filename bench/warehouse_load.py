"""Warehouse load throughput beside a plain Spark read-and-write of the same files, and query times.

    python -m bench.warehouse_load [--events 300000] [--days 30]
    python -m bench.warehouse_load --aggregates-only [--events 10000000] [--shuffle-partitions N]

Writes ``--events`` generated ``FeedbackEvent``s over ``--days`` days into a fresh archive laid out as the
streaming sink leaves it (one file per hour), in a database and directories of its own (removed at the
end). In one Spark session (local[2]), same run: a plain ``read.json → write.parquet`` of the same files
(the reference), the first warehouse load (feedback + aggregates for every day), a load that finds nothing
new, a load after one late file, then the top-spenders and CTR-by-age-bucket queries over the aggregates.
``--aggregates-only``: the issue's target, "a day's aggregates for 10 million events rebuild in under 10
minutes". Spark itself generates one day of ``--events`` feedback rows straight into the ``feedback``
table's Parquet (no JSON, no load), then, same session, the reference (a plain groupBy over the same
Parquet: per request, then per campaign, written as Parquet) and the rebuild of that day's ``campaign_day``
and ``demographic_day`` as a load does it (``load.rebuild_aggregates``).
Results go to ``bench/results/warehouse_load-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.sandbox import create_database, database_of, drop_database, new_suffix
from adplatform.wire import encoder
from archive.layout import ArchiveLayout
from archive.schema import archive_schema
from archive.session import create_session
from archive.warehouse.catalog import WarehouseConfig, ensure_metastore_schema, hive_conf, location_uri
from archive.warehouse.load import archive_files, load_feedback, rebuild_aggregates
from archive.warehouse.tables import FEEDBACK, ensure_tables
from tests.archive.events import make_events
from tests.archive.fake_sink import write_batch

RESULTS = Path(__file__).parent / "results"
START_MS = 1_757_030_400_000  # 2025-09-05T00:00Z
T = TypeVar("T")

TOP_SPENDERS = (
    "SELECT campaign_id, sum(spend) AS spend, sum(clicks) AS clicks FROM campaign_day "
    "WHERE `date` >= date_sub(DATE'{end}', 7) GROUP BY campaign_id ORDER BY spend DESC LIMIT 20"
)
CTR_BY_AGE = (
    "SELECT age_bucket, sum(views) AS views, sum(clicks) AS clicks, sum(clicks) / sum(views) AS ctr "
    "FROM demographic_day GROUP BY age_bucket ORDER BY age_bucket"
)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def write_archive(layout: ArchiveLayout, events: int, days: int) -> tuple[int, int]:
    """The events, one sink file per hour; returns (events written, bytes)."""
    step_ms = days * 86_400_000 * 6 // (events * 5)  # 1.2 events per request: ``events`` in ``days``
    stream = make_events(events, seed=11, start_ms=START_MS, step_ms=max(step_ms, 1))
    by_hour: dict[str, list[bytes]] = defaultdict(list)
    for e in stream:
        t = datetime.fromtimestamp(e.timestamp_ms / 1000, UTC)
        by_hour[f"date={t:%Y-%m-%d}/hour={t:%H}"].append(encoder.encode(e))
    write_batch(layout.feedback, 0, sorted(by_hour.items()))
    for crc in layout.feedback.rglob(".*.crc"):  # the fake sink's placeholders, not checksums Hadoop can read
        crc.unlink()
    size = sum(p.stat().st_size for p in layout.feedback.rglob("*.json"))
    return len(stream), size


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def run(events: int, days: int) -> dict[str, Any]:
    config = load_config()
    database = f"{database_of(config.pg_dsn)}_{new_suffix('whbench')}"
    dsn = asyncio.run(create_database(config.pg_dsn, database))
    root = Path(tempfile.mkdtemp(prefix="bench-warehouse-", dir=config.stack_dir))
    try:
        layout = ArchiveLayout(root / "archive")
        written, json_bytes = write_archive(layout, events, days)
        files = [str(f.path) for f in archive_files(layout)]
        warehouse = WarehouseConfig(location_uri(str(root / "warehouse")), dsn, "warehouse_metastore")
        ensure_metastore_schema(warehouse)
        spark = create_session("bench-warehouse", config.stack_dir, **hive_conf(warehouse))
        try:
            ensure_tables(spark, warehouse)
            # Warm-up: the JVM compiles the JSON and Parquet paths once before either side is timed.
            spark.read.schema(archive_schema()).json(files[:24]).write.parquet(str(root / "warmup"))
            _, reference_s = timed(
                lambda: spark.read.schema(archive_schema()).json(files).write.parquet(str(root / "reference"))
            )
            first, first_s = timed(lambda: load_feedback(spark, layout, warehouse))
            nothing, nothing_s = timed(lambda: load_feedback(spark, layout, warehouse))
            late = make_events(50, seed=12, start_ms=START_MS + 3_600_000, step_ms=1000)
            write_batch(layout.feedback, 1, [("date=2025-09-05/hour=01", [encoder.encode(e) for e in late])])
            late_load, late_s = timed(lambda: load_feedback(spark, layout, warehouse))
            end = first.days[-1]
            _, top_s = timed(lambda: spark.sql(TOP_SPENDERS.format(end=end)).collect())
            _, ctr_s = timed(lambda: spark.sql(CTR_BY_AGE).collect())
        finally:
            spark.stop()
        feedback_bytes = tree_bytes(root / "warehouse" / "feedback")
        all_bytes = tree_bytes(root / "warehouse")
        return {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "events": written,
            "days": len(first.days),
            "files": len(files),
            "reference_read_write_s": round(reference_s, 2),
            "reference_events_per_s": round(written / reference_s),
            "first_load_s": round(first_s, 2),
            "first_load_events_per_s": round(first.events / first_s),
            "load_over_reference": round(first_s / reference_s, 2),
            "nothing_new_load_s": round(nothing_s, 2),
            "nothing_new_files": nothing.new_files,
            "late_file_load_s": round(late_s, 2),
            "late_file_days": list(late_load.days),
            "top_spenders_7d_s": round(top_s, 2),
            "ctr_by_age_bucket_s": round(ctr_s, 2),
            "archive_json_mb_per_million": round(json_bytes / written * 1e6 / 2**20, 1),
            "feedback_table_mb_per_million": round(feedback_bytes / first.events * 1e6 / 2**20, 1),
            "warehouse_mb_per_million": round(all_bytes / first.events * 1e6 / 2**20, 1),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
        asyncio.run(drop_database(config.pg_dsn, database))


AGG_DAY = "2025-09-05"


def generated_day(spark: Any, events: int, files: int) -> Any:
    """``events`` feedback rows of ``AGG_DAY`` in the table's columns (without ``date``), from
    ``spark.range``: 1.2 events per request (a request's second event is its click, cumulative flags), 5,000
    campaigns, 200,000 users, every demographic dimension spread out, clicks charged their cpc."""
    from pyspark.sql import functions as F

    start_ms = START_MS
    i = F.col("id")
    request = (i * 5 / 6).cast("long")
    second = (request == ((i - 1) * 5 / 6).cast("long")) & (i > 0)  # the request's click
    acquired = second & (i % 23 == 0)
    cpc_micros = F.lit(100_000) + (request % 50) * 1_000
    spend = F.when(second, cpc_micros).otherwise(F.lit(0)).cast("long")
    ts = F.lit(start_ms) + (i * 86_400_000 / events).cast("long")
    cities = F.array(*[F.lit(f"city-{n:02d}") for n in range(40)])
    columns = {
        "event_id": F.concat(F.lit("evt-"), i.cast("string")),
        "campaign_id": F.format_string("camp-%05d", request % 5000),
        "user_id": F.format_string("user-%06d", request % 200_000),
        "request_id": F.concat(F.lit("req-"), request.cast("string")),
        "auction_cpm": F.lit(1.25).cast("decimal(24,10)"),
        "auction_cpc": (cpc_micros / 1_000_000).cast("decimal(20,6)"),
        "auction_cpa": F.lit(2.5).cast("decimal(20,6)"),
        "expenditure_amount": (spend / 1_000_000).cast("decimal(20,6)"),
        "expenditure_micros": spend,
        "user_action": F.when(second, F.lit("click")).otherwise(F.lit("view")),
        "timestamp": F.date_format(F.timestamp_millis(ts), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
        "timestamp_ms": ts,
        "click": F.when(second, 1).otherwise(0).cast("long"),
        "view": F.lit(1).cast("long"),
        "acquisition": F.when(acquired, 1).otherwise(0).cast("long"),
        "user_age": (F.lit(13) + request % 70).cast("long"),
        "user_gender": F.element_at(
            F.array(F.lit("M"), F.lit("F"), F.lit("O")), (request % 3 + 1).cast("int")
        ),
        "user_device_type": F.element_at(
            F.array(F.lit("mobile"), F.lit("desktop"), F.lit("tablet")), (request % 7 % 3 + 1).cast("int")
        ),
        "user_city": F.element_at(cities, (request % 40 + 1).cast("int")),
        "kafka_partition": (i % 3).cast("int"),
        "kafka_offset": i,
    }
    schema = archive_schema()
    frame = spark.range(0, events, 1, files)
    return frame.select(
        *[
            (columns[f.name] if f.name in columns else F.lit(None).cast(f.dataType)).alias(f.name)
            for f in schema.fields
        ]
    )


def run_aggregates(events: int, shuffle_partitions: int | None) -> dict[str, Any]:
    from pyspark.sql import functions as F

    config = load_config()
    database = f"{database_of(config.pg_dsn)}_{new_suffix('whbench')}"
    dsn = asyncio.run(create_database(config.pg_dsn, database))
    root = Path(tempfile.mkdtemp(prefix="bench-warehouse-", dir=config.stack_dir))
    conf = hive_conf(WarehouseConfig(location_uri(str(root / "warehouse")), dsn, "warehouse_metastore"))
    if shuffle_partitions is not None:
        conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    try:
        warehouse = WarehouseConfig(location_uri(str(root / "warehouse")), dsn, "warehouse_metastore")
        ensure_metastore_schema(warehouse)
        spark = create_session("bench-warehouse-aggregates", config.stack_dir, **conf)
        try:
            ensure_tables(spark, warehouse)
            location = warehouse.path(FEEDBACK, "_v", "generated", f"date={AGG_DAY}")
            files = max(2, events // 1_000_000)
            _, generate_s = timed(lambda: generated_day(spark, events, files).write.parquet(location))
            spark.sql(f"ALTER TABLE {FEEDBACK} ADD PARTITION (`date` = '{AGG_DAY}') LOCATION '{location}'")
            spark.catalog.refreshTable(FEEDBACK)

            def reference(out: str) -> None:
                per_request = (
                    spark.read.parquet(location)
                    .groupBy("request_id")
                    .agg(
                        F.first("campaign_id").alias("campaign_id"),
                        F.max("view").alias("viewed"),
                        F.max("click").alias("clicked"),
                        F.sum("expenditure_micros").alias("spend_micros"),
                    )
                )
                per_campaign = per_request.groupBy("campaign_id").agg(
                    F.count(F.lit(1)), F.sum("viewed"), F.sum("clicked"), F.sum("spend_micros")
                )
                per_campaign.write.parquet(str(root / out))

            reference("warmup")  # the JVM compiles the Parquet and aggregation paths once, untimed
            # The reference before and after the rebuild: the machine is shared, a drift shows.
            _, reference_s = timed(lambda: reference("reference-1"))
            _, rebuild_s = timed(lambda: rebuild_aggregates(spark, warehouse, "bench", [AGG_DAY]))
            _, reference2_s = timed(lambda: reference("reference-2"))
            stored = spark.sql("SELECT sum(expenditure_micros), count(*) FROM feedback").first()
            aggregated = spark.sql("SELECT sum(spend_micros), sum(events) FROM campaign_day").first()
            demographic = spark.sql("SELECT sum(spend_micros), count(*) FROM demographic_day").first()
            campaign_days = spark.table("campaign_day").count()
        finally:
            spark.stop()
        assert int(stored[0]) == int(aggregated[0]) == int(demographic[0]), (stored, aggregated, demographic)
        assert int(stored[1]) == int(aggregated[1]) == events
        return {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "aggregates-only",
            "events": events,
            "feedback_files": files,
            "feedback_mb": round(tree_bytes(Path(location.removeprefix("file:"))) / 2**20, 1),
            "shuffle_partitions": int(conf.get("spark.sql.shuffle.partitions", "4")),
            "generate_s": round(generate_s, 2),
            "reference_group_by_s": [round(reference_s, 2), round(reference2_s, 2)],
            "rebuild_aggregates_s": round(rebuild_s, 2),
            "rebuild_over_reference": round(2 * rebuild_s / (reference_s + reference2_s), 2),
            "cpu_pressure": Path("/proc/pressure/cpu").read_text().splitlines()[0],
            "target_s": 600,
            "campaign_day_rows": campaign_days,
            "demographic_day_rows": int(demographic[1]),
            "spend_micros": int(stored[0]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
        asyncio.run(drop_database(config.pg_dsn, database))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warehouse_load", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--aggregates-only", action="store_true", help="One day's aggregates rebuild.")
    parser.add_argument("--shuffle-partitions", type=int, default=None, help="spark.sql.shuffle.partitions.")
    args = parser.parse_args(argv)
    if args.aggregates_only:
        result = run_aggregates(args.events, args.shuffle_partitions)
    else:
        result = run(args.events, args.days)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"warehouse_load-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print(f"\n→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(script_main(main))
