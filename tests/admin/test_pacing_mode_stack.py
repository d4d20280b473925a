"""``pacing_mode`` end to end on the real stack: the CSV column and the API field, validated by the manager's
rules (422 with its reason), stored in PostgreSQL, kept by an Update without it (CSV or PATCH), and
campaigns stored before the column existed read as asap (migration 0006's default)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from ingest.generator import write_campaigns_csv
from ingest.manager import run_manager
from ingest.producer import produce_file
from tests.admin.helpers import admin_client, keys
from tests.adserver.serving import campaign_row

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


async def _modes(pg: asyncpg.Pool) -> dict[str, str]:
    return {r["campaign_id"]: r["pacing_mode"] for r in await pg.fetch("SELECT * FROM online_ads.ads")}


async def test_pacing_mode_through_csv_and_api(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    default = await pg.fetchval(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema = 'online_ads' AND table_name = 'ads' AND column_name = 'pacing_mode'"
    )
    assert default == "'asap'::text"  # rows from before the migration keep their behaviour
    path = tmp_path / "paced.csv"
    write_campaigns_csv(path, [{**campaign_row("old"), "pacing_mode": "asap"}, campaign_row("new")])
    assert (await produce_file(topics, path)).published == 2
    await run_manager(topics, until_idle=True, idle_timeout_s=60)
    assert await _modes(pg) == {"old": "asap", "new": "even"}
    # A file without the column updates both: each keeps its mode.
    write_campaigns_csv(path, [campaign_row(c, action="Update Campaign") for c in ("old", "new")])
    await produce_file(topics, path)
    await run_manager(topics, until_idle=True, idle_timeout_s=60)
    assert await _modes(pg) == {"old": "asap", "new": "even"}

    auth = await keys(pg)
    async with admin_client(topics) as client:
        shown = (await client.get("/v1/campaigns/old", headers=auth["read"])).json()["campaign"]
        assert shown["pacing_mode"] == "asap"
        body = {k: v for k, v in campaign_row("api1").items() if k != "action"}
        bad = await client.post("/v1/campaigns", json={**body, "pacing_mode": "fast"}, headers=auth["write"])
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"] == {
            "pacing_mode": "invalid pacing_mode 'fast': expected one of asap, even"
        }
        created = await client.post("/v1/campaigns", json=body, headers=auth["write"])
        assert created.status_code == 202, created.text
        patched = await client.patch("/v1/campaigns/old", json={"cpc": "0.0030"}, headers=auth["write"])
        assert patched.status_code == 202, patched.text
        switched = await client.patch(
            "/v1/campaigns/new", json={"pacing_mode": "asap"}, headers=auth["write"]
        )
        assert switched.status_code == 202, switched.text
        await run_manager(topics, until_idle=True, idle_timeout_s=60)
    assert await _modes(pg) == {"old": "asap", "new": "asap", "api1": "even"}
