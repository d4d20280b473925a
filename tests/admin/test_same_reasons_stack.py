"""The API and the CSV path reject the same bad rows with the same reasons: each row below goes through
the CSV producer and the real Ad Manager (to the DLQ) and through ``POST /v1/campaigns`` (422)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.dlq import read_dlq
from ingest.generator import write_campaigns_csv
from ingest.manager import run_manager
from ingest.producer import produce_file
from tests.admin.helpers import admin_client, keys
from tests.adserver.serving import campaign_row

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

BAD: dict[str, dict[str, str]] = {
    "b-cpc": {"cpc": "abc"},
    "b-neg": {"cpa": "-1"},
    "b-budget": {"budget": "0"},
    "b-fine": {"budget": "1.0000001"},
    "b-gender": {"target_gender": "X"},
    "b-device": {"target_device": "Nokia"},
    "b-income": {"target_income_bucket": "Z"},
    "b-age": {"target_age_range": "{'start': '50', 'end': '20'}"},
    "b-date": {"date_range": "{'start': '2026-02-30', 'end': '2026-03-01'}"},
    "b-time": {"time_range": "{'start': '25:00:00', 'end': '1:00:00'}"},
    "b-range": {"date_range": "[1, 2]"},
    "b-city": {"target_city": ""},
    "b-long": {"text": "x" * 1001},
    "b-two": {"cpc": "abc", "target_device": "Nokia"},  # the manager names the first, the API both
}


async def test_api_and_csv_give_the_same_reasons(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    rows = [{**campaign_row(cid), **damage} for cid, damage in BAD.items()]
    rows.append({**campaign_row("b-id"), "campaign_id": "bad id!"})
    path = tmp_path / "bad.csv"
    write_campaigns_csv(path, rows)
    summary = await produce_file(topics, path)
    assert summary.published == len(rows)
    await run_manager(topics, until_idle=True, idle_timeout_s=60)
    dlq = {(e.key or b"").decode(): e.reason for e in await read_dlq(topics)}
    assert len(dlq) == len(rows)
    auth = await keys(pg)
    async with admin_client(topics) as client:
        for row in rows:
            api_body = {k: v for k, v in row.items() if k != "action"}
            answer = await client.post("/v1/campaigns", json=api_body, headers=auth["write"])
            assert answer.status_code == 422, answer.text
            errors = answer.json()["errors"]
            manager_reason = dlq[row["campaign_id"]]
            # The manager stops at the first failing check: the API's first reason is that one.
            assert next(iter(errors.values())) == manager_reason, (row["campaign_id"], errors)
            if row["campaign_id"] == "b-two":
                assert set(errors) == {"cpc", "target_device"}
            else:
                assert len(errors) == 1
