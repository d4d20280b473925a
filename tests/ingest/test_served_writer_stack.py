"""Served ads: published in the background by the app, copied into ``online_ads.served_ads`` by the
served-writer with the auction details; replaying the topic inserts nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from adplatform.config import Config
from adplatform.kafka import make_producer
from adplatform.wire import encoder
from adserver.sync.publisher import ServedAdPublisher, ServedItem, served_ad
from adserver.token import TokenSigner
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.targeting import AdRequest
from ingest.served_writer import run_served_writer
from tests.adserver.serving import campaign_row, eventually, ingest, serve, serving, state_of

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


async def test_served_ads_reach_postgres_once(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await ingest(topics, [campaign_row("w", cpc="0.0020", cpa="0.0400"), campaign_row("r")], tmp_path)
    served: list[str] = []
    async with serving(topics) as (app, client):
        for n in range(60):
            response = await serve(
                client, f"user-{n}", device_type="iPhone", city="Pune", age=str(20 + n % 30)
            )
            assert response.status_code == 200
            served.append(response.json()["request_id"])
        publisher = state_of(app).publisher

        async def delivered() -> bool:
            return publisher.sent == len(served)

        await eventually(delivered, timeout_s=10, poll_s=0.05)
        assert publisher.dropped == publisher.failed == 0
        assert len(publisher) == 0  # the queued gauge: nothing left waiting once Kafka acknowledged all
    # A record that is not a served ad is skipped (counted), not fatal.
    producer = make_producer(topics)
    await producer.start()
    await producer.send_and_wait(topics.topics.served_ads, b"not json")
    await producer.stop()

    stats = await run_served_writer(topics, until_idle=True, timeout_s=60)
    # 60 ads in records of up to 64 (as many records as the publisher's flushes), and the bad record.
    assert (stats.inserted, stats.skipped) == (60, 1) and 2 <= stats.messages <= 61
    rows = {r["request_id"]: r for r in await pg.fetch("SELECT * FROM online_ads.served_ads")}
    assert set(served) <= set(rows)  # (other tests' rows may share the table)
    signer = TokenSigner(topics.token_keys, ttl_s=topics.token_ttl_s)
    for n, request_id in enumerate(served):
        row, token = (
            rows[request_id],
            signer.verify(request_id, now_ms=int(datetime.now(UTC).timestamp() * 1000)),
        )
        assert (row["campaign_id"], row["user_id"], row["bidders"]) == ("w", f"user-{n}", 2)
        assert row["auction_cpm"] == cpm_units_to_decimal(token.clearing_cpm_units)
        assert row["auction_cpc"] == micros_to_decimal(token.auction_cpc_micros) < Decimal("0.002")
        assert row["auction_cpa"] == micros_to_decimal(token.auction_cpa_micros) < Decimal("0.04")
        assert (row["device_type"], row["city"], row["state"], row["country"]) == (
            "iPhone", "Pune", "Maharashtra", "India"
        )  # fmt: skip
        assert row["age"] == 20 + n % 30 and row["gender"] is None
        assert abs(row["served_at"].timestamp() * 1000 - token.issued_ms) < 1

    # Replaying the whole topic (a new group) inserts nothing twice: exactly-once rows.
    replay = replace(topics, group_prefix=f"replay-{uuid.uuid4().hex[:8]}-")
    again = await run_served_writer(replay, until_idle=True, timeout_s=60)
    assert (again.messages, again.inserted) == (stats.messages, 0)
    count = await pg.fetchval("SELECT count(*) FROM online_ads.served_ads WHERE request_id = ANY($1)", served)
    assert count == len(served)


async def test_ads_go_in_records_of_64_and_a_bad_line_costs_only_itself(
    topics: Config, pg: asyncpg.Pool
) -> None:
    """130 ads queued before the publisher connects go as records of 64, 64 and 2 (JSON Lines); the
    served-writer inserts every ad of them, and of a record with a bad line all but that line."""
    publisher = ServedAdPublisher(topics, linger_s=0)
    items = [_item(n) for n in range(130)]
    for item in items:
        publisher.offer(item)
    task = asyncio.create_task(publisher.run())

    async def delivered() -> bool:
        return publisher.sent == 130

    await eventually(delivered, timeout_s=20, poll_s=0.05)
    publisher.stop()
    await task
    values = await _values(topics, topics.topics.served_ads, 3)
    assert sorted(v.count(b"\n") for v in values) == [2, 64, 64]
    mixed = encoder.encode_lines([served_ad(_item(200))]) + b"not json\n"
    mixed += encoder.encode_lines([served_ad(_item(201))])
    producer = make_producer(topics)
    await producer.start()
    await producer.send_and_wait(topics.topics.served_ads, mixed)
    await producer.stop()

    stats = await run_served_writer(topics, until_idle=True, timeout_s=60)
    assert (stats.messages, stats.inserted, stats.skipped) == (4, 132, 1)
    ids = [item.request_id for item in items] + ["pack-200", "pack-201"]
    count = await pg.fetchval("SELECT count(*) FROM online_ads.served_ads WHERE request_id = ANY($1)", ids)
    assert count == 132


def _item(n: int) -> ServedItem:
    return ServedItem(
        request_id=f"pack-{n}",
        campaign_id="pack-campaign",
        served_at_ms=1_760_000_000_000 + n,
        clearing_cpm_units=1_234_567,
        auction_cpc_micros=660,
        auction_cpa_micros=52_900,
        bidders=2,
        request=AdRequest(user_id=f"user-{n}", city="Pune", age=30),
    )


async def _values(config: Config, topic: str, count: int) -> list[bytes]:
    """The first ``count`` record values of ``topic`` (all partitions, from the start)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=config.kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(20):
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=500)
                values += [r.value for part in batch.values() for r in part if r.value is not None]
        return values
    finally:
        await consumer.stop()
