"""Warehouse export and the report on real Kafka, Spark and PostgreSQL, checked against pure Python.

The module archives a stream of events (some delivered twice) and the ad servers' request counts (some
re-sent, some before the window, one unparseable), compacts part of the archive so the report reads
compacted and uncompacted files, inserts served ads for the same requests, exports the warehouse and builds
the report once; the tests compare its CSV files with a recomputation and render its HTML. The archive's
commit lag gauge is read before and after the writer runs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from matplotlib.image import imread
from prometheus_client.registry import REGISTRY

from adplatform.config import Config
from adplatform.kafka import ensure_topics, make_producer, wait_for_topics
from adplatform.request_counts import RequestCounts, counts_encoder
from adplatform.wire import FeedbackEvent, encoder
from archive.compact import compact, partition_start
from archive.export import export_tables
from archive.feedback_writer import WriterOptions, run_writer
from archive.layout import ArchiveLayout
from archive.progress import ArchiveLagTracker
from archive.report import ReportOptions, ReportResult, StageProgress, build_report
from tests.archive.conftest import publish
from tests.archive.events import make_events

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.postgres]

N = 2000
START_MS = 1_760_100_000_000  # 2025-10-10T12:40Z; 3 s per request → about 70 minutes: per-minute buckets
#: Events delivered twice, in the first (compacted) hour and in the last (uncompacted) one.
REDELIVERED = 25
UNVIEWED_SERVED = 120
CHROMIUM = Path("/usr/bin/chromium")


@dataclass(frozen=True)
class Reported:
    config: Config
    events: list[FeedbackEvent]
    served_request_ids: list[str]
    result: ReportResult
    since: datetime
    #: The count records the report must sum: in the window, each once.
    counts: list[RequestCounts]
    #: archive_commit_lag_records summed over partitions: before the writer ran, after it.
    lag: tuple[float, float]


def _count_records() -> tuple[list[RequestCounts], list[bytes]]:
    """Three workers' one-minute windows over the events' span (and two before the report's window);
    returns the records in the window and every payload to publish (re-sends and a corrupt one included)."""
    records: list[RequestCounts] = []
    for w in range(3):
        for minute in range(-2, 70):
            start = START_MS + minute * 60_000
            served, no_fill = 40 + (minute * 7 + w * 3) % 17, (minute * 5 + w) % 9
            records.append(
                RequestCounts(
                    record_id=f"w{w}:{minute + 2}",
                    worker=f"w{w}",
                    seq=minute + 2,
                    start_ms=start,
                    end_ms=start + 60_000,
                    served=served,
                    no_fill=no_fill,
                    no_fill_reasons={"no_eligible_ad": no_fill} if no_fill else {},
                    rejected=int(minute % 3 == 0),
                    not_ready=int(minute == 0),
                )
            )
    payloads = [counts_encoder.encode(r) for r in records]
    payloads += [*payloads[10:14], b"not a count record"]  # re-sent after a lost acknowledgement
    return [r for r in records if r.start_ms >= START_MS], payloads


def _commit_lag(config: Config) -> float:
    ArchiveLagTracker(config).refresh()
    return sum(
        REGISTRY.get_sample_value(
            "archive_commit_lag_records", {"topic": config.topics.feedback, "partition": str(p)}
        )
        or 0.0
        for p in range(config.topics.partitions)
    )


def _served_rows(tag: str, events: list[FeedbackEvent]) -> list[tuple[Any, ...]]:
    first: dict[str, FeedbackEvent] = {}
    for e in events:
        first.setdefault(e.request_id, e)
    rows = [
        (f"{tag}{e.request_id}", e.campaign_id, e.user_id, datetime.fromtimestamp(e.timestamp_ms / 1000, UTC))
        for e in first.values()
    ]
    # Served ads whose view never came back (the user scrolled past): they lower the fill figure.
    rows += [
        (f"{tag}unviewed-{i}", "camp-000", "user-x", datetime.fromtimestamp(START_MS / 1000 + i, UTC))
        for i in range(UNVIEWED_SERVED)
    ]
    return [(*row, Decimal("0.0000441980"), Decimal("0.001799"), Decimal("0.061411"), 2) for row in rows]


@dataclass
class RequestFacts:
    """The pure-Python model of one request: what the report must count."""

    event: FeedbackEvent
    viewed: int = 0
    clicked: int = 0
    acquired: int = 0
    spend: Decimal = Decimal(0)


def per_request(events: list[FeedbackEvent]) -> list[RequestFacts]:
    facts: dict[str, RequestFacts] = {}
    for e in events:
        f = facts.setdefault(e.request_id, RequestFacts(e))
        f.viewed, f.clicked, f.acquired = (
            max(f.viewed, e.view),
            max(f.clicked, e.click),
            max(f.acquired, e.acquisition),
        )
        f.spend += e.expenditure_amount
    return list(facts.values())


async def _seed_postgres(conn: asyncpg.Connection, tag: str, events: list[FeedbackEvent]) -> list[str]:
    served = _served_rows(tag, events)
    await conn.copy_records_to_table(
        "served_ads",
        schema_name="online_ads",
        records=served,
        columns=[
            "request_id", "campaign_id", "user_id", "served_at", "auction_cpm", "auction_cpc", "auction_cpa",
            "bidders",
        ],
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO online_ads.ads (campaign_id, version, status, action, text, category, keywords,
               target_gender, target_age_start, target_age_end, target_city, target_state, target_country,
               target_income_bucket, target_device, cpc, cpa, cpm, budget, slot_budget, flight_start,
               flight_end)
           VALUES ($1, 1, 'Active', 'New Campaign', 'text', 'cat', 'kw', 'All', 0, 0, 'All', 'All', 'India',
               'All', 'All', 0.001799, 0.061411, 0.0000441980, 500, 1.5, now(), now() + interval '1 day')""",
        f"{tag}camp-000",
    )
    return [str(row[0]) for row in served]


