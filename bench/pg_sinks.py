"""PostgreSQL write rate of the spend ledger and the served-writer, beside a plain COPY of the same rows.

    python -m bench.pg_sinks [--events 100000] [--rounds 3] [--campaigns 1000] [--served-max-batch 5000]

Pre-loads, for each round, ``--events`` charged feedback events (clicks) and as many served ads into topics
of a bench-only prefix (4 partitions, the default), then runs the real ``SpendLedger`` and ``ServedWriter``
in this process, one after the other, until each has drained its round's topic (their production
settings: batching fetches of 250 ms / 256 KiB, batches of up to 5,000 rows, one transaction per
batch; served ads go as the publisher writes them, 64 a record). Each sink is timed from the end of its
first batch to the end of its last (the group join and the final idle check are not counted), with:
rows/s, transactions/s (one per batch) and statements/s (per batch: the ledger 4, the served-writer 3,
besides BEGIN/COMMIT), and CPU per 1,000 rows of this Python process and of the PostgreSQL backends of the
bench's database (``/proc``; the server's checkpointer, background writer and WAL writer, shared with
whatever else runs, apart). A sink that has a backlog is
measured: its batches are large (thousands of rows); at a live rate they are smaller and each row carries
more of a transaction (``--served-max-batch`` shows how much).

The reference, in the same round, back to back with the sink (before it in odd rounds): the same rows, in
batches of the size the sink reached, each batch one transaction of ``copy_records_to_table`` into a
scratch table ``LIKE`` the sink's (same keys and indexes, grown round by round as the sink's), from this
process, no Kafka: what any batched writer of these rows must at least spend. The ratio sink/reference
(median over the rounds) and the CPU per 1,000 rows are the figures to keep: the machine is shared.
Works in a database, Redis database and topics of its own (``sandbox_environment``), removed at the end;
``online_ads.ads`` holds ``--campaigns`` campaigns, so the ledger's per-campaign ``spent`` update finds them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError

from adplatform.cli.common import script_main
from adplatform.config import Config, load_config
from adplatform.consumer import BATCHING_FETCH, make_consumer
from adplatform.kafka import delete_topics, ensure_topics, make_producer, wait_for_topics
from adplatform.names import GROUP_SERVED_WRITER
from adplatform.postgres import create_pool, quote_ident
from adplatform.sandbox import sandbox_environment
from adplatform.wire import SERVED_ADS_PER_RECORD, ServedAd, encode_served, encoder
from bench.debit_redis import bench_campaign
from bench.http_stack import save_results
from budget.ledger import open_ledger
from index.money import micros_to_decimal
from ingest.ads_postgres import AdsSink
from ingest.served_postgres import COLUMNS as SERVED_COLUMNS
from ingest.served_postgres import ServedAdsSink, served_record
from ingest.served_writer import ServedWriter, records_per_poll
from tests.archive.events import make_event

_TICKS_S = os.sysconf("SC_CLK_TCK")
#: The server's background processes counted beside the backends (their work is shared by every database).
_WRITERS = frozenset({"checkpointer", "background writer", "walwriter"})
LEDGER_COLUMNS = ("event_id", "campaign_id", "amount", "occurred_at")


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_S  # utime, stime (fields 14, 15)


@dataclass(frozen=True)
class PgProcesses:
    """The PostgreSQL processes whose CPU is counted: the bench database's backends, and the server's
    background processes (shared with whatever else runs)."""

    backends: tuple[int, ...]
    background: tuple[int, ...]

    def cpu_s(self) -> tuple[float, float]:
        return sum(map(_proc_cpu_s, self.backends)), sum(map(_proc_cpu_s, self.background))


async def _pg_processes(conn: asyncpg.Connection) -> PgProcesses:
    rows = await conn.fetch(
        "SELECT pid, datname = current_database() AS ours, backend_type FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid()"
    )
    return PgProcesses(
        backends=tuple(r["pid"] for r in rows if r["ours"]),
        # The long-lived writers only: an autovacuum worker that exits mid-window would read as negative.
        background=tuple(r["pid"] for r in rows if r["backend_type"] in _WRITERS),
    )


@dataclass(frozen=True)
class Sample:
    """Counters at one moment: rows and batches written, wall, this process's CPU, PostgreSQL's CPU."""

    rows: int
    batches: int
    wall_s: float
    py_cpu_s: float
    pg_cpu_s: float
    pg_background_cpu_s: float

    @classmethod
    def take(cls, progress: tuple[int, int], pg: PgProcesses) -> Sample:
        backends, background = pg.cpu_s()
        return cls(*progress, time.perf_counter(), time.process_time(), backends, background)


@dataclass(frozen=True)
class Window:
    """What a run spent between two samples."""

    rows: int
    batches: int
    wall_s: float
    py_cpu_s: float
    pg_cpu_s: float
    pg_background_cpu_s: float

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Window:
        return cls(
            b.rows - a.rows, b.batches - a.batches, b.wall_s - a.wall_s, b.py_cpu_s - a.py_cpu_s,
            b.pg_cpu_s - a.pg_cpu_s, b.pg_background_cpu_s - a.pg_background_cpu_s,
        )  # fmt: skip


async def _timed(
    monitor: asyncpg.Connection, run: Awaitable[object], progress: Callable[[], tuple[int, int]]
) -> Window:
    """Run ``run`` (a sink until drained; ``progress()`` is its rows written and batches so far) and
    measure from the end of its first batch to the end of its last: neither the group join before nor
    the idle check after is counted. Polls every 5 ms."""
    task = asyncio.ensure_future(run)
    while progress()[1] == 0 and not task.done():  # noqa: ASYNC110  # the sinks set no event per batch
        await asyncio.sleep(0.005)
    pg = await _pg_processes(monitor)  # the sink's connection is open now
    first = last = Sample.take(progress(), pg)
    while not task.done():
        await asyncio.sleep(0.005)
        if progress()[1] != last.batches:
            last = Sample.take(progress(), pg)
    await task
    return Window.between(first, last)


def served_ad(i: int, campaigns: int, now_ms: int) -> ServedAd:
    return ServedAd(
        request_id=f"bench-req-{i:09d}", campaign_id=f"camp-{i % campaigns:03d}", user_id=f"user-{i % 5000}",
        served_at_ms=now_ms + i, auction_cpm=Decimal("0.0125"), auction_cpc=Decimal("0.002"),
        auction_cpa=Decimal("0.02"), bidders=3 + i % 7, device_type="Android Mobile", city="Mumbai",
        state="Maharashtra", country="India", age=18 + i % 50, gender="F" if i % 2 else "M",
        income_bucket="Medium",
    )  # fmt: skip


async def seed_campaigns(config: Config, campaigns: int) -> None:
    """The campaigns in ``online_ads.ads``, so the ledger's ``spent`` update finds its rows."""
    pool = await create_pool(config)
    try:
        now_s = time.time()
        await AdsSink(pool).write([bench_campaign(f"camp-{n:03d}", now_s) for n in range(campaigns)])
    finally:
        await pool.close()


