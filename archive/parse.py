"""Kafka records → archived feedback rows and corrupt rows, as Spark column expressions (no I/O).

A record is valid when its value is a JSON object that ``from_json`` parses without a type error, every
required field of ``FeedbackEvent`` is present, ``user_action`` is one of its literals and
``expenditure_amount`` equals ``expenditure_micros`` (the books must add up in the archive too).
Anything else keeps its raw value, Kafka coordinates and the reason, for ``_corrupt/``.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

from archive.schema import FEEDBACK_COLUMNS, PROVENANCE_COLUMNS, REQUIRED_FIELDS, feedback_schema

CORRUPT_COLUMN = "_corrupt_record"
#: The partition columns of the archive, derived from the event time (UTC).
PARTITION_COLUMNS = ("date", "hour")


def with_parsed(kafka: Any) -> Any:
    """Add ``event`` (the parsed struct), ``reason`` (null when valid) to a Kafka source DataFrame."""
    from pyspark.sql import functions as F

    event = F.from_json(
        F.col("value").cast("string"),
        feedback_schema(corrupt_column=CORRUPT_COLUMN),
        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN},
    )
    # Parse once per record. As a plain column, the optimizer would substitute ``from_json`` into every
    # field reference of the validity checks (pushing the filter through the projection) and parse each
    # message dozens of times; a one-element explode is a barrier it does not see through.
    parsed = kafka.select("*", F.explode(F.array(event)).alias("event"))
    missing = [F.when(F.col(f"event.{name}").isNull(), F.lit(name)) for name in REQUIRED_FIELDS]
    literal_checks = [
        F.when(
            ~F.col(f"event.{c.name}").isin(*c.allowed), F.lit(f"{c.name} not one of {'/'.join(c.allowed)}")
        )
        for c in FEEDBACK_COLUMNS
        if c.allowed
    ]
    amount_micros = (F.col("event.expenditure_amount") * F.lit(1_000_000)).cast("long")
    reason = (
        F.when(F.col("value").isNull(), F.lit("null value"))
        .when(F.col(f"event.{CORRUPT_COLUMN}").isNotNull(), F.lit("not a JSON object of the feedback schema"))
        .when(
            reduce(lambda a, b: a | b, [F.col(f"event.{n}").isNull() for n in REQUIRED_FIELDS]),
            F.concat(F.lit("missing required field(s): "), F.concat_ws(",", *missing)),
        )
        .when(
            reduce(
                lambda a, b: a | b,
                [~F.col(f"event.{c.name}").isin(*c.allowed) for c in FEEDBACK_COLUMNS if c.allowed],
            ),
            F.concat_ws("; ", *literal_checks),
        )
        .when(
            amount_micros != F.col("event.expenditure_micros"),
            F.lit("expenditure_amount != expenditure_micros"),
        )
    )
    return parsed.withColumn("reason", reason)


def feedback_rows(parsed: Any) -> Any:
    """Valid records: the event's fields, its Kafka provenance and the UTC ``date``/``hour`` of the event."""
    from pyspark.sql import functions as F

    event_time = F.timestamp_millis(F.col("event.timestamp_ms"))
    return parsed.where(F.col("reason").isNull()).select(
        *[F.col(f"event.{c.name}").alias(c.name) for c in FEEDBACK_COLUMNS],
        F.col("partition").alias(PROVENANCE_COLUMNS[0]),
        F.col("offset").alias(PROVENANCE_COLUMNS[1]),
        F.date_format(event_time, "yyyy-MM-dd").alias("date"),
        F.date_format(event_time, "HH").alias("hour"),
    )


def corrupt_rows(parsed: Any) -> Any:
    """Invalid records: raw value (text and base64, since it may not be UTF-8), Kafka coordinates, reason,
    partitioned by the UTC date the broker received them."""
    from pyspark.sql import functions as F

    return parsed.where(F.col("reason").isNotNull()).select(
        F.col("value").cast("string").alias("value"),
        F.base64(F.col("value")).alias("value_base64"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.date_format(F.col("timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("kafka_timestamp"),
        F.col("reason"),
        F.date_format(F.col("timestamp"), "yyyy-MM-dd").alias("date"),
    )