@pytest.fixture(scope="module")
async def reported(spark: Any, feedback_topic: Config) -> AsyncIterator[Reported]:
    config = feedback_topic
    layout = ArchiveLayout(config.archive_dir)
    tag = config.topics.prefix
    events = make_events(N, seed=11, start_ms=START_MS, step_ms=3_000)
    payloads = [encoder.encode(e) for e in events]
    await publish(config, payloads + payloads[100 : 100 + REDELIVERED] + payloads[-REDELIVERED:])
    counts, count_payloads = _count_records()
    await ensure_topics(config, [config.topics.request_counts])
    await wait_for_topics(config, [config.topics.request_counts])
    producer = make_producer(config)
    await producer.start()
    try:
        for value in count_payloads:
            await producer.send(config.topics.request_counts, value, key=value[:30])
        await producer.flush()
    finally:
        await producer.stop()
    lag_before = await asyncio.to_thread(_commit_lag, config)  # the archive has not run: all of it
    await asyncio.to_thread(run_writer, spark, config, WriterOptions(until_idle=True))
    lag_after = await asyncio.to_thread(_commit_lag, config)
    # Compact the first hour only: the report must read compacted and uncompacted partitions alike.
    first_hour = partition_start(f"date={events[0].timestamp[:10]}/hour={events[0].timestamp[11:13]}")
    assert first_hour is not None
    compacted = compact(layout, now=first_hour + timedelta(hours=1, minutes=16))
    assert compacted.partitions_compacted == 1 and compacted.partitions_open >= 1

    conn = await asyncpg.connect(config.pg_dsn)
    try:
        served_ids = await _seed_postgres(conn, tag, events)
        await asyncio.to_thread(export_tables, spark, config.pg_dsn, layout)
        since = datetime.fromtimestamp(START_MS / 1000, UTC)
        options = ReportOptions(since=since, out_dir=layout.reports / "test")
        progress = StageProgress(13, stream=io.StringIO())
        result = await asyncio.to_thread(build_report, spark, layout, options, progress)
        assert progress.done == 13, (
            progress.stream.getvalue() if isinstance(progress.stream, io.StringIO) else ""
        )
        yield Reported(config, events, served_ids, result, since, counts, (lag_before, lag_after))
    finally:
        await conn.execute("DELETE FROM online_ads.served_ads WHERE request_id LIKE $1", f"{tag}%")
        await conn.execute("DELETE FROM online_ads.ads WHERE campaign_id LIKE $1", f"{tag}%")
        await conn.close()


