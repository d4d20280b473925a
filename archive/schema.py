"""The archive's schema, derived from the wire struct ``adplatform.wire.FeedbackEvent``: one source of truth.

Money is read as exact decimals: ``DecimalType(20, 6)`` (micro-units, as the NUMERIC columns) and
``DecimalType(24, 10)`` for the auction score ``auction_cpm`` (1e-10 units), so Spark sums are exact.
Archived records also carry their Kafka provenance (``kafka_partition``, ``kafka_offset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from adplatform.wire import FeedbackEvent
from archive.error import ArchiveError

ColumnKind = Literal["string", "long", "decimal"]

#: Money in micro-units; auction scores in 1e-10 units (see index/money.py).
MONEY_PRECISION, MONEY_SCALE = 20, 6
SCORE_PRECISION, SCORE_SCALE = 24, 10
SCORE_FIELDS = frozenset({"auction_cpm"})
#: Columns the writer adds to every archived record, after the event's own fields.
PROVENANCE_COLUMNS = ("kafka_partition", "kafka_offset")


@dataclass(frozen=True)
class ColumnSpec:
    """One field of the feedback record as Spark types it."""

    name: str
    kind: ColumnKind
    required: bool
    precision: int = 0
    scale: int = 0
    #: For Literal fields: the values a valid record may hold.
    allowed: tuple[str, ...] = ()


def _column(field: msgspec.inspect.Field) -> ColumnSpec:
    info = field.type
    if isinstance(info, msgspec.inspect.UnionType):
        # ``X | None``: optional in the struct, nullable in Spark.
        inner = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(inner) != 1:
            raise ArchiveError(f"FeedbackEvent.{field.name}: unsupported union {info!r}")
        info = inner[0]
    if isinstance(info, msgspec.inspect.StrType):
        return ColumnSpec(field.name, "string", field.required)
    if isinstance(info, msgspec.inspect.LiteralType):
        return ColumnSpec(field.name, "string", field.required, allowed=tuple(str(v) for v in info.values))
    if isinstance(info, msgspec.inspect.IntType):
        return ColumnSpec(field.name, "long", field.required)
    if isinstance(info, msgspec.inspect.DecimalType):
        if field.name in SCORE_FIELDS:
            return ColumnSpec(field.name, "decimal", field.required, SCORE_PRECISION, SCORE_SCALE)
        return ColumnSpec(field.name, "decimal", field.required, MONEY_PRECISION, MONEY_SCALE)
    raise ArchiveError(f"FeedbackEvent.{field.name}: no Spark mapping for {info!r}")


def feedback_columns() -> tuple[ColumnSpec, ...]:
    """The fields of ``FeedbackEvent`` in declaration order, as Spark columns."""
    info = msgspec.inspect.type_info(FeedbackEvent)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(_column(f) for f in info.fields)


FEEDBACK_COLUMNS = feedback_columns()
REQUIRED_FIELDS = tuple(c.name for c in FEEDBACK_COLUMNS if c.required)


def _spark_type(column: ColumnSpec) -> Any:
    from pyspark.sql import types as T

    if column.kind == "string":
        return T.StringType()
    if column.kind == "long":
        return T.LongType()
    return T.DecimalType(column.precision, column.scale)


def feedback_schema(*, corrupt_column: str | None = None) -> Any:
    """The ``ad-feedback`` message as a Spark ``StructType`` (every field nullable: validity is checked
    explicitly so a bad message is routed to ``_corrupt`` rather than half-parsed). With ``corrupt_column``
    a string field is appended that ``from_json`` fills with the raw text of a record that failed to parse."""
    from pyspark.sql import types as T

    fields = [T.StructField(c.name, _spark_type(c), True) for c in FEEDBACK_COLUMNS]
    if corrupt_column is not None:
        fields.append(T.StructField(corrupt_column, T.StringType(), True))
    return T.StructType(fields)


def archive_schema() -> Any:
    """An archived record as it is read back: the event's fields and its Kafka provenance."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            *feedback_schema().fields,
            T.StructField("kafka_partition", T.IntegerType(), True),
            T.StructField("kafka_offset", T.LongType(), True),
        ]
    )
