"""The warehouse on real Spark and a real Hive metastore in the session's PostgreSQL database.

One module-wide session and warehouse (under the module's tmp dir, its metastore in a schema of its own);
the tests build on each other: a first load, a reload that changes nothing, a late event and a redelivery,
a load stopped between two partition swaps and the load that repairs it. Every state is compared with a
pure-Python recomputation from the events written to the archive, spend to the micro.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import msgspec
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from adplatform.config import Config
from adplatform.kafka import ensure_topics, make_producer, wait_for_topics
from adplatform.postgres import quote_ident
from adplatform.request_counts import RequestCounts, counts_encoder
from adplatform.wire import FeedbackEvent, ServedAd, encoder
from archive.export import export_tables
from archive.layout import ArchiveLayout
from archive.metrics import STAGES, compute_figures
from archive.reader import snapshot
from archive.report import ReportOptions, StageProgress, build_report
from archive.request_counts import counts_files
from archive.session import create_session
from archive.warehouse.catalog import WarehouseConfig, ensure_metastore_schema, hive_conf, location_uri
from archive.warehouse.check import check_books
from archive.warehouse.history import load_history
from archive.warehouse.load import LoadOptions, load_feedback
from archive.warehouse.partition import SimulatedCrash, partition_location
from archive.warehouse.query import format_result, run_query
from archive.warehouse.report import warehouse_figures
from archive.warehouse.tables import FEEDBACK, LOADS, ensure_tables
from budget.ledger import SpendLedger
from index.delivery import expected_spend_micros
from ingest.served_postgres import ServedAdsSink
from tests.archive.conftest import SPARK_MASTER
from tests.archive.events import make_events
from tests.archive.fake_sink import write_batch
from tests.fresh import clean_test_tables, fresh_config

pytestmark = [pytest.mark.spark, pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow]

START_MS = 1_760_054_400_000  # 2025-10-10T00:00Z
DAY1, DAY2, DAY3 = "2025-10-10", "2025-10-11", "2025-10-12"
DAY_COUNTS = "SELECT CAST(`date` AS STRING), count(*) FROM feedback GROUP BY 1"


def _partition(ts_ms: int) -> str:
    t = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def _day(e: FeedbackEvent) -> str:
    return f"{datetime.fromtimestamp(e.timestamp_ms / 1000, UTC):%Y-%m-%d}"


@dataclass
class Archive:
    """The test archive (a fake streaming sink) and every event written to it."""

    layout: ArchiveLayout
    events: list[FeedbackEvent] = field(default_factory=list)
    batches: int = 0

    def write(self, events: list[FeedbackEvent]) -> None:
        by_partition: dict[str, list[bytes]] = defaultdict(list)
        for e in events:
            by_partition[_partition(e.timestamp_ms)].append(encoder.encode(e))
        write_batch(self.layout.feedback, self.batches, sorted(by_partition.items()))
        self.batches += 1
        self.events.extend(events)

    def unique(self) -> dict[str, FeedbackEvent]:
        return {e.event_id: e for e in self.events}


@dataclass(frozen=True)
class Warehouse:
    spark: Any
    config: WarehouseConfig
    archive: Archive


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def wh(base_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    root = tmp_path_factory.mktemp("warehouse")
    config = WarehouseConfig(location_uri(str(root / "wh")), base_config.pg_dsn, f"wh_{uuid.uuid4().hex[:8]}")
    ensure_metastore_schema(config)
    spark = create_session(
        "adplatform-warehouse-tests",
        base_config.stack_dir,
        master=SPARK_MASTER,
        **{**hive_conf(config), "spark.driver.memory": "768m"},
    )
    try:
        ensure_tables(spark, config)
        yield Warehouse(spark, config, Archive(ArchiveLayout(root / "archive")))
    finally:
        spark.stop()
        asyncio.run(_drop_schema(config.pg_dsn, config.metastore_schema))


def expected_campaign_day(events: dict[str, FeedbackEvent]) -> dict[tuple[str, str], tuple[int, ...]]:
    """(day, campaign) → (requests, events, views, clicks, acquisitions, spend_micros), as the aggregate
    defines them: flags per request and day, spend per event."""
    requests: dict[tuple[str, str], list[FeedbackEvent]] = defaultdict(list)
    for e in events.values():
        requests[(_day(e), e.request_id)].append(e)
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 6)
    for (day, _), evs in requests.items():
        row = out[(day, evs[0].campaign_id)]
        row[0] += 1
        row[1] += len(evs)
        row[2] += max(e.view for e in evs)
        row[3] += max(e.click for e in evs)
        row[4] += max(e.acquisition for e in evs)
        row[5] += sum(e.expenditure_micros for e in evs)
    return {k: tuple(v) for k, v in out.items()}


def actual_campaign_day(spark: Any) -> dict[tuple[str, str], tuple[int, ...]]:
    rows = spark.sql(
        "SELECT CAST(`date` AS STRING), campaign_id, requests, events, views, clicks, acquisitions, "
        "spend_micros, spend FROM campaign_day WHERE requests > 0"
    ).collect()
    for r in rows:  # the decimal column says the same as the micros
        assert r[8] * 1_000_000 == r[7]
    return {(r[0], r[1]): tuple(int(v) for v in r[2:8]) for r in rows}


def check_tables(w: Warehouse) -> None:
    """feedback holds each archived event once, in its day; campaign_day equals the recomputation; spend
    is the same to the micro in the archive, feedback, campaign_day and demographic_day."""
    unique = w.archive.unique()
    per_day: dict[str, int] = defaultdict(int)
    for e in unique.values():
        per_day[_day(e)] += 1
    spark = w.spark
    rows = spark.sql(
        "SELECT CAST(`date` AS STRING), count(*), count(DISTINCT event_id) FROM feedback GROUP BY 1"
    )
    got = {r[0]: (int(r[1]), int(r[2])) for r in rows.collect()}
    assert got == {d: (n, n) for d, n in per_day.items()}
    assert actual_campaign_day(spark) == expected_campaign_day(unique)
    spend = sum(e.expenditure_micros for e in unique.values())
    assert spark.sql("SELECT sum(expenditure_micros) FROM feedback").first()[0] == spend
    assert spark.sql("SELECT sum(spend_micros) FROM campaign_day").first()[0] == spend
    assert spark.sql("SELECT sum(spend_micros) FROM demographic_day").first()[0] == spend


def locations(w: Warehouse) -> dict[str, str]:
    return {d: partition_location(w.spark, FEEDBACK, d) for d in (DAY1, DAY2, DAY3) if _has(w, d)}


def _has(w: Warehouse, day: str) -> bool:
    return bool(w.spark.sql(f"SHOW PARTITIONS {FEEDBACK} PARTITION (`date` = '{day}')").collect())


def test_first_load_then_reload_changes_nothing(wh: Warehouse) -> None:
    # 400 requests 6 minutes apart: two days; some requests report view, click, acquisition separately.
    wh.archive.write(make_events(400, seed=3, start_ms=START_MS, step_ms=360_000))
    first = load_feedback(wh.spark, wh.archive.layout, wh.config)
    assert first.days == (DAY1, DAY2)
    assert first.events == len(wh.archive.unique())
    check_tables(wh)
    before = locations(wh)
    again = load_feedback(wh.spark, wh.archive.layout, wh.config)
    assert (again.new_files, again.days) == (0, ())
    assert locations(wh) == before
    check_tables(wh)


def test_late_event_and_redelivery_rebuild_their_days_only(wh: Warehouse) -> None:
    before = locations(wh)
    late = make_events(5, seed=4, start_ms=START_MS + 3_600_000, step_ms=1000)  # day 1, arriving now
    redelivered = wh.archive.events[:3]  # same event_ids again, day 1
    day3 = make_events(4, seed=5, start_ms=START_MS + 2 * 86_400_000 + 60_000, step_ms=1000)
    wh.archive.write([*late, *redelivered, *day3])
    summary = load_feedback(wh.spark, wh.archive.layout, wh.config)
    assert summary.days == (DAY1, DAY3)
    after = locations(wh)
    assert after[DAY2] == before[DAY2]  # an untouched day keeps its data and its directory
    assert after[DAY1] != before[DAY1]
    check_tables(wh)
    assert not Path(before[DAY1].removeprefix("file:")).exists()  # the replaced version was deleted


def test_load_stopped_between_swaps_leaves_whole_days_and_the_next_load_repairs(wh: Warehouse) -> None:
    loads_before = wh.spark.table(LOADS).count()
    days_before = {r[0]: int(r[1]) for r in wh.spark.sql(DAY_COUNTS).collect()}
    wh.archive.write(
        [
            *make_events(6, seed=6, start_ms=START_MS + 7_200_000, step_ms=1000),  # day 1
            *make_events(6, seed=7, start_ms=START_MS + 86_400_000 + 7_200_000, step_ms=1000),  # day 2
        ]
    )
    with pytest.raises(SimulatedCrash):
        load_feedback(wh.spark, wh.archive.layout, wh.config, LoadOptions(crash_after_swaps=1))
    # Day 1 swapped, day 2 not: each is whole (old or new), and the load log did not move.
    unique = wh.archive.unique()
    now = {r[0]: int(r[1]) for r in wh.spark.sql(DAY_COUNTS).collect()}
    assert now[DAY1] == sum(1 for e in unique.values() if _day(e) == DAY1)
    assert now[DAY2] == days_before[DAY2]
    assert wh.spark.table(LOADS).count() == loads_before
    repaired = load_feedback(wh.spark, wh.archive.layout, wh.config)
    assert repaired.days == (DAY1, DAY2)
    check_tables(wh)


def test_sql_over_the_catalog(wh: Warehouse) -> None:
    result = run_query(
        wh.spark,
        "SELECT campaign_id, sum(spend_micros) AS spend_micros, sum(clicks) / sum(views) AS ctr "
        "FROM campaign_day GROUP BY campaign_id ORDER BY spend_micros DESC",
        limit=3,
    )
    assert result.columns == ("campaign_id", "spend_micros", "ctr") and len(result.rows) == 3
    totals: dict[str, int] = defaultdict(int)
    for (_, campaign), row in expected_campaign_day(wh.archive.unique()).items():
        totals[campaign] += row[5]
    assert [r[1] for r in result.rows] == sorted(totals.values(), reverse=True)[:3]
    text = format_result(result, "table")
    assert text.splitlines()[0].split() == ["campaign_id", "spend_micros", "ctr"]
    assert text.endswith("(3 rows)\n")


T0_S = 1_760_000_000  # campaign states' updated_at_s


def _state(
    campaign_id: str,
    version: int,
    at_s: int,
    budget_micros: int,
    status: str = "Active",
    flight: tuple[int, int] | None = None,
) -> bytes:
    """An ``ad-changes`` record's value (the fields the history keeps; the rest stay NULL)."""
    state: dict[str, Any] = {
        "campaign_id": campaign_id,
        "version": version,
        "status": status,
        "action": "Stop Campaign" if status == "Inactive" else "Update Campaign",
        "budget_micros": budget_micros,
        "cpc_micros": 1000 * version,
        "updated_at_s": at_s,
        "frequency_cap": {"count": 3, "window_s": 3600},
    }
    if flight is not None:
        state["flight_start_s"], state["flight_end_s"] = flight
    return orjson.dumps(state)


