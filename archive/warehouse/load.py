"""Load the ``feedback`` table from the archive, incrementally and exactly once, then its aggregates.

A load lists the archive's files (``archive.reader``: compacted files plus committed sink files), keeps
those the load log (``warehouse_loads``) does not hold, and takes the *days* of those files. Each such day
is rebuilt whole from every archive file of that day, de-duplicated by ``event_id``, and swapped in
(``partition.swap_days``); then the aggregates of the same days; then the load log records the files. So:

- re-running changes nothing (no new file, nothing to do; a day rebuilt twice from the same files is the
  same day);
- a late event lands in its own day: its file sits under the archive's ``date=`` of the event, and that day
  is rebuilt;
- a crash before the log is written leaves every day old or new and the files unrecorded, so the next load
  rebuilds the same days again from the same files. A compaction that replaces files makes the day look new
  once more: it is rebuilt to the same rows.

The same load brings the ``served_ads`` days that grew in PostgreSQL (``archive.warehouse.served``) and
rebuilds the aggregates of those days too, since ``campaign_day.served`` counts them; and rebuilds the days
whose ``campaign_day.budget_micros`` is not the ``campaign_history`` state in force at the day's end (load
the history first, as the job does).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from archive.layout import ArchiveLayout
from archive.reader import read_lock, snapshot
from archive.schema import archive_schema
from archive.warehouse.aggregate import (
    campaign_day,
    demographic_day,
    per_request,
    served_counts,
    stale_budget_days,
)
from archive.warehouse.catalog import WarehouseConfig
from archive.warehouse.history import CAMPAIGN_HISTORY
from archive.warehouse.partition import Replaced, delete_locations, swap_days, write_days
from archive.warehouse.served import SERVED_ADS, changed_days, served_rows
from archive.warehouse.tables import CAMPAIGN_DAY, DATE, DEMOGRAPHIC_DAY, FEEDBACK, LOADS

logger = logging.getLogger(__name__)

SOURCE = "archive-feedback"


@dataclass(frozen=True)
class SourceFile:
    """One archive file: its key relative to the archive directory, size and day."""

    key: str
    path: Path
    size: int
    day: str


@dataclass(frozen=True)
class LoadOptions:
    """Test hooks: ``crash_after_swaps`` stops the load after that many feedback day swaps."""

    crash_after_swaps: int | None = None


@dataclass(frozen=True)
class LoadSummary:
    """What a load did."""

    load_id: str
    new_files: int
    days: tuple[str, ...]
    #: Rows of the rebuilt days in the feedback table after the load.
    events: int
    elapsed_s: float
    #: Days whose served ads were (re)loaded from PostgreSQL.
    served_days: tuple[str, ...] = ()
    #: Days re-aggregated because their budgets were not the campaign history's.
    budget_days: tuple[str, ...] = ()


def file_day(path: Path) -> str:
    for part in reversed(path.parent.parts):
        if part.startswith("date="):
            return part.removeprefix("date=")
    raise ValueError(f"{path}: not under a date= directory")


def archive_files(layout: ArchiveLayout) -> list[SourceFile]:
    """The archive's data files now (call under ``read_lock``)."""
    files = []
    for path in snapshot(layout).files:
        files.append(
            SourceFile(str(path.relative_to(layout.root)), path, path.stat().st_size, file_day(path))
        )
    return files


def loaded_files(spark: Any) -> set[tuple[str, int]]:
    from pyspark.sql import functions as F

    spark.catalog.refreshTable(LOADS)  # another process (a spark-submit load) may have added to it
    rows = spark.table(LOADS).where(F.col("source") == SOURCE).select("file", "size").collect()
    return {(str(r[0]), int(r[1])) for r in rows}


def new_load_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def day_events(spark: Any, files: Sequence[SourceFile], days: Sequence[str]) -> Any:
    """The archived events of ``days`` from ``files``, one row per ``event_id``, with the ``date`` of the
    archive directory the event was filed under (the UTC day of its timestamp)."""
    from pyspark.sql import functions as F

    frame = spark.read.schema(archive_schema()).json([str(f.path) for f in files])
    day = F.regexp_extract(F.input_file_name(), r"date=(\d{4}-\d{2}-\d{2})", 1)
    frame = frame.where(F.col("event_id").isNotNull()).withColumn(DATE, F.to_date(day))
    return frame.where(F.col(DATE).isin([date.fromisoformat(d) for d in days])).dropDuplicates(
        [DATE, "event_id"]
    )


