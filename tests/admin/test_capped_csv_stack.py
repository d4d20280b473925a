"""A campaign created from a CSV row with a frequency cap keeps its cap through the API: ``GET`` shows it, and
a ``PATCH`` or a stop (which merge onto the stored row, since no API write came first) publish it again."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.instruction import CampaignInstruction
from adplatform.kafka import read_to_end
from ingest.generator import write_campaigns_csv
from ingest.manager import run_manager
from ingest.producer import produce_file
from tests.admin.helpers import admin_client, keys
from tests.adserver.serving import campaign_row

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


async def test_patch_and_stop_of_a_csv_capped_campaign_keep_its_cap(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "capped.csv"
    write_campaigns_csv(path, [{**campaign_row("cap1"), "frequency_cap": "3/1h"}, campaign_row("free1")])
    assert (await produce_file(topics, path)).published == 2
    await run_manager(topics, until_idle=True, idle_timeout_s=60)
    assert await pg.fetchval("SELECT frequency_cap FROM online_ads.ads WHERE campaign_id = 'cap1'") == "3/1h"
    auth = await keys(pg)
    async with admin_client(topics) as client:
        shown = (await client.get("/v1/campaigns/cap1", headers=auth["read"])).json()["campaign"]
        assert shown["frequency_cap"] == "3/1h"
        free = (await client.get("/v1/campaigns/free1", headers=auth["read"])).json()["campaign"]
        assert free["frequency_cap"] is None
        listed = (await client.get("/v1/campaigns?q=cap1", headers=auth["read"])).json()["items"]
        assert [c["frequency_cap"] for c in listed] == ["3/1h"]

        patched = await client.patch("/v1/campaigns/cap1", json={"cpc": "0.0030"}, headers=auth["write"])
        assert patched.status_code == 202, patched.text
        untouched = await client.patch("/v1/campaigns/free1", json={"cpc": "0.0030"}, headers=auth["write"])
        assert untouched.status_code == 202, untouched.text
        await run_manager(topics, until_idle=True, idle_timeout_s=60)
        row = await pg.fetchrow("SELECT cpc, frequency_cap FROM online_ads.ads WHERE campaign_id = 'cap1'")
        assert row is not None and str(row["cpc"]) == "0.003000" and row["frequency_cap"] == "3/1h"

        # A CSV update after the API's write: the stored row is the base again, cap included.
        write_campaigns_csv(
            path, [{**campaign_row("cap1", action="Update Campaign"), "frequency_cap": "2/1d"}]
        )
        await produce_file(topics, path)
        await run_manager(topics, until_idle=True, idle_timeout_s=60)
        stopped = await client.post("/v1/campaigns/cap1/stop", headers=auth["write"])
        assert stopped.status_code == 202, stopped.text

    decode = msgspec.json.Decoder(CampaignInstruction).decode
    by_campaign: dict[str, list[tuple[str, str]]] = {}
    for record in await read_to_end(topics.kafka_bootstrap, topics.topics.instructions):
        if dict(record.headers).get("author") is not None:  # the API's writes (one key: one partition)
            instr = decode(record.value)
            by_campaign.setdefault(instr.campaign_id, []).append((instr.action, instr.frequency_cap))
    assert by_campaign == {
        "cap1": [("Update Campaign", "3/1h"), ("Stop Campaign", "2/1d")],
        "free1": [("Update Campaign", "")],
    }
