"""Served ads: published in the background by the app, copied into ``online_ads.served_ads`` by the
served-writer with the auction details; replaying the topic inserts nothing twice."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.kafka import make_producer
from adserver.token import TokenSigner
from index.money import cpm_units_to_decimal, micros_to_decimal
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
    # A record that is not a served ad is skipped (counted), not fatal.
    producer = make_producer(topics)
    await producer.start()
    await producer.send_and_wait(topics.topics.served_ads, b"not json")
    await producer.stop()

    stats = await run_served_writer(topics, until_idle=True, timeout_s=60)
    assert (stats.messages, stats.inserted, stats.skipped) == (61, 60, 1)
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
    assert (again.messages, again.inserted) == (61, 0)
    count = await pg.fetchval("SELECT count(*) FROM online_ads.served_ads WHERE request_id = ANY($1)", served)
    assert count == len(served)