async def preload(config: Config, numbers: range, campaigns: int, now_ms: int) -> None:
    """A click and a served ad for each of ``numbers`` in ``config``'s topics (created here)."""
    await ensure_topics(config, [config.topics.feedback, config.topics.served_ads])
    await wait_for_topics(config, [config.topics.feedback, config.topics.served_ads])
    producer = make_producer(config, linger_ms=20)
    await producer.start()
    try:
        for i in numbers:
            event = make_event(i, "click", now_ms, campaigns=campaigns)
            await producer.send(config.topics.feedback, encoder.encode(event))
        # Served ads in records of SERVED_ADS_PER_RECORD, as the ad server's publisher writes them.
        for start in range(numbers.start, numbers.stop, SERVED_ADS_PER_RECORD):
            ads = [
                served_ad(i, campaigns, now_ms)
                for i in range(start, min(start + SERVED_ADS_PER_RECORD, numbers.stop))
            ]
            await producer.send(config.topics.served_ads, encode_served(ads))
        await producer.flush()
    finally:
        await producer.stop()


def ledger_record(i: int, campaigns: int, now_ms: int) -> tuple[object, ...]:
    """The row the ledger books for click ``i`` (as ``SpendLedger.book`` builds it)."""
    event = make_event(i, "click", now_ms, campaigns=campaigns)
    occurred = datetime.fromtimestamp(event.timestamp_ms / 1000, tz=UTC)
    return (event.event_id, event.campaign_id, micros_to_decimal(event.expenditure_micros), occurred)


async def run_ledger(config: Config, monitor: asyncpg.Connection) -> Window:
    async with open_ledger(config) as ledger:
        stats = ledger.stats
        return await _timed(
            monitor, ledger.run(until_idle=True), lambda: (stats.charged_events, stats.batches)
        )


