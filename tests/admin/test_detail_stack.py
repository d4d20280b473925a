"""``GET /v1/campaigns/{id}`` against real traffic: serves through the ad server, feedback charged in
Redis, the served-writer and the ledger book them; the detail shows served, charged clicks and
acquisitions, CTR, and the same spend in Redis and in the ledger."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from budget.ledger import run_ledger
from ingest.manager import run_manager
from ingest.served_writer import run_served_writer
from tests.admin.helpers import admin_client, body, keys
from tests.adserver.serving import serve, serving

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


async def test_detail_counts_real_delivery(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    auth = await keys(pg)
    async with admin_client(topics) as client:
        created = await client.post("/v1/campaigns", json=body("d1", cpc="0.0100", cpa="0.5000"),
                                    headers=auth["write"])  # fmt: skip
        assert created.status_code == 202
        await run_manager(topics, until_idle=True, idle_timeout_s=60)
        async with serving(topics) as (_, adserver):
            tokens = []
            for user in ("u1", "u2", "u3", "u4"):
                answer = await serve(adserver, user, device_type="iPhone")
                assert answer.status_code == 200 and answer.json()["campaign_id"] == "d1"
                tokens.append(answer.json()["request_id"])
            # One feedback is one event, charged for its furthest action: a click, an acquisition, a view.
            for token, feedback in zip(tokens, [
                {"view": 1, "click": 1, "acquisition": 0}, {"view": 1, "click": 1, "acquisition": 1},
                {"view": 1, "click": 0, "acquisition": 0},
            ], strict=False):  # fmt: skip
                assert (await adserver.post(f"/ad/{token}/feedback", json=feedback)).status_code == 200
        await run_served_writer(topics, until_idle=True, timeout_s=60)
        await run_ledger(topics, until_idle=True, timeout_s=60)
        detail = (await client.get("/v1/campaigns/d1", headers=auth["read"])).json()
    for period in ("flight", "today"):
        counts = detail["delivery"][period]
        assert counts == {"served": 4, "views": None, "clicks": 1, "acquisitions": 1, "ctr": 0.5}, counts
    money = detail["money"]
    assert money["spent"] == money["spent_booked"] != "0.000000"
    assert money["remaining"] != money["budget"] and money["slot_budget"] is not None
    assert detail["pacing"] in ("ahead", "on pace", "behind", "blocked")
    assert detail["last_change"]["author"] == "write-user" and detail["last_change"]["pending"] is False
