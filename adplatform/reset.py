"""``adplatform reset --yes``: the one code path that empties the user's data, on explicit confirmation.

Empties every ``online_ads`` table of the configured database, flushes the configured Redis logical
database and deletes and recreates the configured topics: all three together, since a ledger whose stored
offsets are gone would book the old ``ad-feedback`` events again into the emptied tables, and ad servers
would rebuild the old campaigns from ``ad-changes``. Run it with the platform's services stopped.
Tests, the demo, chaos and benches never call it: they work in sandboxes (``adplatform.sandbox``).

``online_ads.api_keys`` is kept: access control is not campaign data, and an operator who resets should not
lock every script and person out of the admin service. ``audit`` is emptied with the rest: its rows point
at offsets of the deleted ``campaign-instructions`` topic, and the admin service reads a campaign's newest
audit row as its pending state, so a kept row would make an erased campaign look alive (a create of its id
refused with 409, a PATCH merged onto it). ``dlq_replays`` go for the same reason (offsets of a deleted DLQ).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

import asyncpg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from adplatform.config import Config
from adplatform.kafka import delete_topics, ensure_topics, start_or_close
from adplatform.postgres import truncate_statement

#: ``online_ads`` tables a reset keeps (see the module's docstring).
KEPT_TABLES: Final = frozenset({"api_keys"})


@dataclass(frozen=True)
class ResetSummary:
    tables: tuple[str, ...]
    redis_keys: int
    topics: tuple[str, ...]


def describe(config: Config) -> str:
    """What a reset of ``config`` empties, for the confirmation prompt."""
    return (
        f"database {config.pg_dsn_redacted} (every online_ads table but {', '.join(sorted(KEPT_TABLES))}), "
        f"Redis {config.redis_url_redacted} (FLUSHDB), "
        f"topics {', '.join(config.topics.all())} (deleted and recreated)"
    )


async def _wait_gone(config: Config, topics: list[str], timeout_s: float = 60) -> None:
    """Kafka deletes topics in the background; recreating one still marked for deletion fails."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap, request_timeout_ms=10_000)
    await start_or_close(admin)
    try:
        deadline = time.monotonic() + timeout_s
        while set(topics) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still being deleted after {timeout_s:.0f}s: {topics}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def empty_tables(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[str, ...]:
    """TRUNCATE every ``online_ads`` table but ``KEPT_TABLES``, in one statement; the tables emptied."""
    tables = tuple(
        sorted(
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'online_ads'")
            if r["tablename"] not in KEPT_TABLES
        )
    )
    if tables:
        await conn.execute(truncate_statement("online_ads", tables))
    return tables


async def reset_data(config: Config) -> ResetSummary:
    """Empty ``config``'s database tables, Redis database and topics (the caller has confirmed)."""
    conn = await asyncpg.connect(config.pg_dsn, timeout=10)
    try:
        tables = await empty_tables(conn)
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(config.redis_url)
    try:
        keys = int(await client.dbsize())
        await client.flushdb()
    finally:
        await client.aclose()
    deleted = await delete_topics(config)
    await _wait_gone(config, deleted)
    await ensure_topics(config)
    return ResetSummary(tables=tables, redis_keys=keys, topics=tuple(deleted))
