"""The manager behind a TCP proxy to PostgreSQL: a cut and a blackhole mid-stream, then healing.

Timeouts fire (nothing hangs), batches are retried, and the final table equals the reference fold.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from ingest.csvfile import read_campaign_csv
from ingest.generator import generate_campaigns, write_campaigns_csv
from ingest.instruction import enrich, instruction_from_row
from ingest.manager import open_manager
from ingest.producer import produce_file
from loadtest.faultproxy import FaultProxy

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


async def test_manager_survives_a_cut_and_a_blackhole_to_postgres(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "c.csv"
    write_campaigns_csv(path, generate_campaigns(3000, 21, datetime.now(UTC)))
    expected: dict[str, str] = {}
    for item in read_campaign_csv(path):
        assert isinstance(item, tuple)
        c = enrich(instruction_from_row(item[1]), version=0, now_s=0)
        expected[c.campaign_id] = c.status
    target = urlsplit(topics.pg_dsn)
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        config = replace(topics, pg_dsn=_via(topics.pg_dsn, proxy.port), pg_command_timeout_s=2)
        async with open_manager(config, max_batch=200) as manager:
            running = asyncio.ensure_future(manager.run())
            await produce_file(topics, path)
            while manager.stats.messages < 600:  # noqa: ASYNC110  # polling the manager's progress
                await asyncio.sleep(0.01)
            proxy.cut()
            await asyncio.sleep(1.5)
            proxy.blackhole()
            await asyncio.sleep(3)  # longer than the command timeout: a hang would stop progress for good
            proxy.restore()
            for _ in range(600):
                if manager.stats.messages >= 3000:
                    break
                await asyncio.sleep(0.05)
            manager.stop()
            stats = await asyncio.wait_for(running, 60)
    assert stats.messages == 3000
    assert stats.retries >= 1, "the fault never reached the manager"
    table = {
        r["campaign_id"]: r["status"]
        for r in await pg.fetch("SELECT campaign_id, status FROM online_ads.ads")
    }
    assert table == expected
