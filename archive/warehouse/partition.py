"""Replace whole day partitions of a catalogued table, one atomic metastore update per day.

A load writes the new rows of every touched day under ``<table>/_v/<load_id>/date=D/`` (a directory no
reader lists: names starting with ``_`` are hidden), then moves each day's partition to it with one
``ALTER TABLE … SET LOCATION`` (or ``ADD PARTITION``). A crash leaves every day either on its old directory
or its new one; the old directories are deleted only after the load is committed (``delete_locations``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from archive.warehouse.tables import DATE


@dataclass(frozen=True)
class Replaced:
    """What one table's replacement did: the days now on new data and the directories they left."""

    table: str
    dates: tuple[str, ...]
    old_locations: tuple[str, ...]


class SimulatedCrash(RuntimeError):
    """Raised by a test hook between two partition swaps (the load stops as if killed)."""


def partition_dates(spark: Any, table: str) -> set[str]:
    """The days a table has partitions for (``YYYY-MM-DD``)."""
    return {row[0].split("=", 1)[1] for row in spark.sql(f"SHOW PARTITIONS {table}").collect()}


def partition_location(spark: Any, table: str, day: str) -> str:
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table} PARTITION (`{DATE}` = '{day}')").collect()
    for row in rows:
        if row[0] == "Location":
            return str(row[1])
    raise RuntimeError(f"{table}: partition {day} has no location")


def write_days(frame: Any, staging: str) -> None:
    """Write ``frame`` (with a ``date`` column) as one directory per day under ``staging``, one file per
    day (writing a shuffle's partitions as they are, a file per partition and day, measured slower)."""
    frame.repartition(DATE).write.partitionBy(DATE).parquet(staging)


def swap_days(
    spark: Any, table: str, staging: str, days: Sequence[str], *, crash_after: int | None = None
) -> Replaced:
    """Point each day's partition of ``table`` at ``staging/date=D`` (days with no new directory are left
    as they are): an existing day with one update each, the new days all with one ``ADD PARTITION``
    statement (one metastore call, instead of one per day). ``crash_after``: raise ``SimulatedCrash`` after
    that many days (tests)."""
    existing = partition_dates(spark, table)
    written = existing_dirs(spark, [f"{staging}/{DATE}={d}" for d in days])
    done: list[str] = []
    old: list[str] = []

    def count(swapped: Sequence[str]) -> None:
        done.extend(swapped)
        if crash_after is not None and len(done) >= crash_after:
            raise SimulatedCrash(f"{table}: stopped after {len(done)} of {len(days)} days")

    for day in days:
        location = f"{staging}/{DATE}={day}"
        if location in written and day in existing:
            old.append(partition_location(spark, table, day))
            spark.sql(f"ALTER TABLE {table} PARTITION (`{DATE}` = '{day}') SET LOCATION '{location}'")
            count([day])
    new = [d for d in days if f"{staging}/{DATE}={d}" in written and d not in existing]
    if new:
        specs = " ".join(f"PARTITION (`{DATE}` = '{d}') LOCATION '{staging}/{DATE}={d}'" for d in new)
        spark.sql(f"ALTER TABLE {table} ADD IF NOT EXISTS {specs}")
        count(new)
    spark.catalog.refreshTable(table)
    return Replaced(table, tuple(sorted(done)), tuple(old))


def _fs_path(spark: Any, location: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def existing_dirs(spark: Any, locations: Iterable[str]) -> set[str]:
    """The ``locations`` that exist (local or ``s3a:``, through Hadoop's file systems)."""
    found = set()
    for location in locations:
        fs, path = _fs_path(spark, location)
        if fs.exists(path):
            found.add(location)
    return found


def delete_locations(spark: Any, locations: Iterable[str]) -> None:
    """Delete directories a committed load left behind (only versions under ``/_v/``: never a table root)."""
    for location in locations:
        if "/_v/" not in location:
            continue
        fs, path = _fs_path(spark, location)
        fs.delete(path, True)
