"""The ad server's metrics: hot-path histogram maths, flushes into prometheus_client, the sum over workers."""

from __future__ import annotations

import bisect
import math
import multiprocessing
import os
import random
from pathlib import Path

import pytest

from adserver.fcap import CapStats
from adserver.feedback import FeedbackCounters
from adserver.http.health import cap_families, feedback_families
from adserver.http.metrics import (
    LATENCY_BUCKETS_S,
    MULTIPROC_ENV,
    Histogram,
    RequestMetrics,
    WorkerExporter,
)


def test_histogram_buckets_and_quantiles() -> None:
    hist = Histogram((0.1, 1.0))
    assert math.isnan(hist.quantile(0.5))
    for value in (0.05, 0.1, 0.5, 5.0):
        hist.observe(value)
    assert hist.counts == [2, 1, 1] and hist.count == 4 and hist.sum == 5.65
    assert hist.quantile(0.5) == 0.1 and hist.quantile(0.75) == 1.0 and hist.quantile(1.0) == math.inf


def test_a_value_lands_in_the_bucket_bisect_left_names() -> None:
    """Prometheus ``le`` buckets (a value on a bound counts in it), as ``bisect_left``, for values on,
    between, below and above the bounds."""
    rng = random.Random(7)
    values = [*LATENCY_BUCKETS_S, 0.0, 2.0, *(rng.uniform(0, 1.2) for _ in range(2_000))]
    values += [rng.choice(LATENCY_BUCKETS_S) * rng.choice((0.999, 1.001)) for _ in range(500)]
    hist = Histogram(LATENCY_BUCKETS_S)
    expected = [0] * (len(LATENCY_BUCKETS_S) + 1)
    for value in values:
        hist.observe(value)
        expected[bisect.bisect_left(LATENCY_BUCKETS_S, value)] += 1
    assert hist.counts == expected and hist.count == len(values)


def _lines(exporter: WorkerExporter) -> list[str]:
    return exporter.render().decode().splitlines()


def test_flushes_add_what_grew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = RequestMetrics()
    metrics.observe("/a", 200, 0.0001)
    metrics.observe("/a", 200, 0.002)
    metrics.observe("/a", 404, 0.5)
    out = metrics.exporter
    for _ in range(2):  # a second flush of the same totals adds nothing
        out.counter(
            "x_requests_total",
            "Requests",
            [((("route", r), ("status", str(s))), n) for (r, s), n in metrics.requests.items()],
        )
        out.histogram("lat_seconds", "Latency", [((("route", "/a"),), metrics.latency["/a"])])
        out.gauge("x_ratio", "A gauge", [((), 0.25)])
    lines = _lines(out)
    assert 'x_requests_total{route="/a",status="200"} 2.0' in lines
    assert 'x_requests_total{route="/a",status="404"} 1.0' in lines
    assert 'lat_seconds_bucket{le="0.00025",route="/a"} 1.0' in lines
    assert 'lat_seconds_bucket{le="0.0025",route="/a"} 2.0' in lines
    assert 'lat_seconds_bucket{le="+Inf",route="/a"} 3.0' in lines
    assert 'lat_seconds_count{route="/a"} 3.0' in lines
    assert "x_ratio 0.25" in lines
    assert not any("_created" in line for line in lines)
    metrics.observe("/a", 200, 0.0001)
    out.counter("x_requests_total", "Requests", [((("route", "/a"), ("status", "200")), 3)])
    assert 'x_requests_total{route="/a",status="200"} 3.0' in _lines(out)


def test_feedback_counters_are_exposed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    out = WorkerExporter()
    counters = FeedbackCounters(
        accepted=3, duplicates=2, rejected_tokens=1, unavailable=4, charged_micros=1_500, batches=2,
        republished=1,
    )  # fmt: skip
    feedback_families(out, counters)
    lines = _lines(out)
    assert "# TYPE adserver_feedback_accepted_total counter" in lines
    for line in (
        "adserver_feedback_accepted_total 3.0",
        "adserver_feedback_duplicates_total 2.0",
        "adserver_feedback_rejected_tokens_total 1.0",
        "adserver_feedback_unavailable_total 4.0",
        "adserver_feedback_charged_micros_total 1500.0",
        "adserver_feedback_batches_total 2.0",
        "adserver_feedback_republished_total 1.0",
    ):
        assert line in lines, line


