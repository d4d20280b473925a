"""The dashboard's pure parts: rates and quantiles from scraped expositions, the pacing series, sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from admin.board_data import MAX_POINTS, pacing_series
from admin.keys import Principal
from admin.scrape import (
    FEEDBACK_ROUTE,
    FEEDBACK_STAGES,
    Samples,
    Snapshot,
    feedback_stage_quantiles,
    feedback_stages,
    format_feedback_stages,
    latency_quantile,
    parse,
    quantile,
    rate,
)
from admin.session import SessionStore, csrf_ok
from adserver import feedback as adserver_feedback
from adserver.feedback import FeedbackCounters
from adserver.http import fastpath as adserver_fastpath
from adserver.http.health import feedback_families
from adserver.http.metrics import MULTIPROC_ENV, WorkerExporter

EXPOSITION = """# TYPE adserver_serve_requests_total counter
adserver_serve_requests_total{{outcome="served"}} {served}
adserver_serve_requests_total{{outcome="no_fill"}} {unfilled}
# TYPE adserver_http_request_duration_seconds histogram
adserver_http_request_duration_seconds_bucket{{route="/ad/user/{{user_id}}/serve",le="0.001"}} {fast}
adserver_http_request_duration_seconds_bucket{{route="/ad/user/{{user_id}}/serve",le="0.01"}} {total}
adserver_http_request_duration_seconds_bucket{{route="/ad/user/{{user_id}}/serve",le="+Inf"}} {total}
adserver_http_request_duration_seconds_count{{route="/ad/user/{{user_id}}/serve"}} {total}
adserver_http_request_duration_seconds_sum{{route="/ad/user/{{user_id}}/serve"}} 1.0
"""


def _snap(at_s: float, *texts: str) -> Snapshot:
    samples: Samples = {}
    for text in texts:
        parse(text, samples)
    return Snapshot(at_s, samples, ())


def _text(served: int, unfilled: int, fast: int) -> str:
    return EXPOSITION.format(served=served, unfilled=unfilled, fast=fast, total=served + unfilled)


def test_two_targets_add_up_and_rates_are_deltas_over_time() -> None:
    old = _snap(100.0, _text(10, 0, 10), _text(5, 5, 10))
    new = _snap(110.0, _text(110, 0, 110), _text(55, 55, 110))
    assert new.total("adserver_serve_requests_total") == 220
    assert new.total("adserver_serve_requests_total", outcome="served") == 165
    assert rate(new, old, "adserver_serve_requests_total") == pytest.approx(20.0)
    assert rate(new, old, "adserver_serve_requests_total", outcome="no_fill") == pytest.approx(5.0)
    assert rate(new, old, "nothing_total") is None
    # A counter reset (an ad server restarted) gives no rate rather than a negative one.
    assert rate(old, _snap(90.0, _text(1000, 0, 0)), "adserver_serve_requests_total") is None


def test_quantiles_interpolate_within_the_bucket() -> None:
    assert quantile(0.5, [(0.001, 50.0), (0.01, 100.0), (float("inf"), 100.0)]) == pytest.approx(0.001)
    assert quantile(0.75, [(0.001, 50.0), (0.01, 100.0), (float("inf"), 100.0)]) == pytest.approx(0.0055)
    assert quantile(0.99, [(0.001, 0.0), (float("inf"), 10.0)]) == pytest.approx(0.001)
    assert quantile(0.5, [(0.001, 0.0), (float("inf"), 0.0)]) is None
    old = _snap(0.0, _text(100, 0, 100))  # all fast so far
    new = _snap(10.0, _text(200, 0, 100))  # the last 100 all slow
    p50 = latency_quantile(new, old, 0.5)
    assert p50 is not None and 0.001 < p50 <= 0.01  # the window's, not all time's


def _worker_text(batches: list[tuple[float, float, float, int]]) -> str:
    """One worker's exposition after ``batches`` (gate, debit, publish seconds, requests)."""
    counters = FeedbackCounters()
    for gate_s, debit_s, publish_s, size in batches:
        for stage, seconds in (("gate", gate_s), ("debit", debit_s), ("publish", publish_s)):
            counters.stages[stage].observe(seconds)
        counters.batch_requests.observe(size)
    out = WorkerExporter()
    feedback_families(out, counters)
    return out.render().decode()