async def run_served_writer(config: Config, monitor: asyncpg.Connection, *, max_batch: int = 5000) -> Window:
    # ``open_served_writer``'s consumer and sink, with a pool of its own the monitor can tell apart.
    consumer = make_consumer(
        config,
        GROUP_SERVED_WRITER,
        config.topics.served_ads,
        max_poll_records=records_per_poll(max_batch),
        **BATCHING_FETCH,
    )
    pool = await create_pool(config)
    try:
        await consumer.start()
        writer = ServedWriter(consumer, ServedAdsSink(pool), max_batch=max_batch)
        stats = writer.stats
        return await _timed(monitor, writer.run(until_idle=True), lambda: (stats.inserted, stats.batches))
    finally:
        await consumer.stop()
        await pool.close()


async def copy_reference(
    config: Config, monitor: asyncpg.Connection, case: Case, records: list[tuple[object, ...]], batch: int
) -> Window:
    """The same rows COPYed into ``bench_scratch``'s copy of the sink's table, ``batch`` rows a
    transaction, from this process: what any batched writer of these rows must at least spend."""
    conn = await asyncpg.connect(config.pg_dsn)
    try:
        pg = await _pg_processes(monitor)
        batches = 0
        first = Sample.take((0, 0), pg)
        for start in range(0, len(records), batch):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    case.table,
                    schema_name="bench_scratch",
                    records=records[start : start + batch],
                    columns=case.columns,
                )
            batches += 1
        last = Sample.take((len(records), batches), pg)
    finally:
        await conn.close()
    return Window.between(first, last)


def _row(case: str, round_no: int, w: Window, statements_per_batch: int) -> dict[str, object]:
    per_k = 1000 / w.rows if w.rows else 0.0
    return {
        "case": case, "round": round_no, "rows": w.rows, "batches": w.batches,
        "rows_per_batch": round(w.rows / max(w.batches, 1)),
        "seconds": round(w.wall_s, 3), "rows_per_s": round(w.rows / w.wall_s) if w.wall_s else None,
        "transactions_per_s": round(w.batches / w.wall_s, 1) if w.wall_s else None,
        "statements_per_s": round(w.batches * statements_per_batch / w.wall_s, 1) if w.wall_s else None,
        "python_cpu_ms_per_1000_rows": round(w.py_cpu_s * per_k * 1000, 2),
        "pg_backend_cpu_ms_per_1000_rows": round(w.pg_cpu_s * per_k * 1000, 2),
        "pg_background_cpu_ms_per_1000_rows": round(w.pg_background_cpu_s * per_k * 1000, 2),
    }  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One sink and its reference: how to run each on a round's topics and rows."""

    name: str
    table: str
    columns: Sequence[str]
    statements_per_batch: int
    sink: Callable[[Config, asyncpg.Connection], Awaitable[Window]]
    record: Callable[[int, int, int], tuple[object, ...]]


def cases(served_max_batch: int) -> tuple[Case, ...]:
    """The two sinks; the served-writer's batch limit may be lowered (the ledger's is fixed at 5,000) to
    see what a transaction costs when batches are small, as at a live rate."""
    return (
        Case("ledger", "spend_events", LEDGER_COLUMNS, 4, run_ledger, ledger_record),
        Case("served-writer", "served_ads", SERVED_COLUMNS, 3,
             functools.partial(run_served_writer, max_batch=served_max_batch),
             lambda i, campaigns, now_ms: served_record(served_ad(i, campaigns, now_ms))),
    )  # fmt: skip