def _csv(result: ReportResult, name: str) -> list[dict[str, str]]:
    with (result.out_dir / f"{name}.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _age_bucket(age: int | None) -> str:
    if age is None:
        return "unknown"
    if age < 18:
        return "under 18"
    for low, high in ((18, 24), (25, 34), (35, 44), (45, 54)):
        if low <= age <= high:
            return f"{low}-{high}"
    return "55+"


DIMENSIONS: dict[str, Callable[[FeedbackEvent], str]] = {
    "age_bucket": lambda e: _age_bucket(e.user_age),
    "gender": lambda e: e.user_gender or "unknown",
    "device_type": lambda e: e.user_device_type or "unknown",
    "city": lambda e: e.user_city or "unknown",
}


def _rate(n: int, d: int) -> str:
    return repr(n / d) if d else ""


def test_report_figures_equal_a_python_recomputation(reported: Reported) -> None:
    events = reported.events  # each event_id once: the redelivered copies must not count
    totals = reported.result.figures.totals
    assert (totals.events, totals.duplicates_dropped) == (N, 2 * REDELIVERED)
    assert totals.spend == sum((e.expenditure_amount for e in events), Decimal(0))
    assert totals.spend_micros == sum(e.expenditure_micros for e in events)

    spend: dict[str, Decimal] = defaultdict(Decimal)
    micros: dict[str, int] = defaultdict(int)
    for e in events:
        spend[e.campaign_id] += e.expenditure_amount
        micros[e.campaign_id] += e.expenditure_micros
    requests = per_request(events)
    actions: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in requests:
        a = actions[r.event.campaign_id]
        a[0], a[1], a[2] = a[0] + r.viewed, a[1] + r.clicked, a[2] + r.acquired
    rows = _csv(reported.result, "top_campaigns")
    assert {
        r["campaign_id"]: (Decimal(r["spend"]), int(r["spend_micros"]), int(r["views"]), int(r["clicks"]))
        for r in rows
    } == {c: (spend[c], micros[c], actions[c][0], actions[c][1]) for c in spend}
    assert [Decimal(r["spend"]) for r in rows] == sorted(spend.values(), reverse=True)

    assert sum(r.viewed for r in requests) < sum(e.view for e in events), "flags repeat across events"
    for dimension, key in DIMENSIONS.items():
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        group_spend: dict[str, Decimal] = defaultdict(Decimal)
        for r in requests:
            c = counts[key(r.event)]
            c[0], c[1], c[2] = c[0] + r.viewed, c[1] + r.clicked, c[2] + r.acquired
            group_spend[key(r.event)] += r.spend
        expected = {
            group: (str(v), str(c), str(a), group_spend[group], _rate(c, v), _rate(a, c))
            for group, (v, c, a) in counts.items()
        }
        got = {
            r[dimension]: (
                r["views"],
                r["clicks"],
                r["acquisitions"],
                Decimal(r["spend"]),
                r["ctr"],
                r["conversion_rate"],
            )
            for r in _csv(reported.result, dimension)
        }
        assert got == expected, dimension
    assert (totals.views, totals.clicks, totals.acquisitions) == (
        sum(r.viewed for r in requests),
        sum(r.clicked for r in requests),
        sum(r.acquired for r in requests),
    )

    per_minute: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        per_minute[e.timestamp[:16] + "Z"] += e.expenditure_amount
    over_time = {r["bucket_start"]: Decimal(r["spend"]) for r in _csv(reported.result, "spend_over_time")}
    assert reported.result.figures.time_granularity == "minute"
    assert over_time == dict(per_minute)


def test_archive_commit_lag_is_what_it_has_not_archived_then_zero(reported: Reported) -> None:
    assert reported.lag == (N + 2 * REDELIVERED, 0.0)


def test_fill_rate_is_served_over_requests_from_the_exact_counts(reported: Reported) -> None:
    counts = reported.counts
    served, no_fill = sum(r.served for r in counts), sum(r.no_fill for r in counts)
    totals = reported.result.figures.totals.requests
    assert totals is not None
    assert (totals.served, totals.no_fill, totals.requests) == (served, no_fill, served + no_fill)
    assert (totals.rejected, totals.not_ready) == (sum(r.rejected for r in counts), 3)  # minute 0 of each
    assert (totals.workers, totals.windows) == (3, len(counts))  # re-sends once, the corrupt one and
    # the windows before --since not at all
    (row,) = _csv(reported.result, "fill_rate")
    assert (row["requests"], row["served"], row["no_fill"]) == (
        str(served + no_fill),
        str(served),
        str(no_fill),
    )
    assert row["fill_rate"] == repr(served / (served + no_fill))
    assert _csv(reported.result, "no_fill_reasons") == [
        {
            "reason": "no_eligible_ad",
            "no_fill": str(no_fill),
            "share_of_requests": repr(no_fill / (served + no_fill)),
        }
    ]
    corrupt = [p for p in ArchiveLayout(reported.config.archive_dir).request_counts.rglob("part-*.json")]
    assert any(b'"raw":"not a count record"' in p.read_bytes() for p in corrupt), "kept, not dropped"


def test_view_rate_uses_the_exported_served_ads(reported: Reported, spark: Any) -> None:
    from pyspark.sql import functions as F

    layout = ArchiveLayout(reported.config.archive_dir)
    served = spark.read.parquet(str(layout.warehouse / "served_ads"))
    mine = served.where(F.col("request_id").startswith(reported.config.topics.prefix))
    assert mine.count() == len(reported.served_request_ids)
    assert {f.name: f.dataType.simpleString() for f in served.schema.fields}[
        "auction_cpm"
    ] == "decimal(24,10)"
    assert any(p.name.startswith("date=2025-10-10") for p in (layout.warehouse / "served_ads").iterdir())
    ads = spark.read.parquet(str(layout.warehouse / "ads"))
    assert ads.where(F.col("campaign_id") == f"{reported.config.topics.prefix}camp-000").count() == 1
    # Other test sessions may have served ads too: the expected figure counts what the export holds.
    in_window = served.where(F.col("served_at") >= F.timestamp_millis(F.lit(START_MS))).count()
    views = len({e.request_id for e in reported.events})  # every request was viewed
    (fill,) = _csv(reported.result, "fill_rate")
    assert (fill["served_ads_exported"], fill["views"]) == (str(in_window), str(views))
    assert fill["view_rate"] == repr(views / in_window)


def test_html_report_is_self_contained_and_renders_in_chromium(reported: Reported, tmp_path: Path) -> None:
    html = reported.result.html_path.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(reported.result.charts) == 6
    assert 'src="http' not in html and 'href="http' not in html and "<link" not in html
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
            reported.result.html_path.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(imread(shot))[:, :, :3]
    assert pixels.shape[:2] == (2000, 1200)
    colors = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    non_white = float(np.mean(np.any(pixels < 0.95, axis=2)))
    assert len(colors) > 100 and non_white > 0.05, (len(colors), non_white)
