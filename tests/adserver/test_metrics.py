"""The hand-rolled Prometheus registry: histogram maths and the text format."""

from __future__ import annotations

import math

from adserver.feedback import FeedbackCounters
from adserver.http.health import feedback_families
from adserver.http.metrics import Exposition, Histogram, RequestMetrics


def test_histogram_buckets_and_quantiles() -> None:
    hist = Histogram((0.1, 1.0))
    assert math.isnan(hist.quantile(0.5))
    for value in (0.05, 0.1, 0.5, 5.0):
        hist.observe(value)
    assert hist.counts == [2, 1, 1] and hist.count == 4 and hist.sum == 5.65
    assert hist.quantile(0.5) == 0.1 and hist.quantile(0.75) == 1.0 and hist.quantile(1.0) == math.inf


def test_exposition_text_format() -> None:
    metrics = RequestMetrics()
    metrics.observe("/a", 200, 0.0001)
    metrics.observe("/a", 200, 0.002)
    metrics.observe("/a", 404, 0.5)
    out = Exposition()
    out.family("x_total", "counter", "Things", [((("route", '/a"b\\'),), 3)])
    out.family("x_ratio", "gauge", "A ratio", [((), math.nan)])
    out.histograms("lat", "Latency", [((("route", "/a"),), metrics.latency["/a"])])
    lines = out.render().decode().splitlines()
    assert lines[:3] == ["# HELP x_total Things", "# TYPE x_total counter", 'x_total{route="/a\\"b\\\\"} 3']
    assert "x_ratio NaN" in lines
    assert 'lat_bucket{route="/a",le="0.00025"} 1' in lines
    assert 'lat_bucket{route="/a",le="0.0025"} 2' in lines
    assert 'lat_bucket{route="/a",le="+Inf"} 3' in lines
    assert 'lat_count{route="/a"} 3' in lines
    assert metrics.requests == {("/a", 200): 2, ("/a", 404): 1}


def test_feedback_counters_are_exposed() -> None:
    out = Exposition()
    counters = FeedbackCounters(
        accepted=3, duplicates=2, rejected_tokens=1, unavailable=4, charged_micros=1_500, batches=2
    )
    feedback_families(out, counters)
    lines = out.render().decode().splitlines()
    assert "# TYPE adserver_feedback_accepted_total counter" in lines
    for line in (
        "adserver_feedback_accepted_total 3",
        "adserver_feedback_duplicates_total 2",
        "adserver_feedback_rejected_tokens_total 1",
        "adserver_feedback_unavailable_total 4",
        "adserver_feedback_charged_micros_total 1500",
        "adserver_feedback_batches_total 2",
    ):
        assert line in lines, line
