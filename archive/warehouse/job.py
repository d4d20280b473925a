"""spark-submit entry point of the warehouse load: ``spark-submit … archive/warehouse/job.py`` (see
``adplatform warehouse load``). Config from ``ADP_*``; prints one summary line. ``--check``: then the books
in the same session (``archive.warehouse.check``: saves a second JVM), exit 1 when they differ;
``--books-json PATH`` also writes them there as JSON (the demo's conservation line)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from adplatform.config import load_config
from archive.layout import ArchiveLayout
from archive.warehouse.catalog import WarehouseConfig, ensure_metastore_schema, hive_conf
from archive.warehouse.check import BooksCheck, check_books
from archive.warehouse.history import load_history
from archive.warehouse.load import load_feedback, new_load_id
from archive.warehouse.tables import ensure_tables

APP_NAME = "adplatform-warehouse-load"


def main(argv: Sequence[str] | None = None) -> int:
    """Load the feedback table and its aggregates once; exit 0 (1: ``--check`` found differences)."""
    from pyspark.sql import SparkSession

    parser = argparse.ArgumentParser(prog="warehouse-load", description=__doc__)
    parser.add_argument("--check", action="store_true", help="Then check the books; exit 1 if they differ.")
    parser.add_argument("--books-json", type=Path, default=None, help="With --check: write the books here.")
    args = parser.parse_args(argv)
    config = load_config()
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    warehouse = WarehouseConfig.from_config(config)
    ensure_metastore_schema(warehouse)
    builder = SparkSession.builder.appName(APP_NAME)
    for key, value in {**hive_conf(warehouse), "spark.sql.shuffle.partitions": "4"}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        ensure_tables(spark, warehouse)
        # The history first: campaign_day's budgets are read from it.
        states = load_history(
            spark, warehouse, config.kafka_bootstrap, config.topics.ad_changes, new_load_id(datetime.now(UTC))
        )
        summary = load_feedback(spark, ArchiveLayout(config.archive_dir), warehouse, pg_dsn=config.pg_dsn)
        books = check_books(spark, config.pg_dsn) if args.check else None
    finally:
        spark.stop()
    rate = summary.events / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    days = ", ".join(summary.days) or "-"
    print(
        f"warehouse load {summary.load_id}: {summary.new_files} new files, days {days}, "
        f"{summary.events} events in those days, served ads of {len(summary.served_days)} days, "
        f"{states} new campaign states, budgets of {len(summary.budget_days)} days, "
        f"{summary.elapsed_s:.1f}s ({rate:.0f} events/s)",
        flush=True,
    )
    return 0 if books is None else report_books(books, args.books_json)


def report_books(books: BooksCheck, path: Path | None) -> int:
    """Print the books' summary and one line per difference (and write them to ``path``); the exit status."""
    print(books.summary(), flush=True)
    for line in books.difference_lines():
        print(f"  {line}", flush=True)
    if path is not None:
        path.write_text(json.dumps(books.as_json()) + "\n")
    return 0 if books.balanced else 1


if __name__ == "__main__":
    sys.exit(main())
