"""SparkSession factory: local Spark from pyspark with the jars the stack pre-fetched (offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archive.error import ArchiveError

__all__ = ["ArchiveError", "create_session", "driver_java_options", "jdbc_jars", "spark_jars"]


def spark_jars(stack_dir: Path) -> list[Path]:
    """The Kafka connector, its runtime deps and the PostgreSQL JDBC driver fetched by `stack fetch`."""
    jars = sorted((stack_dir / "jars" / "spark").glob("*.jar"))
    if not any(j.name.startswith("spark-sql-kafka-0-10") for j in jars):
        where = stack_dir / "jars" / "spark"
        raise ArchiveError(f"Spark Kafka connector not found under {where}; run `adplatform stack fetch`")
    return jars


def jdbc_jars(jars: list[Path]) -> list[Path]:
    """The PostgreSQL JDBC driver among the fetched jars."""
    return [j for j in jars if j.name.startswith("postgresql-")]


def driver_java_options(options: str) -> dict[str, str]:
    """``create_session``'s conf giving the driver's JVM ``options`` (none when empty). Local Spark runs its
    executors in the driver's JVM, so they run under these too."""
    return {"spark.driver.extraJavaOptions": options} if options else {}


def create_session(app_name: str, stack_dir: Path, *, master: str = "local[2]", **conf: str) -> Any:
    """A SparkSession with the offline connector jars; small shuffle settings for one machine."""
    from pyspark.sql import SparkSession

    jars = spark_jars(stack_dir)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.jars", ",".join(str(j) for j in jars))
        # The JDBC driver on the JVM's own class path too: the warehouse's Hive metastore (DataNucleus)
        # finds drivers through DriverManager, which ignores the jars Spark adds at run time. Set on every
        # session, since only the first one of a Python process launches the JVM.
        .config("spark.driver.extraClassPath", ":".join(str(j) for j in jdbc_jars(jars)))
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in conf.items():
        builder = builder.config(key.replace("_", "."), value)
    return builder.getOrCreate()
