"""Producer → Ad Manager → PostgreSQL, Redis, ad-changes and the DLQ, on the real stack."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import orjson
import pytest
import redis.asyncio as aioredis

from adplatform import names
from adplatform.config import Config
from adplatform.kafka import ensure_topics, make_producer, read_to_end, wait_for_topics
from index.campaign import Campaign
from ingest.csvfile import read_campaign_csv
from ingest.dlq import read_dlq
from ingest.generator import generate_campaigns, write_campaigns_csv
from ingest.instruction import enrich, instruction_from_row
from ingest.manager import open_manager, run_manager
from ingest.producer import produce_file
from tests.fresh import fresh_config

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

NOW = datetime.now(UTC)
COMPARED = (
    "status", "action", "text", "target_gender", "target_age_start", "target_age_end", "target_city",
    "target_state", "target_country", "target_income_bucket", "target_device", "cpc", "cpa", "cpm",
    "budget", "flight_start", "flight_end",
)  # fmt: skip


def _reference_fold(path: Path) -> dict[str, Campaign]:
    """Pure reference: the last instruction per campaign, enriched."""
    latest: dict[str, Campaign] = {}
    for item in read_campaign_csv(path):
        assert not isinstance(item, Exception), item
        _, row = item
        campaign = enrich(instruction_from_row(row), version=0, now_s=int(NOW.timestamp()))
        latest[campaign.campaign_id] = campaign
    return latest


async def _table(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM online_ads.ads")
    return {r["campaign_id"]: {k: v for k, v in r.items() if k != "updated_at"} for r in rows}


async def _changes(config: Config) -> dict[str, bytes]:
    """ad-changes as a compacted reader sees it: the last value per key."""
    state: dict[str, bytes] = {}
    for record in await read_to_end(config.kafka_bootstrap, config.topics.ad_changes):
        assert record.key is not None and record.value is not None
        state[record.key.decode()] = record.value
    return state


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "campaigns.csv"
    write_campaigns_csv(path, generate_campaigns(5000, 7, NOW))
    return path


async def test_generated_file_lands_equal_to_reference_fold(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, campaign_file: Path
) -> None:
    summary = await produce_file(topics, campaign_file)
    assert summary.published == 5000 and summary.skipped == 0
    stats = await run_manager(topics, until_idle=True, idle_timeout_s=120)
    assert stats.messages == 5000 and stats.rejected == 0

    reference = _reference_fold(campaign_file)
    table = await _table(pg)
    assert set(table) == set(reference)
    statuses = [r["status"] for r in table.values()]
    assert statuses.count("Active") == sum(c.active for c in reference.values())
    assert statuses.count("Inactive") == sum(not c.active for c in reference.values())
    for cid, ref in reference.items():
        row = table[cid]
        assert row["status"] == ref.status and row["action"] == ref.action
        assert row["budget"] * 1_000_000 == ref.budget_micros
        assert row["cpc"] * 1_000_000 == ref.cpc_micros and row["cpa"] * 1_000_000 == ref.cpa_micros
        assert int(row["flight_start"].timestamp()) == ref.flight_start_s
        assert int(row["flight_end"].timestamp()) == ref.flight_end_s
        assert row["remaining_budget"] == row["budget"]

    changes = await _changes(topics)
    assert set(changes) == set(reference)
    decoded = {k: msgspec.json.decode(v, type=Campaign) for k, v in changes.items()}
    assert all(decoded[cid].version == table[cid]["version"] for cid in reference)

    some = next(c for c in reference.values() if c.active)
    budget = await redis_client.hgetall(names.budget_key(some.campaign_id))
    assert int(budget[b"budget"]) == some.budget_micros and int(budget[b"spent"]) == 0


async def test_sigkill_mid_stream_then_restart_reaches_the_same_state(
    topics: Config, pg: asyncpg.Pool, campaign_file: Path
) -> None:
    # The interrupted run, in a subprocess we can SIGKILL. Small batches so the kill lands mid-stream.
    await produce_file(topics, campaign_file)
    env = dict(os.environ, ADP_TOPIC_PREFIX=topics.topics.prefix, ADP_GROUP_PREFIX=topics.group_prefix)
    cmd = [sys.executable, "-m", "adplatform.cli", "manager", "--max-batch", "50"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(600):
            count = await pg.fetchval("SELECT count(*) FROM online_ads.ads")
            if count and count > 200:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the manager never wrote a row")
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    partial = await pg.fetchval("SELECT count(*) FROM online_ads.ads")
    reference_count = len(_reference_fold(campaign_file))
    assert 0 < partial < reference_count, "the kill must land mid-stream for this test to mean anything"
    restarted = await asyncio.create_subprocess_exec(
        *cmd[:-2], "--until-idle", "--timeout", "120", env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await restarted.communicate()
    assert restarted.returncode == 0, stderr[-2000:]
    interrupted_table = await _table(pg)
    interrupted_changes = await _changes(topics)

    # The same file through an uninterrupted manager, on fresh topics: same partitions, same offsets.
    await pg.execute("TRUNCATE online_ads.ads")
    config = fresh_config(topics, kafka=True)
    await ensure_topics(config)
    await wait_for_topics(config, config.topics.all())
    await produce_file(config, campaign_file)
    await run_manager(config, until_idle=True, idle_timeout_s=120)
    clean_table = await _table(pg)
    clean_changes = await _changes(config)

    assert len(clean_table) == reference_count
    assert interrupted_table == clean_table
    # Byte-identical but for updated_at_s, the instruction's Kafka timestamp (two topics, two produce runs).
    strip = msgspec.structs.replace
    assert {
        k: strip(msgspec.json.decode(v, type=Campaign), updated_at_s=0)
        for k, v in interrupted_changes.items()
    } == {k: strip(msgspec.json.decode(v, type=Campaign), updated_at_s=0) for k, v in clean_changes.items()}


BAD_MESSAGES: dict[str, bytes] = {
    "missing field": orjson.dumps({"campaign_id": "bad-missing", "action": "New Campaign"}),
    "not JSON": b"{this is not json",
    "binary garbage": bytes(range(256)) * 3,
}


def _good_row(cid: str, **changes: str) -> dict[str, str]:
    row = dict(generate_campaigns(1, 99, NOW)[0])
    row.update({"campaign_id": cid, "action": "New Campaign"})
    row.update(changes)
    return row


async def test_bad_messages_go_to_the_dlq_with_reasons_and_good_ones_land(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    day = NOW.date().isoformat()
    bad_rows = {
        "unparsable range": _good_row("bad-range", target_age_range="{'start': 'twenty'"),
        "negative budget": _good_row("bad-negative", budget="-5"),
        "zero budget": _good_row("bad-zero", budget="0"),
        "end before start": _good_row(
            "bad-flight",
            date_range=f"{{'start': '{day}', 'end': '{day}'}}",
            time_range="{'start': '10:00:00', 'end': '9:00:00'}",
        ),
        "unknown action": _good_row("bad-action", action="Pause Campaign"),
    }
    messages = dict(BAD_MESSAGES)
    messages.update({kind: orjson.dumps(row) for kind, row in bad_rows.items()})
    good = [_good_row(f"good-{i}") for i in range(20)]
    producer = make_producer(topics)
    await producer.start()
    try:
        for i, row in enumerate(good):
            await producer.send(
                topics.topics.instructions, orjson.dumps(row), key=row["campaign_id"].encode()
            )
            if i % 3 == 0:  # interleave the bad ones with the good ones
                kind = list(messages)[i // 3 % len(messages)]
                await producer.send(topics.topics.instructions, messages[kind], key=kind.encode())
        for kind, value in messages.items():
            await producer.send(topics.topics.instructions, value, key=kind.encode())
        await producer.flush()
    finally:
        await producer.stop()

    stats = await run_manager(topics, until_idle=True, idle_timeout_s=60)
    landed = {r["campaign_id"] for r in await pg.fetch("SELECT campaign_id FROM online_ads.ads")}
    assert landed == {row["campaign_id"] for row in good}
    dlq = await read_dlq(topics)
    assert len(dlq) == stats.rejected
    by_kind: dict[str, set[str]] = {}
    for entry in dlq:
        assert entry.key is not None
        by_kind.setdefault(entry.key.decode(), set()).add(entry.reason)
        assert entry.value == messages[entry.key.decode()]  # the raw message is kept as it was
    assert set(by_kind) == set(messages)
    expected_words = {
        "missing field": "missing field",
        "not JSON": "not JSON",
        "binary garbage": "not",
        "unparsable range": "target_age_range",
        "negative budget": "budget",
        "zero budget": "budget",
        "end before start": "flight",
        "unknown action": "unknown action",
    }
    for kind, word in expected_words.items():
        (reason,) = by_kind[kind]
        assert word.lower() in reason.lower(), (kind, reason)


async def test_two_managers_split_the_partitions_and_reach_the_same_state(
    topics: Config, pg: asyncpg.Pool, campaign_file: Path
) -> None:
    async with open_manager(topics) as first, open_manager(topics) as second:
        runs = [asyncio.ensure_future(m.run()) for m in (first, second)]
        for _ in range(600):  # until the rebalance settles: both own partitions, none owned twice
            a, b = set(first.consumer.assignment()), set(second.consumer.assignment())
            if a and b and not a & b and len(a | b) == topics.topics.partitions:
                break
            await asyncio.sleep(0.05)
        split = (set(first.consumer.assignment()), set(second.consumer.assignment()))
        assert split[0] and split[1] and not split[0] & split[1]
        await produce_file(topics, campaign_file)
        expected = len(_reference_fold(campaign_file))
        for _ in range(1200):
            if sum(m.stats.messages for m in (first, second)) >= 5000:
                break
            await asyncio.sleep(0.05)
        first.stop()
        second.stop()
        stats = await asyncio.wait_for(asyncio.gather(*runs), 60)
    assert await pg.fetchval("SELECT count(*) FROM online_ads.ads") == expected
    assert sum(s.messages for s in stats) >= 5000
    assert all(s.messages > 0 for s in stats)
    reference = _reference_fold(campaign_file)
    table = await _table(pg)
    assert {cid: row["status"] for cid, row in table.items()} == {c: r.status for c, r in reference.items()}


async def test_a_record_postgres_refuses_is_dead_lettered_and_the_rest_lands(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # Valid for the manager, refused by the database: stands for any data error the rules did not foresee.
    await pg.execute("ALTER TABLE online_ads.ads ADD CONSTRAINT test_poison CHECK (category <> 'poison')")
    try:
        good = [_good_row(f"ok-{i}") for i in range(30)]
        poisoned = _good_row("poisoned", category="poison")
        producer = make_producer(topics)
        await producer.start()
        try:
            for row in [*good[:15], poisoned, *good[15:]]:
                await producer.send(
                    topics.topics.instructions, orjson.dumps(row), key=row["campaign_id"].encode()
                )
            await producer.flush()
        finally:
            await producer.stop()
        stats = await run_manager(topics, until_idle=True, idle_timeout_s=60)
    finally:
        await pg.execute("ALTER TABLE online_ads.ads DROP CONSTRAINT test_poison")
    landed = {r["campaign_id"] for r in await pg.fetch("SELECT campaign_id FROM online_ads.ads")}
    assert landed == {row["campaign_id"] for row in good}
    (entry,) = await read_dlq(topics)
    assert entry.key == b"poisoned" and entry.reason.startswith("rejected by storage: CheckViolationError")
    assert stats.rejected == 1
