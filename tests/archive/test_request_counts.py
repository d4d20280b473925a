"""The request-count archive's pure parts: the Spark schema follows the wire struct, and the topic pattern
matches exactly one topic name."""

from __future__ import annotations

import re

import msgspec

from adplatform.request_counts import RequestCounts
from archive.feedback_writer import exact_pattern
from archive.request_counts import RequestTotals, counts_schema


def test_the_spark_schema_has_every_field_of_the_wire_struct() -> None:
    info = msgspec.inspect.type_info(RequestCounts)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f.dataType.simpleString() for f in counts_schema().fields}
    assert list(fields) == [f.name for f in info.fields]
    assert fields["no_fill_reasons"] == "map<string,bigint>"
    assert fields["served"] == "bigint" and fields["record_id"] == "string"


def test_the_pattern_matches_the_topic_and_nothing_else() -> None:
    # Java and Python agree on backslash-escaped punctuation, so Python's re checks the Java pattern.
    topic = "t1a2b.c-ad-request-counts"
    pattern = re.compile(exact_pattern(topic))
    assert pattern.fullmatch(topic)
    assert not pattern.fullmatch("t1a2bXc-ad-request-counts")  # the dot is literal
    assert not pattern.fullmatch(topic + "-2") and not pattern.fullmatch("x" + topic)


def test_fill_rate_is_served_over_requests_and_none_without_requests() -> None:
    totals = RequestTotals(
        served=3,
        no_fill=1,
        no_fill_reasons={"no_eligible_ad": 1},
        rejected=5,
        not_ready=2,
        workers=1,
        windows=1,
    )
    assert (totals.requests, totals.fill_rate) == (4, 0.75)  # 422s and 503s are not requests of the rate
    empty = RequestTotals(
        served=0, no_fill=0, no_fill_reasons={}, rejected=0, not_ready=0, workers=0, windows=0
    )
    assert empty.fill_rate is None
