"""End-to-end ingest: 50,000 generated instructions, producer → Ad Manager → PostgreSQL + ad-changes.

Needs the local stack. The reference, measured in the same run, is the simplest way to store the same
instructions: a plain ``executemany`` upsert loop of the enriched rows into a scratch table (no Kafka,
no Redis, no validation). ``extra_info`` holds instructions/s for both, the ratio, and ``reference_s``
(the reference's time for the whole file, what ``make bench``'s regression check divides by).
``ADP_BENCH_INGEST_COUNT`` sets the number of instructions; ``ADP_BENCH_INGEST_ROUNDS`` the rounds.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, wait_for_topics
from adplatform.sandbox import sandbox_environment
from ingest.ads_postgres import COLUMNS, ad_record
from ingest.generator import generate_campaigns, write_campaigns_csv
from ingest.instruction import enrich, instruction_from_row
from ingest.manager import open_manager

COUNT = int(os.environ.get("ADP_BENCH_INGEST_COUNT", "50000"))
ROUNDS = int(os.environ.get("ADP_BENCH_INGEST_ROUNDS", "3"))


# Identifiers from the constant COLUMNS only; values are $n parameters.
_COLS = ", ".join(COLUMNS)
_PARAMS = ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
REFERENCE_UPSERT = (
    f"INSERT INTO bench_ads ({_COLS}) VALUES ({_PARAMS}) "  # noqa: S608
    f"ON CONFLICT (campaign_id) DO UPDATE SET {_UPDATES}"
)


@pytest.fixture(scope="module", autouse=True)
def own_stores() -> Iterator[None]:
    """The pipeline's manager and the reference write their own database, never the user's."""
    with sandbox_environment("bench"):
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ingest") / "campaigns.csv"
    write_campaigns_csv(path, generate_campaigns(COUNT, 5, datetime.now(UTC)))
    return path


def _fresh_config() -> Config:
    base = load_config()
    tag = f"bench{uuid.uuid4().hex[:8]}-"
    return base.namespaced(tag)


async def _pipeline(path: Path) -> float:
    config = _fresh_config()
    try:
        return await _timed_pipeline(config, path)
    finally:
        await delete_topics(config)  # the run's own topics, prefixed by _fresh_config


async def _timed_pipeline(config: Config, path: Path) -> float:
    await ensure_topics(config)
    await wait_for_topics(config, config.topics.all())
    # The manager is a running service: it consumes while the producer (its own process, as in
    # production) publishes the file.
    env = dict(os.environ, ADP_TOPIC_PREFIX=config.topics.prefix, ADP_GROUP_PREFIX=config.group_prefix)
    async with open_manager(config) as manager:
        running = asyncio.ensure_future(manager.run())
        while not manager.consumer.assignment():  # noqa: ASYNC110  # polling an aiokafka state
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adplatform.cli", "produce", str(path), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await producer.wait() == 0
        while manager.stats.messages < COUNT:  # noqa: ASYNC110  # polling the manager's counter
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        manager.stop()
        stats = await running
    assert stats.messages == COUNT and stats.rejected == 0
    return elapsed


async def _reference(path: Path) -> float:
    from ingest.csvfile import read_campaign_csv

    rows = [item[1] for item in read_campaign_csv(path) if isinstance(item, tuple)]
    records = [ad_record(enrich(instruction_from_row(r), version=i, now_s=0)) for i, r in enumerate(rows)]
    config = load_config()
    conn = await asyncpg.connect(config.pg_dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE bench_ads (LIKE online_ads.ads INCLUDING DEFAULTS EXCLUDING GENERATED)"
        )
        await conn.execute("ALTER TABLE bench_ads ADD PRIMARY KEY (campaign_id)")
        sql = REFERENCE_UPSERT
        started = time.perf_counter()
        await conn.executemany(sql, records)
        return time.perf_counter() - started
    finally:
        await conn.close()


def test_ingest_end_to_end(benchmark: BenchmarkFixture, corpus: Path) -> None:
    reference_s = asyncio.run(_reference(corpus))
    timings: list[float] = []
    # pytest-benchmark leaves `pedantic` unannotated.
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: timings.append(asyncio.run(_pipeline(corpus))), rounds=ROUNDS, iterations=1
    )
    pipeline_s = min(timings)
    benchmark.extra_info.update(
        instructions=COUNT,
        pipeline_per_s=round(COUNT / pipeline_s),
        reference_executemany_per_s=round(COUNT / reference_s),
        ratio_to_reference=round(reference_s / pipeline_s, 3),
        reference_s=reference_s,
    )