async def _publish_changes(config: Config, values: list[tuple[str, bytes]]) -> None:
    producer = make_producer(config)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(config.topics.ad_changes, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def changes(base_config: Config) -> Config:
    """A fresh ``ad-changes`` topic for the module (deleted with the session's topics)."""
    config = fresh_config(base_config, kafka=True)

    async def create() -> None:
        await ensure_topics(config, [config.topics.ad_changes])
        await wait_for_topics(config, [config.topics.ad_changes])

    asyncio.run(create())
    return config


def _as_of(spark: Any, campaign_id: str, at_s: int) -> tuple[Any, ...]:
    row = spark.sql(
        "SELECT version, budget_micros, status FROM campaign_history WHERE campaign_id = :c "
        "AND valid_from <= timestamp_seconds(:t) AND (valid_to IS NULL OR valid_to > timestamp_seconds(:t))",
        args={"c": campaign_id, "t": at_s},
    ).collect()
    assert len(row) == 1, row
    return tuple(row[0])


def test_campaign_history_answers_as_of_after_update_and_stop(wh: Warehouse, changes: Config) -> None:
    topic = changes.topics.ad_changes
    asyncio.run(
        _publish_changes(
            changes,
            [
                ("A", _state("A", 1, T0_S, 10_000_000)),
                ("B", _state("B", 1, T0_S + 500, 5_000_000)),
                ("A", _state("A", 2, T0_S + 1000, 20_000_000)),
                ("A", _state("A", 3, T0_S + 2000, 20_000_000, "Inactive")),
            ],
        )
    )
    assert load_history(wh.spark, wh.config, changes.kafka_bootstrap, topic, "h1") == 4
    assert _as_of(wh.spark, "A", T0_S + 10) == (1, 10_000_000, "Active")
    assert _as_of(wh.spark, "A", T0_S + 1500) == (2, 20_000_000, "Active")
    assert _as_of(wh.spark, "A", T0_S + 9999) == (3, 20_000_000, "Inactive")
    assert _as_of(wh.spark, "B", T0_S + 9999) == (1, 5_000_000, "Active")
    assert load_history(wh.spark, wh.config, changes.kafka_bootstrap, topic, "h2") == 0  # nothing new
    asyncio.run(_publish_changes(changes, [("B", _state("B", 2, T0_S + 3000, 7_000_000))]))
    assert load_history(wh.spark, wh.config, changes.kafka_bootstrap, topic, "h3") == 1
    assert _as_of(wh.spark, "B", T0_S + 2999)[1] == 5_000_000
    assert _as_of(wh.spark, "B", T0_S + 3000)[1] == 7_000_000
    assert wh.spark.table("campaign_history").count() == 5


def _plan(budget_micros: int, flight: tuple[int, int], day: str) -> int:
    """The dashboard's even line over the day (``index.delivery``), the definition ``plan_micros`` follows."""
    start_s = int(_midnight(day).timestamp())
    return expected_spend_micros(budget_micros, *flight, start_s + 86_400) - expected_spend_micros(
        budget_micros, *flight, start_s
    )


def test_campaign_day_budget_plan_and_pacing_error_are_the_history_as_of_the_days_end(
    wh: Warehouse, changes: Config
) -> None:
    day1_s = START_MS // 1000
    day2_s = day1_s + 86_400
    flight = (day1_s + 43_200, day1_s + 3 * 86_400 - 43_200)  # day 1 12:00 to day 3 12:00: 48 h
    year = (day1_s - 100 * 86_400, day1_s + 265 * 86_400)  # 365 days: budget × seconds overflows a long
    asyncio.run(
        _publish_changes(
            changes,
            [
                ("camp-000", _state("camp-000", 1, T0_S, 50_000_000, flight=flight)),
                ("camp-000", _state("camp-000", 2, day2_s + 3600, 60_000_000, flight=flight)),  # day 2, 01:00
                ("camp-001", _state("camp-001", 1, day2_s + 86_400, 9_000_000)),  # day 3, 00:00 exactly
                ("camp-002", _state("camp-002", 1, T0_S, 10**13, flight=year)),
            ],
        )
    )
    topic = changes.topics.ad_changes
    assert load_history(wh.spark, wh.config, changes.kafka_bootstrap, topic, "h4") == 4
    summary = load_feedback(wh.spark, wh.archive.layout, wh.config)
    assert summary.new_files == 0 and DAY1 in summary.budget_days and DAY2 in summary.budget_days
    rows = wh.spark.sql(
        "SELECT CAST(`date` AS STRING), campaign_id, budget_micros, plan_micros, pacing_error, spend_micros "
        "FROM campaign_day WHERE campaign_id IN ('camp-000', 'camp-001', 'camp-002') "
        "OR budget_micros IS NOT NULL"
    ).collect()
    got = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    # The even plan of the state in force at the day's end: the budget's share of the flight in the day.
    expected = {
        (DAY1, "camp-000"): (50_000_000, 12_500_000),  # 12 h of 48
        (DAY2, "camp-000"): (60_000_000, 30_000_000),  # the new budget, 24 h of 48
        (DAY3, "camp-000"): (60_000_000, 15_000_000),  # 12 h of 48
        (DAY1, "camp-001"): (None, None),
        (DAY2, "camp-001"): (None, None),  # its first state began at the day's end: not in force during it
        (DAY3, "camp-001"): (9_000_000, None),  # no flight: no plan
        **{(d, "camp-002"): (10**13, _plan(10**13, year, d)) for d in (DAY1, DAY2, DAY3)},
    }
    assert {(DAY1, "camp-000"), (DAY2, "camp-000"), (DAY1, "camp-002")} <= set(got)
    assert got == {k: v for k, v in expected.items() if k in got}
    for day, campaign, _, plan, error, spend in rows:
        if plan is None:
            assert error is None
        else:
            assert error == pytest.approx((spend - plan) / plan, rel=1e-12), (day, campaign)
    check_tables(wh)
    assert load_feedback(wh.spark, wh.archive.layout, wh.config).budget_days == ()


def test_warehouse_load_command_under_spark_submit(wh: Warehouse, changes: Config, repo_root: str) -> None:
    """The real entry point: ``adplatform warehouse load`` (spark-submit, its own JVM, the same metastore)."""
    wh.archive.write(make_events(8, seed=8, start_ms=START_MS + 86_400_000 + 10_800_000, step_ms=1000))
    env = {
        **os.environ,
        "ADP_ARCHIVE_DIR": str(wh.archive.layout.root),
        "ADP_WAREHOUSE_DIR": wh.config.location,
        "ADP_WAREHOUSE_METASTORE_SCHEMA": wh.config.metastore_schema,
        "ADP_TOPIC_PREFIX": changes.topics.prefix,
    }
    adplatform = Path(sys.executable).parent / "adplatform"
    done = subprocess.run(
        [str(adplatform), "warehouse", "load"],
        env=env,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"1 new files, days {DAY2}," in done.stdout
    assert "0 new campaign states" in done.stdout  # the history test loaded them all
    for table in (FEEDBACK, "campaign_day", "demographic_day", LOADS):
        wh.spark.catalog.refreshTable(table)
    check_tables(wh)


async def _book(config: Config, events: list[FeedbackEvent]) -> None:
    """Book ``events`` with the spend ledger's own code (``SpendLedger.book``: the transaction it runs
    for a batch consumed from ad-feedback), on the session's database, emptied first."""
    pool = await asyncpg.create_pool(config.pg_dsn, min_size=1, max_size=1)
    try:
        await clean_test_tables(pool)
        ledger = SpendLedger(config, cast(Any, None), pool)  # book() never touches the consumer
        records = [
            ConsumerRecord(
                config.topics.feedback, 0, i, e.timestamp_ms, 0, None, encoder.encode(e), None, 0, 0, []
            )
            for i, e in enumerate(events)
        ]
        await ledger.book(records)
    finally:
        await pool.close()


def test_books_add_up_ledger_feedback_campaign_day(wh: Warehouse, base_config: Config) -> None:
    config = fresh_config(base_config, kafka=False)
    asyncio.run(_book(config, wh.archive.events))  # redelivered events included: the ledger books once
    books = check_books(wh.spark, config.pg_dsn)
    assert books.balanced, books.differences
    spend = sum(e.expenditure_micros for e in wh.archive.unique().values())
    assert books.ledger_micros == books.feedback_micros == books.campaign_day_micros == spend
    # A charge the archive never received: the check names its campaign-day.
    lost = make_events(40, seed=9, start_ms=START_MS + 600_000, step_ms=1000)
    charged = next(e for e in lost if e.expenditure_micros > 0)
    asyncio.run(_book(config, [*wh.archive.events, charged]))
    books = check_books(wh.spark, config.pg_dsn)
    assert [(d.campaign_id, d.day) for d in books.differences] == [(charged.campaign_id, DAY1)]
    assert books.ledger_micros - books.campaign_day_micros == charged.expenditure_micros
    # A charge on a day the warehouse has not loaded: named as not loaded, not a difference.
    later = msgspec.structs.replace(charged, event_id="later-1", timestamp_ms=START_MS + 5 * 86_400_000)
    asyncio.run(_book(config, [*wh.archive.events, later]))
    books = check_books(wh.spark, config.pg_dsn)
    assert books.balanced and books.unloaded_days == ("2025-10-15",), books


def _served(events: list[FeedbackEvent], extra: int, at_ms: int) -> list[ServedAd]:
    """One served ad per request of ``events`` (at its first event), and ``extra`` never viewed."""
    first: dict[str, FeedbackEvent] = {}
    for e in events:
        first.setdefault(e.request_id, e)
    ads = [
        ServedAd(
            request_id=e.request_id,
            campaign_id=e.campaign_id,
            user_id=e.user_id,
            served_at_ms=e.timestamp_ms,
            auction_cpm=e.auction_cpm,
            auction_cpc=e.auction_cpc,
            auction_cpa=e.auction_cpa,
            bidders=2,
        )
        for e in first.values()
    ]
    template = ads[0]
    ads += [
        msgspec.structs.replace(template, request_id=f"unviewed-{at_ms}-{i}", served_at_ms=at_ms + i)
        for i in range(extra)
    ]
    return ads


async def _serve(config: Config, ads: list[ServedAd], *, clean: bool = False) -> None:
    """Write served ads with the served-writer's own sink (one transaction, as for a consumed batch)."""
    pool = await asyncpg.create_pool(config.pg_dsn, min_size=1, max_size=1)
    try:
        if clean:
            await clean_test_tables(pool)
        await ServedAdsSink(pool).write(ads)
    finally:
        await pool.close()


def test_served_ads_days_load_when_postgresql_has_more(wh: Warehouse, base_config: Config) -> None:
    ads = _served(wh.archive.events, 7, START_MS + 86_400_000 + 5_000)  # 7 unviewed on day 2
    asyncio.run(_serve(base_config, ads, clean=True))
    summary = load_feedback(wh.spark, wh.archive.layout, wh.config, pg_dsn=base_config.pg_dsn)
    assert (summary.new_files, summary.served_days) == (0, (DAY1, DAY2, DAY3))
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for ad in ads:
        expected[(f"{datetime.fromtimestamp(ad.served_at_ms / 1000, UTC):%Y-%m-%d}", ad.campaign_id)] += 1
    rows = wh.spark.sql(
        "SELECT CAST(`date` AS STRING), campaign_id, served FROM campaign_day WHERE served > 0"
    )
    assert {(r[0], r[1]): int(r[2]) for r in rows.collect()} == expected
    check_tables(wh)  # the feedback figures did not move
    again = load_feedback(wh.spark, wh.archive.layout, wh.config, pg_dsn=base_config.pg_dsn)
    assert again.served_days == ()
    late = _served(wh.archive.events[:1], 3, START_MS + 2 * 86_400_000 + 9_000)[1:]  # 3 more on day 3
    asyncio.run(_serve(base_config, late))
    assert load_feedback(wh.spark, wh.archive.layout, wh.config, pg_dsn=base_config.pg_dsn).served_days == (
        DAY3,
    )
    total = wh.spark.sql("SELECT sum(served) FROM campaign_day").first()[0]
    assert total == len(ads) + 3 == wh.spark.table("served_ads").count()


def _write_counts(layout: ArchiveLayout) -> None:
    """The ad servers' request counts for the archive: one window per worker and hour of days 1 to 3."""
    lines: dict[str, list[bytes]] = defaultdict(list)
    for hour in range(72):
        for w in range(2):
            start = START_MS + hour * 3_600_000
            counts = RequestCounts(
                record_id=f"w{w}:{hour}",
                worker=f"w{w}",
                seq=hour,
                start_ms=start,
                end_ms=start + 60_000,
                served=30 + (hour * 7 + w) % 11,
                no_fill=(hour + w) % 4,
                no_fill_reasons={"no_eligible_ad": (hour + w) % 4} if (hour + w) % 4 else {},
                rejected=0,
                not_ready=0,
            )
            lines[f"date={datetime.fromtimestamp(start / 1000, UTC):%Y-%m-%d}"].append(
                counts_encoder.encode(counts)
            )
    write_batch(layout.request_counts, 0, sorted(lines.items()))


def _midnight(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def test_report_from_the_warehouse_equals_the_raw_report(wh: Warehouse, base_config: Config) -> None:
    """The same figures from the aggregates as from the raw archive files (and the served ads exported
    from the same PostgreSQL rows), for the whole archive and for one day; only the duplicate count is
    unknown to the warehouse (its load dropped them)."""
    layout = wh.archive.layout
    _write_counts(layout)
    export_tables(wh.spark, base_config.pg_dsn, layout)
    files = list(snapshot(layout).files)
    for since, until in ((None, None), (_midnight(DAY2), _midnight(DAY3))):
        raw = compute_figures(
            wh.spark,
            files,
            layout.warehouse / "served_ads",
            since,
            counts_files=counts_files(layout),
            until=until,
        )
        new = warehouse_figures(wh.spark, since, until, counts_files=counts_files(layout))
        assert raw.totals.served and raw.totals.requests and raw.totals.events
        assert new.totals.duplicates_dropped is None
        assert new.source == "warehouse"
        assert new == replace(raw, totals=replace(raw.totals, duplicates_dropped=None), source="warehouse")
    result = build_report(
        wh.spark,
        layout,
        ReportOptions(since=_midnight(DAY2), until=_midnight(DAY3), out_dir=layout.root / "report"),
        StageProgress(STAGES + 3, io.StringIO()),
        from_warehouse=True,
    )
    assert "from the warehouse" in result.html_path.read_text()
