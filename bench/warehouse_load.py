"""Warehouse load throughput beside a plain Spark read-and-write of the same files, and query times.

    python -m bench.warehouse_load [--events 300000] [--days 30]

Writes ``--events`` generated ``FeedbackEvent``s over ``--days`` days into a fresh archive laid out as the
streaming sink leaves it (one file per hour), in a database and directories of its own (removed at the
end). In one Spark session (local[2]), same run: a plain ``read.json → write.parquet`` of the same files
(the reference), the first warehouse load (feedback + aggregates for every day), a load that finds nothing
new, a load after one late file, then the top-spenders and CTR-by-age-bucket queries over the aggregates.
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

from adplatform.config import load_config
from adplatform.sandbox import create_database, database_of, drop_database, new_suffix
from adplatform.wire import encoder
from archive.layout import ArchiveLayout
from archive.schema import archive_schema
from archive.session import create_session
from archive.warehouse.catalog import WarehouseConfig, ensure_metastore_schema, hive_conf, location_uri
from archive.warehouse.load import archive_files, load_feedback
from archive.warehouse.tables import ensure_tables
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warehouse_load", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    result = run(args.events, args.days)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"warehouse_load-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print(f"\n→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
