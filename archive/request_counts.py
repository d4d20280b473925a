"""The archive of ``ad-request-counts`` and the fill figures read from it: fill rate = served / requests.

Written by the streaming archive's third query (``feedback_writer.start_queries``) to
``<archive_dir>/request_counts/date=…/part-*.json`` (Spark's exactly-once file sink; ``date`` is the UTC
day a window started), each record with its Kafka provenance. A record that does not parse is kept with its
raw value in ``raw`` (and null fields) rather than dropped: only the ad servers write the topic, so it
means a bug worth seeing. The files are few (one record per worker per minute), so nothing compacts them.

Reading (``load_counts``, ``request_totals``) de-duplicates by ``record_id`` (an ad server re-sends a
record Kafka did not acknowledge in time) and keeps the windows that *start* at or after ``since``: counts
are whole windows (a minute by default), so a report's window is rounded to them. Reused by whatever
aggregates the archive per day: ``load_counts`` is the clean table, ``request_totals`` one aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from adplatform.request_counts import RequestCounts
from archive.error import ArchiveError
from archive.layout import ArchiveLayout
from archive.sinklog import committed_files

QUERY_NAME = "request-counts-archive"
PARTITION_COLUMNS = ("date",)


def counts_schema() -> Any:
    """``RequestCounts`` as a Spark ``StructType``, derived from the wire struct (one source of truth)."""
    from pyspark.sql import types as T

    def spark_type(info: msgspec.inspect.Type, name: str) -> Any:
        if isinstance(info, msgspec.inspect.StrType):
            return T.StringType()
        if isinstance(info, msgspec.inspect.IntType):
            return T.LongType()
        if isinstance(info, msgspec.inspect.DictType):
            return T.MapType(spark_type(info.key_type, name), spark_type(info.value_type, name))
        raise ArchiveError(f"RequestCounts.{name}: no Spark mapping for {info!r}")

    struct = msgspec.inspect.type_info(RequestCounts)
    assert isinstance(struct, msgspec.inspect.StructType)
    return T.StructType([T.StructField(f.name, spark_type(f.type, f.name), True) for f in struct.fields])


def counts_rows(kafka: Any) -> Any:
    """Kafka records of ``ad-request-counts`` → archived rows: the record's fields, ``raw`` (the value,
    only when it did not parse), its Kafka provenance, and ``date`` (the window's UTC start day, or the
    broker's receipt day for an unparsed record)."""
    from pyspark.sql import functions as F

    schema = counts_schema()
    # One parse per record (the explode is a barrier the optimizer does not inline through; see parse.py).
    parsed = kafka.select(
        "*", F.explode(F.array(F.from_json(F.col("value").cast("string"), schema))).alias("r")
    )
    valid = F.col("r.record_id").isNotNull() & F.col("r.start_ms").isNotNull() & F.col("r.served").isNotNull()
    day = F.when(valid, F.timestamp_millis(F.col("r.start_ms"))).otherwise(F.col("timestamp"))
    return parsed.select(
        *[F.when(valid, F.col(f"r.{f.name}")).alias(f.name) for f in schema.fields],
        F.when(~valid, F.col("value").cast("string")).alias("raw"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.date_format(day, "yyyy-MM-dd").alias("date"),
    )


def archived_schema() -> Any:
    """An archived row as read back (``date`` comes from the directory names)."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            *counts_schema().fields,
            T.StructField("raw", T.StringType(), True),
            T.StructField("kafka_partition", T.IntegerType(), True),
            T.StructField("kafka_offset", T.LongType(), True),
        ]
    )


def counts_files(layout: ArchiveLayout) -> list[Path]:
    """The committed files of the request-counts sink (never a glob: see ``archive.sinklog``)."""
    return [layout.request_counts / key for key in committed_files(layout.request_counts)]


def load_counts(spark: Any, files: list[Path], since_ms: int | None, until_ms: int | None = None) -> Any:
    """The parsed count records, each ``record_id`` once, of the windows starting at or after ``since_ms``
    (and before ``until_ms``)."""
    from pyspark.sql import functions as F

    frame = spark.read.schema(archived_schema()).json([str(f) for f in files])
    frame = frame.where(F.col("record_id").isNotNull())
    if since_ms is not None:
        frame = frame.where(F.col("start_ms") >= since_ms)
    if until_ms is not None:
        frame = frame.where(F.col("start_ms") < until_ms)
    return frame.dropDuplicates(["record_id"])


@dataclass(frozen=True)
class RequestTotals:
    """Serve requests over the report's window, summed over every worker's count records."""

    served: int
    no_fill: int
    no_fill_reasons: dict[str, int]
    #: Refused before the auction (422, 503): not requests of the fill rate.
    rejected: int
    not_ready: int
    workers: int
    windows: int

    @property
    def requests(self) -> int:
        """Valid requests that reached the auction: the fill rate's denominator."""
        return self.served + self.no_fill

    @property
    def fill_rate(self) -> float | None:
        return self.served / self.requests if self.requests else None


def request_totals(counts: Any) -> RequestTotals:
    """Sum ``load_counts``'s records (exact integer sums in Spark, no sampling)."""
    from pyspark.sql import functions as F

    row = counts.agg(
        F.sum("served").alias("served"),
        F.sum("no_fill").alias("no_fill"),
        F.sum("rejected").alias("rejected"),
        F.sum("not_ready").alias("not_ready"),
        F.countDistinct("worker").alias("workers"),
        F.count(F.lit(1)).alias("windows"),
    ).first()
    reasons = (
        counts.select(F.explode("no_fill_reasons").alias("reason", "n"))
        .groupBy("reason")
        .agg(F.sum("n").alias("n"))
        .collect()
    )
    return RequestTotals(
        served=int(row["served"] or 0),
        no_fill=int(row["no_fill"] or 0),
        no_fill_reasons={str(r["reason"]): int(r["n"]) for r in sorted(reasons, key=lambda r: -int(r["n"]))},
        rejected=int(row["rejected"] or 0),
        not_ready=int(row["not_ready"] or 0),
        workers=int(row["workers"]),
        windows=int(row["windows"]),
    )


def read_request_totals(spark: Any, layout: ArchiveLayout, since_ms: int | None) -> RequestTotals | None:
    """The totals of the archived request counts; None when the archive holds none (an archive written
    before the counts existed, or ad servers that never ran against it)."""
    files = counts_files(layout)
    if not files:
        return None
    return request_totals(load_counts(spark, files, since_ms))