def test_feedback_stages_are_means_per_batch_over_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert FEEDBACK_ROUTE == adserver_fastpath.FEEDBACK_ROUTE  # the label admin reads is the one served
    first, second = (0.0, 0.001, 0.002, 10), (0.001, 0.003, 0.004, 20)
    texts = [_worker_text([first]), _worker_text([second])]  # two workers, one batch each
    stages = feedback_stages(_snap(0.0, *texts))
    assert stages == pytest.approx(
        {"gate_ms": 0.5, "debit_ms": 2.0, "publish_ms": 3.0, "requests_per_batch": 15.0}
    )
    assert format_feedback_stages(stages) == (
        "per batch of 15 requests (means): gate 0.50 ms, debit 2.00 ms, publish 3.00 ms"
    )
    out = WorkerExporter()
    feedback_families(out, FeedbackCounters())  # before the first batch: the series exist, at 0
    assert feedback_stages(_snap(0.0, out.render().decode())) == {}
    assert feedback_stages(_snap(0.0, _text(1, 1, 1))) == {}  # a server without them (an older version)
    # Over a window: only the batches since the older snapshot; none meanwhile, nothing.
    old = _snap(0.0, _worker_text([first]))
    new = _snap(10.0, _worker_text([first, second, second]))
    assert feedback_stages(new, old) == pytest.approx(
        {"gate_ms": 1.0, "debit_ms": 3.0, "publish_ms": 4.0, "requests_per_batch": 20.0}
    )
    assert feedback_stages(old, old) == {}
    # A counter went back (an ad server restarted): the newest snapshot alone.
    assert feedback_stages(old, new) == pytest.approx(
        {"gate_ms": 0.0, "debit_ms": 1.0, "publish_ms": 2.0, "requests_per_batch": 10.0}
    )


def test_feedback_stage_tails_come_from_each_stages_histogram_over_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert FEEDBACK_STAGES == adserver_feedback.STAGES  # the labels admin reads are the ones exposed
    fast = [(0.0001, 0.001, 0.002, 1)] * 99
    slow_debit = (0.0001, 0.040, 0.002, 1)  # one batch in a hundred waits 40 ms on Redis
    old = _snap(0.0, _worker_text(fast))
    new = _snap(10.0, _worker_text([*fast, *fast, slow_debit, slow_debit]))
    tails = feedback_stage_quantiles(new, old, 0.99)
    assert 25.0 < tails["debit_ms"] <= 50.0, tails  # in the 25-50 ms bucket: the slow ones are the tail
    assert tails["publish_ms"] <= 2.5 and tails["gate_ms"] <= 0.25, tails
    assert feedback_stage_quantiles(old, None, 0.99)["debit_ms"] <= 1.0  # all time, before the slow ones
    assert feedback_stage_quantiles(old, old, 0.99) == {}  # nothing in the window
    line = format_feedback_stages(feedback_stages(new, old), tails)
    assert line.startswith("per batch of 1 requests (means): gate 0.10 ms, debit 1.77 ms, publish 2.00 ms; ")
    assert line.endswith(f"; p99 gate {tails['gate_ms']:.1f} ms, debit {tails['debit_ms']:.1f} ms, publish "
                         f"{tails['publish_ms']:.1f} ms")  # fmt: skip


def test_pacing_series_is_cumulative_per_slot_against_the_even_line() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=1)
    slot_s = 600
    first = int(start.timestamp()) // slot_s
    spend = {first: 1_000_000, first + 2: 2_000_000}
    now_s = start.timestamp() + 1800  # half way: slots 0-2 are past
    points = pacing_series(6_000_000, start, end, slot_s, spend, now_s)
    assert [p.plan for p in points] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [p.spent for p in points] == [1.0, 1.0, 3.0, 3.0, None, None]
    long = pacing_series(6_000_000, start, start + timedelta(days=30), slot_s, {}, now_s)
    assert len(long) <= MAX_POINTS and long[-1].plan == 6.0


def test_sessions_expire_are_bounded_and_check_csrf() -> None:
    store = SessionStore(max_sessions=2, max_age_s=3600)
    a, session = store.create(Principal("alice", "read"))
    b, _ = store.create(Principal("bob", "write"))
    assert store.get(a) == session and session.role == "read"
    c, _ = store.create(Principal("carol", "read"))
    assert store.get(a) is None and store.get(b) is not None and len(store) == 2  # the oldest went
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, None) and not csrf_ok(session, "x")
    store.drop(c)
    assert store.get(c) is None and store.get(None) is None and store.get("unknown") is None
    expired = SessionStore(max_age_s=-1)
    sid, _ = expired.create(Principal("dave", "read"))
    assert expired.get(sid) is None