async def run(events: int, campaigns: int, rounds: int, served_max_batch: int) -> list[dict[str, object]]:
    """``rounds`` rounds of each case, sink and reference back to back (the reference first in odd
    rounds, at the batch size the sink reached in the round before), each round on fresh topics."""
    tag = f"bench{uuid.uuid4().hex[:8]}-"
    base = load_config()
    sinks = cases(served_max_batch)
    configs = [base.namespaced(f"{tag}{r}-") for r in range(rounds)]
    now_ms = int(time.time() * 1000)
    monitor = await asyncpg.connect(base.pg_dsn)
    rows: list[dict[str, object]] = []
    try:
        await seed_campaigns(base, campaigns)
        for case in sinks:
            # Constant identifiers (the sinks' tables), never input; the scratch tables grow as the sinks'.
            await monitor.execute("CREATE SCHEMA IF NOT EXISTS bench_scratch")
            await monitor.execute(
                f"CREATE TABLE bench_scratch.{quote_ident(case.table)}"
                f" (LIKE online_ads.{quote_ident(case.table)} INCLUDING ALL)"
            )
        for r, config in enumerate(configs):
            print(f"pg_sinks: round {r + 1}: pre-loading {events:,} clicks and served ads", file=sys.stderr)
            await preload(config, range(r * events, (r + 1) * events), campaigns, now_ms)
        batch = {case.name: 0 for case in sinks}
        for r, config in enumerate(configs):
            for case in sinks:
                numbers = range(r * events, (r + 1) * events)
                records = [case.record(i, campaigns, now_ms) for i in numbers]
                print(f"pg_sinks: round {r + 1}: {case.name}", file=sys.stderr)
                ref_first = r % 2 == 1 and batch[case.name] > 0
                if ref_first:
                    ref = await copy_reference(base, monitor, case, records, batch[case.name])
                sink = await case.sink(config, monitor)
                # Too few events for a second batch: the window is empty, and the reference one batch.
                batch[case.name] = round(sink.rows / sink.batches) if sink.batches else len(records)
                if not ref_first:
                    ref = await copy_reference(base, monitor, case, records, batch[case.name])
                sink_row = _row(case.name, r + 1, sink, case.statements_per_batch)
                if sink.wall_s and ref.wall_s and ref.rows:
                    sink_row["ratio_to_copy"] = round((sink.rows / sink.wall_s) / (ref.rows / ref.wall_s), 2)
                rows += [sink_row, _row(f"reference: COPY of the {case.name}'s rows", r + 1, ref, 1)]
            await _check_written(monitor, (r + 1) * events)
        for case in sinks:  # what a row holds on disk, its indexes included (constant identifiers)
            size = await monitor.fetchval(
                "SELECT pg_total_relation_size($1::text::regclass)", f"online_ads.{case.table}"
            )
            rows.append({"case": f"{case.name}: bytes per row on disk", "round": 0,
                         "table_bytes_per_row": round(size / (rounds * events))})  # fmt: skip
    finally:
        await monitor.close()
        for config in configs:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):  # Kafka gone: the topics stay
                await delete_topics(config, [config.topics.feedback, config.topics.served_ads])
    return rows


async def _check_written(monitor: asyncpg.Connection, expected: int) -> None:
    booked = await monitor.fetchval("SELECT count(*) FROM online_ads.spend_events")
    written = await monitor.fetchval("SELECT count(*) FROM online_ads.served_ads")
    if booked != expected or written != expected:
        raise SystemExit(f"the sinks did not write every row: {booked} booked, {written} served ads")


def summary(rows: list[dict[str, object]]) -> list[str]:
    """Per case: the median over the rounds of rows/s, the ratio and the CPU columns."""
    lines = []
    for name in dict.fromkeys(str(r["case"]) for r in rows if r["round"]):
        mine = [r for r in rows if r["case"] == name]

        def median(key: str, mine: list[dict[str, object]] = mine) -> object:
            values = [v for r in mine if isinstance(v := r.get(key), int | float)]
            return round(statistics.median(values), 2) if values else "-"

        ratio = f", ratio to COPY {median('ratio_to_copy')}" if "ratio_to_copy" in mine[0] else ""
        lines.append(
            f"{name:<40} median of {len(mine)}: {median('rows_per_s')} rows/s, "
            f"{median('transactions_per_s')} tx/s, {median('statements_per_s')} stmt/s; CPU per 1,000 rows: "
            f"python {median('python_cpu_ms_per_1000_rows')} ms, "
            f"postgres {median('pg_backend_cpu_ms_per_1000_rows')} ms{ratio}"
        )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_sinks", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="clicks, and as many served ads, a round")
    parser.add_argument("--campaigns", type=int, default=1000, help="campaigns the events are spread over")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--served-max-batch",
        type=int,
        default=5000,
        help="the served-writer's batch limit (production: 5000)",
    )
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    with sandbox_environment("bench"):  # its own database and Redis database, never the user's
        rows = asyncio.run(run(args.events, args.campaigns, args.rounds, args.served_max_batch))
    print(f"pg_sinks {started:%Y-%m-%d %H:%M} UTC, {args.events:,} rows a round, one process, 4 partitions")
    for r in rows:
        if not r["round"]:
            print(f"{r['case']}: {r['table_bytes_per_row']}")
            continue
        print(
            f"{r['round']} {r['case']:<38} {r['rows_per_s']!s:>7} rows/s {r['transactions_per_s']!s:>6} tx/s "
            f"{r['statements_per_s']!s:>6} stmt/s {r['rows_per_batch']!s:>5} rows/batch; CPU per 1,000 rows: "
            f"python {r['python_cpu_ms_per_1000_rows']} ms, "
            f"postgres {r['pg_backend_cpu_ms_per_1000_rows']} ms "
            f"(+ background {r['pg_background_cpu_ms_per_1000_rows']} ms)"
            + (f"; ratio to COPY {r['ratio_to_copy']}" if "ratio_to_copy" in r else "")
        )
    print("\n".join(summary(rows)))
    save_results("pg-sinks", vars(args), rows, label=args.label)
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
