"""Degradation under outages of one client's connection (through a proxy; the shared stack stays up):
the blocked-set listener reconnects and reloads, profiles keep the last table, the served-writer retries
without losing a row."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.kafka import make_producer
from adplatform.wire import ServedAd, encoder
from adserver.sync.blocked import BlockedListener
from adserver.sync.profiles import ProfileLoader, ProfileTable
from ingest.generator import generate_users
from ingest.served_writer import run_served_writer
from ingest.users_postgres import write_users
from loadtest.faultproxy import FaultProxy
from tests.adserver.serving import eventually
from tests.notices import announce, set_blocked


def via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{port}"))


def target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@pytest.mark.redis
@pytest.mark.single_node(
    reason="cuts one Redis behind a fault proxy; a cluster client goes to the nodes its slot map names "
    "(the reload after a failover: tests/budget/test_redis_cluster.py)"
)
async def test_blocked_listener_reloads_after_a_cut(
    base_config: Config, redis_client: aioredis.Redis
) -> None:
    blocked: set[str] = set()
    with FaultProxy(*target(base_config.redis_url)) as proxy:
        listener = BlockedListener(via(base_config.redis_url, proxy.port), blocked)
        task = asyncio.create_task(listener.run())
        try:

            async def connected() -> bool:
                return listener.connected

            await eventually(connected, timeout_s=5, poll_s=0.01)
            await set_blocked(redis_client, "a", True)
            await announce(redis_client, "a", "block:a")

            async def has_a() -> bool:
                return blocked == {"a"}

            await eventually(has_a, timeout_s=2, poll_s=0.01)
            proxy.cut()

            async def disconnected() -> bool:
                return not listener.connected

            await eventually(disconnected, timeout_s=5, poll_s=0.01)
            # Missed while down: only the set can tell the listener.
            await set_blocked(redis_client, "b", True)
            await announce(redis_client, "b", "block:b")
            await set_blocked(redis_client, "a", False)
            await announce(redis_client, "a", "unblock:a")
            assert blocked == {"a"}  # kept while Redis is unreachable
            proxy.restore()

            async def reloaded() -> bool:
                return listener.connected and blocked == {"b"}

            await eventually(reloaded, timeout_s=10, poll_s=0.01)
            assert listener.reconnects >= 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.postgres
async def test_profiles_keep_the_last_table_while_postgres_is_unreachable(
    base_config: Config, pg: asyncpg.Pool
) -> None:
    users = generate_users(20, 3)
    await write_users(base_config.pg_dsn, users)
    table = ProfileTable()
    with FaultProxy(*target(base_config.pg_dsn)) as proxy:
        loader = ProfileLoader(via(base_config.pg_dsn, proxy.port), table)
        assert await loader.load_once() and len(table) == 20
        assert table.get(users[0].user_id) is not None
        proxy.cut()
        assert not await loader.load_once()
        assert len(table) == 20 and table.failures == 1 and table.attempted
        proxy.restore()
        await write_users(base_config.pg_dsn, generate_users(25, 3))
        assert await loader.load_once() and len(table) == 25


@pytest.mark.kafka
@pytest.mark.postgres
async def test_served_writer_waits_out_a_postgres_outage(topics: Config, pg: asyncpg.Pool) -> None:
    ads = [
        ServedAd(request_id=f"outage-{i}", campaign_id="c", user_id="u", served_at_ms=1_700_000_000_000 + i,
                 auction_cpm=Decimal("0.0000175000"), auction_cpc=Decimal("0.000500"),
                 auction_cpa=Decimal("0.010000"), bidders=1)
        for i in range(300)
    ]  # fmt: skip
    producer = make_producer(topics)
    await producer.start()
    for ad in ads:
        await producer.send(topics.topics.served_ads, encoder.encode(ad))
    await producer.flush()
    await producer.stop()
    with FaultProxy(*target(topics.pg_dsn)) as proxy:
        proxy.cut()
        config = replace(topics, pg_dsn=via(topics.pg_dsn, proxy.port))
        writer = asyncio.create_task(run_served_writer(config, until_idle=True, timeout_s=60))
        await asyncio.sleep(2)  # the writer has the batch and keeps retrying it
        assert not writer.done()
        proxy.restore()
        stats = await asyncio.wait_for(writer, 60)
    assert stats.retries >= 1 and stats.inserted == 300 and stats.messages == 300
    ids = [a.request_id for a in ads]
    count = await pg.fetchval("SELECT count(*) FROM online_ads.served_ads WHERE request_id = ANY($1)", ids)
    assert count == 300
