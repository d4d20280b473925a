"""Warehouse export: PostgreSQL ``online_ads.ads`` and ``online_ads.served_ads`` → Parquet snapshots.

The original plan's Sqoop → Hive step with today's tools: a Spark batch job reads both tables over JDBC
(``org.postgresql.Driver`` from the jar the stack fetched) and writes ``<archive_dir>/warehouse/ads`` and
``<archive_dir>/warehouse/served_ads`` (partitioned by the UTC ``date`` of ``served_at``). Each export is a
full snapshot: written beside the current table, then swapped in by two renames, so a failed export
leaves the previous snapshot intact. NUMERIC columns arrive as exact ``DecimalType``.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from archive.error import ArchiveError
from archive.layout import ArchiveLayout

logger = logging.getLogger(__name__)

TABLES = ("ads", "served_ads")


@dataclass(frozen=True)
class JdbcTarget:
    """A JDBC URL and its connection properties (password kept out of the repr)."""

    url: str
    user: str
    password: str = ""

    def __repr__(self) -> str:
        return f"JdbcTarget(url={self.url!r}, user={self.user!r})"

    def options(self) -> dict[str, str]:
        opts = {"url": self.url, "user": self.user, "driver": "org.postgresql.Driver"}
        if self.password:
            opts["password"] = self.password
        return opts


def jdbc_target(pg_dsn: str) -> JdbcTarget:
    """``postgresql://user:pw@host:port/db?opts`` → ``jdbc:postgresql://host:port/db?opts`` + user."""
    parts = urlsplit(pg_dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ArchiveError("ADP_PG_DSN: expected postgresql://user@host:port/db for the JDBC export")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    query = f"?{parts.query}" if parts.query else ""
    return JdbcTarget(
        url=f"jdbc:postgresql://{host}{port}{parts.path}{query}",
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
    )


def parquet_rows(spark: Any, path: Path) -> int:
    """Rows of a Parquet table directory; 0 for an empty export (Spark cannot infer a schema from none)."""
    if not any(path.rglob("*.parquet")):
        return 0
    return int(spark.read.parquet(str(path)).count())


@dataclass(frozen=True)
class ExportSummary:
    """Rows written per table and where."""

    rows: dict[str, int]
    paths: dict[str, Path]
    elapsed_s: float


def _swap_in(staged: Path, target: Path) -> None:
    """Replace ``target`` by ``staged``. Between the two renames the table is briefly absent; a crash there
    leaves ``.<name>.old`` which the next export restores or removes (``_clean_leftovers``)."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(target: Path) -> None:
    staged = target.with_name(f".{target.name}.new")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(staged, ignore_errors=True)
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            old.rename(target)


def export_tables(
    spark: Any, pg_dsn: str, layout: ArchiveLayout, *, fetch_size: int = 10_000
) -> ExportSummary:
    """Snapshot both tables into ``layout.warehouse``; returns row counts read back from the Parquet."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    target = jdbc_target(pg_dsn)
    layout.warehouse.mkdir(parents=True, exist_ok=True)
    rows: dict[str, int] = {}
    paths: dict[str, Path] = {}
    for table in TABLES:
        # A single JDBC partition: the tables are one machine's worth; on a cluster, add partitionColumn
        # (served_at) with bounds so executors read in parallel.
        frame = (
            spark.read.format("jdbc")
            .options(**target.options())
            .option("dbtable", f"online_ads.{table}")
            .option("fetchsize", str(fetch_size))
            .load()
        )
        out = layout.warehouse / table
        _clean_leftovers(out)
        staged = out.with_name(f".{table}.new")
        writer = frame
        if table == "served_ads":
            writer = frame.withColumn("date", F.to_date(F.col("served_at")))
            writer.write.mode("overwrite").partitionBy("date").parquet(str(staged))
        else:
            writer.write.mode("overwrite").parquet(str(staged))
        _swap_in(staged, out)
        rows[table] = parquet_rows(spark, out)
        paths[table] = out
        logger.info("exported online_ads.%s: %d rows → %s", table, rows[table], out)
    return ExportSummary(rows=rows, paths=paths, elapsed_s=time.monotonic() - started)
