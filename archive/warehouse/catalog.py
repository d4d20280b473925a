"""The warehouse's catalog: Spark's built-in Hive client (Hive 2.3, shipped with pyspark) over a metastore
kept in a schema of the stack's PostgreSQL, tables as Parquet under ``Config.warehouse_location``.

Why a Hive metastore and not Iceberg: Iceberg's Spark runtime exists for Spark 4.0/4.1, not for the 4.2 we
run; Hive support is inside pyspark itself (``spark-hive_2.13-4.2.0`` and the Hive 2.3 jars), so the only
extra jar is the PostgreSQL driver the stack already fetches. Why PostgreSQL and not the embedded Derby
metastore: Derby admits one JVM at a time, so ``adplatform sql`` could not run while a load does.

DataNucleus creates the metastore's tables on first use. Its foreign keys are left out
(``autoCreateConstraints`` off): it adds them lazily with ``ALTER TABLE`` on one connection while its own
transaction on another holds a lock on the referenced table, and the two wait on each other for ever.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from adplatform.config import Config
from adplatform.postgres import quote_ident
from archive.export import JdbcTarget, jdbc_target


@dataclass(frozen=True)
class WarehouseConfig:
    """Where the tables live and where their catalog is."""

    #: A URI Spark understands (``file:/…``, ``s3a://bucket/prefix``), no trailing slash.
    location: str
    pg_dsn: str
    metastore_schema: str

    @classmethod
    def from_config(cls, config: Config) -> WarehouseConfig:
        """``Config.warehouse_dir`` (default ``<stack_dir>/warehouse``) and its metastore schema."""
        location = config.warehouse_dir or str(config.stack_dir / "warehouse")
        return cls(location_uri(location), config.pg_dsn, config.warehouse_metastore_schema)

    def path(self, *parts: str) -> str:
        return "/".join([self.location, *parts])

    def metastore(self) -> JdbcTarget:
        target = jdbc_target(self.pg_dsn)
        sep = "&" if "?" in target.url else "?"
        return JdbcTarget(
            f"{target.url}{sep}currentSchema={self.metastore_schema}", target.user, target.password
        )


def location_uri(location: str) -> str:
    """A local path becomes an absolute ``file:`` URI; a URI is kept."""
    if urlsplit(location).scheme:
        return location.rstrip("/")
    return Path(location).absolute().as_uri().rstrip("/")


def hive_conf(warehouse: WarehouseConfig) -> dict[str, str]:
    """The Spark settings of a session whose catalog is the warehouse's metastore."""
    metastore = warehouse.metastore()
    conf = {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": warehouse.location,
        "spark.hadoop.javax.jdo.option.ConnectionURL": metastore.url,
        "spark.hadoop.javax.jdo.option.ConnectionDriverName": "org.postgresql.Driver",
        "spark.hadoop.javax.jdo.option.ConnectionUserName": metastore.user,
        "spark.hadoop.datanucleus.schema.autoCreateTables": "true",
        "spark.hadoop.datanucleus.schema.autoCreateColumns": "true",
        "spark.hadoop.datanucleus.schema.autoCreateConstraints": "false",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        # Timestamps and dates of the whole warehouse are UTC, whatever the machine's zone.
        "spark.sql.session.timeZone": "UTC",
    }
    if metastore.password:
        conf["spark.hadoop.javax.jdo.option.ConnectionPassword"] = metastore.password
    return conf


async def _create_schema(pg_dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    finally:
        await conn.close()


def ensure_metastore_schema(warehouse: WarehouseConfig) -> None:
    """The metastore's PostgreSQL schema exists (DataNucleus creates tables, not schemas)."""
    asyncio.run(_create_schema(warehouse.pg_dsn, warehouse.metastore_schema))


def warehouse_session(app_name: str, config: Config, *, master: str = "local[2]") -> Any:
    """A SparkSession over the warehouse's catalog, with its tables created if missing."""
    from archive.session import create_session
    from archive.warehouse.tables import ensure_tables

    warehouse = WarehouseConfig.from_config(config)
    ensure_metastore_schema(warehouse)
    spark = create_session(app_name, config.stack_dir, master=master, **hive_conf(warehouse))
    ensure_tables(spark, warehouse)
    return spark