def _record(spark: Any, load_id: str, files: Sequence[SourceFile], at: datetime) -> None:
    from pyspark.sql import types as T

    schema = spark.table(LOADS).schema
    rows = [(load_id, SOURCE, f.key, f.size, date.fromisoformat(f.day), at) for f in files]
    assert isinstance(schema, T.StructType)
    spark.createDataFrame(rows, schema).coalesce(1).write.insertInto(LOADS)


def load_feedback(
    spark: Any,
    layout: ArchiveLayout,
    warehouse: WarehouseConfig,
    options: LoadOptions | None = None,
    *,
    pg_dsn: str | None = None,
) -> LoadSummary:
    """One load (see the module's docstring); ``spark`` is a ``warehouse_session``. With ``pg_dsn`` the
    ``served_ads`` days that changed in PostgreSQL are loaded too (``archive.warehouse.served``)."""
    options = options or LoadOptions()
    started = time.monotonic()
    now = datetime.now(UTC)
    load_id = new_load_id(now)
    replaced: list[Replaced] = []
    with read_lock(layout):
        files = archive_files(layout)
        loaded = loaded_files(spark)
        new = [f for f in files if (f.key, f.size) not in loaded]
        days = sorted({f.day for f in new})
        staging = warehouse.path(FEEDBACK, "_v", load_id)
        if days:
            sources = [f for f in files if f.day in set(days)]
            logger.info(
                "load %s: %d new files, %d days from %d files", load_id, len(new), len(days), len(sources)
            )
            write_days(day_events(spark, sources, days), staging)
    if days:
        replaced.append(swap_days(spark, FEEDBACK, staging, days, crash_after=options.crash_after_swaps))
    served = changed_days(spark, pg_dsn) if pg_dsn is not None else []
    if pg_dsn is not None and served:
        served_staging = warehouse.path(SERVED_ADS, "_v", load_id)
        write_days(served_rows(spark, pg_dsn, served), served_staging)
        replaced.append(swap_days(spark, SERVED_ADS, served_staging, served))
    budgets = stale_budget_days(spark)
    rebuilt = sorted(set(days) | set(served) | set(budgets))
    if not rebuilt:
        return LoadSummary(load_id, 0, (), 0, time.monotonic() - started)
    replaced += rebuild_aggregates(spark, warehouse, load_id, rebuilt)
    if new:
        _record(spark, load_id, new, now)  # the commit point: these files are loaded
    _cleanup(spark, replaced)
    events = int(spark.table(FEEDBACK).where(spark_days(days)).count()) if days else 0
    return LoadSummary(
        load_id,
        len(new),
        tuple(days),
        events,
        time.monotonic() - started,
        tuple(served),
        tuple(budgets),
    )


def rebuild_aggregates(
    spark: Any, warehouse: WarehouseConfig, load_id: str, days: Sequence[str]
) -> list[Replaced]:
    """Rebuild ``campaign_day`` and ``demographic_day`` for ``days`` from the ``feedback``, ``served_ads``
    and ``campaign_history`` tables, each day swapped in whole; the old directories are returned for
    deletion once the load is committed."""
    replaced = []
    requests = per_request(spark, days).cache()
    try:
        aggregates = (
            (
                CAMPAIGN_DAY,
                campaign_day(requests, served_counts(spark, days), spark.table(CAMPAIGN_HISTORY)),
            ),
            (DEMOGRAPHIC_DAY, demographic_day(requests)),
        )
        for table, frame in aggregates:
            table_staging = warehouse.path(table, "_v", load_id)
            write_days(frame, table_staging)
            replaced.append(swap_days(spark, table, table_staging, days))
    finally:
        requests.unpersist()
    return replaced


def spark_days(days: Sequence[str]) -> Any:
    from pyspark.sql import functions as F

    return F.col(DATE).isin([date.fromisoformat(d) for d in days])


def _cleanup(spark: Any, replaced: Sequence[Replaced]) -> None:
    # A query that started before the swap may still be reading an old directory: it fails, and is rerun
    # on the new data. Keeping old versions for a grace period is left for later.
    delete_locations(spark, [loc for r in replaced for loc in r.old_locations])