def test_feedback_stages_and_batch_sizes_are_exposed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stage a series of one histogram (label ``stage``), present before its first batch."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    out = WorkerExporter()
    counters = FeedbackCounters()
    feedback_families(out, counters)
    lines = _lines(out)
    for stage in ("gate", "debit", "publish"):
        assert f'adserver_feedback_stage_seconds_count{{stage="{stage}"}} 0.0' in lines, stage
    counters.stages["debit"].observe(0.0015)
    counters.stages["publish"].observe(0.004)
    counters.batch_requests.observe(12)
    counters.batch_requests.observe(3)
    feedback_families(out, counters)
    lines = _lines(out)
    for line in (
        'adserver_feedback_stage_seconds_bucket{le="0.001",stage="debit"} 0.0',
        'adserver_feedback_stage_seconds_bucket{le="0.0025",stage="debit"} 1.0',
        'adserver_feedback_stage_seconds_sum{stage="publish"} 0.004',
        'adserver_feedback_stage_seconds_count{stage="gate"} 0.0',
        'adserver_feedback_batch_requests_bucket{le="4.0"} 1.0',
        'adserver_feedback_batch_requests_bucket{le="16.0"} 2.0',
        "adserver_feedback_batch_requests_sum 15.0",
    ):
        assert line in lines, line


def _worker(requests: int, served: int, queue: multiprocessing.Queue[int]) -> None:
    """One 'worker' process: counts, flushes, reports its pid and exits without marking itself dead."""
    metrics = RequestMetrics()
    for _ in range(requests):
        metrics.observe("/serve", 200, 0.001)
    out = metrics.exporter
    out.counter("adserver_ads_served_total", "Served", [((), served)])
    out.counter("adserver_ads_unfilled_total", "Unfilled", [((), requests - served)])
    out.counter(
        "adserver_http_requests_total",
        "Requests",
        [((("route", r), ("status", str(s))), n) for (r, s), n in metrics.requests.items()],
    )
    out.histogram(
        "adserver_http_request_duration_seconds",
        "Latency",
        [((("route", "/serve"),), metrics.latency["/serve"])],
    )
    out.gauge("adserver_index_size", "Campaigns", [((), float(requests))])
    out.gauge("adserver_served_ads_queued", "Queued", [((), float(requests))])
    out.gauge("adserver_worker_info", "Worker", [((), 1.0)])
    queue.put(os.getpid())


def test_workers_sum_in_multiprocess_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes write their own files; any reader sums counters and histograms, takes the max of
    the index size, sums queues, and drops a dead worker's live gauges but keeps its counts."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter picks the multiprocess values
    queue: multiprocessing.Queue[int] = context.Queue()
    procs = [context.Process(target=_worker, args=(n, s, queue)) for n, s in ((3, 2), (5, 1))]
    for proc in procs:
        proc.start()
    pids = sorted(queue.get(timeout=30) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    lines = WorkerExporter().render().decode().splitlines()
    assert 'adserver_http_requests_total{route="/serve",status="200"} 8.0' in lines
    assert 'adserver_http_request_duration_seconds_count{route="/serve"} 8.0' in lines
    assert "adserver_fill_ratio 0.375" in lines  # 3 served of 8, from the sums
    # Both workers have exited: their live gauges left the sums (mark_process_dead), counters stayed.
    assert not any(line.startswith(("adserver_index_size ", "adserver_worker_info")) for line in lines)
    assert pids and not list(tmp_path.glob("gauge_live*"))


def test_live_gauges_of_running_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gauges of a live worker (this process) combine per their mode."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    from prometheus_client import values

    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]  # unannotated
    out = WorkerExporter()
    out.gauge("adserver_index_size", "Campaigns", [((), 7.0)])
    out.gauge("adserver_worker_info", "Worker", [((), 1.0)])
    lines = _lines(out)
    assert "adserver_index_size 7.0" in lines
    assert f'adserver_worker_info{{pid="{os.getpid()}"}} 1.0' in lines


def test_frequency_cap_counters_are_exposed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    out = WorkerExporter()
    cap_families(out, CapStats(checked=5, moved_on=2, skipped_unavailable=3, skipped_anonymous=4))
    lines = _lines(out)
    for line in (
        "adserver_fcap_checked_total 5.0",
        "adserver_fcap_moved_on_total 2.0",
        "adserver_fcap_skipped_unavailable_total 3.0",
        "adserver_fcap_skipped_anonymous_total 4.0",
    ):
        assert line in lines, line
