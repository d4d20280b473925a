"""``adplatform reset --yes``: the one code path that empties the user's data, on explicit confirmation.

Empties every ``online_ads`` table of the configured database, flushes the configured Redis logical
database (on a Redis Cluster, which has one database for everything, deletes the platform's own keys,
``names.PLATFORM_KEY_PATTERNS``, on every master; never FLUSHALL) and deletes and recreates the
configured topics: all three together, since a ledger whose stored offsets are gone would book the old
``ad-feedback`` events again into the emptied tables, and ad servers would rebuild the old campaigns from
``ad-changes``. Run it with the platform's services stopped.
Tests, the demo, chaos and benches never call it: they work in sandboxes (``adplatform.sandbox``).

``online_ads.api_keys`` is kept: access control is not campaign data, and an operator who resets should not
lock every script and person out of the admin service. ``audit`` is emptied with the rest: its rows point
at offsets of the deleted ``campaign-instructions`` topic, and the admin service reads a campaign's newest
audit row as its pending state, so a kept row would make an erased campaign look alive (a create of its id
refused with 409, a PATCH merged onto it). ``dlq_replays`` go for the same reason (offsets of a deleted DLQ).
``table_versions`` is kept too: it holds no data, only the stamp of the last write to a table (which the
TRUNCATE of that table moves on), by which the ad servers know to reload it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio.cluster import ClusterNode, RedisCluster

from adplatform import names
from adplatform.config import Config
from adplatform.kafka import delete_topics, ensure_topics, start_or_close
from adplatform.postgres import truncate_statement
from adplatform.redis_client import RedisClient, is_cluster_url, open_redis

#: ``online_ads`` tables a reset keeps (see the module's docstring).
KEPT_TABLES: Final = frozenset({"api_keys", "table_versions"})
#: Keys per SCAN step and per UNLINK pipeline on a cluster master.
SCAN_COUNT: Final = 1000


@dataclass(frozen=True)
class ResetSummary:
    tables: tuple[str, ...]
    redis_keys: int
    topics: tuple[str, ...]


def describe(config: Config) -> str:
    """What a reset of ``config`` empties, for the confirmation prompt."""
    redis_part = (
        f"Redis Cluster {config.redis_url_redacted} "
        f"(the platform's keys, {names.REDIS_PREFIX}..., on every master)"
        if is_cluster_url(config.redis_url)
        else f"Redis {config.redis_url_redacted} (FLUSHDB)"
    )
    return (
        f"database {config.pg_dsn_redacted} (every online_ads table but {', '.join(sorted(KEPT_TABLES))}), "
        f"{redis_part}, "
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
    client = open_redis(config.redis_url, socket_timeout=10)
    try:
        keys = await empty_redis(client)
    finally:
        await client.aclose()
    deleted = await delete_topics(config)
    await _wait_gone(config, deleted)
    await ensure_topics(config)
    return ResetSummary(tables=tables, redis_keys=keys, topics=tuple(deleted))


async def empty_redis(client: RedisClient) -> int:
    """Empty the platform's Redis: FLUSHDB of its logical database on one node; on a cluster every key of
    ``names.PLATFORM_KEY_PATTERNS`` on every master (other applications' keys stay). The keys deleted."""
    if not isinstance(client, RedisCluster):
        keys = int(await client.dbsize())
        await client.flushdb()
        return keys
    return await delete_on_masters(client, names.PLATFORM_KEY_PATTERNS)


def _master_client(node: ClusterNode) -> aioredis.Redis:
    """A plain client of one master: SCAN walks one node's keyspace, and one UNLINK per key never spans
    two slots (a multi-key UNLINK of keys in different slots is refused with CROSSSLOT)."""
    options = {
        k: v
        for k, v in node.connection_kwargs.items()
        if k in ("username", "password", "socket_timeout", "socket_connect_timeout")
    }
    return aioredis.Redis(host=node.host, port=int(node.port), **options)


async def delete_on_masters(
    client: RedisCluster, patterns: Sequence[str], *, keep: Collection[str] = frozenset()
) -> int:
    """Delete every key matching one of ``patterns`` (but ``keep``) on every master; how many."""
    await client.initialize()  # a no-op once connected
    deleted = 0
    for node in client.get_primaries():
        master = _master_client(node)
        try:
            deleted += await _empty_master(master, patterns, keep)
        finally:
            await master.aclose()
    return deleted


async def any_on_masters(client: RedisCluster, pattern: str) -> bool:
    """Whether a key matching ``pattern`` exists on any master."""
    await client.initialize()
    for node in client.get_primaries():
        master = _master_client(node)
        try:
            async for _ in master.scan_iter(match=pattern, count=SCAN_COUNT):
                return True
        finally:
            await master.aclose()
    return False


async def keys_on_masters(client: RedisCluster, pattern: str) -> set[str]:
    """Every key matching ``pattern`` on every master (for patterns that match few keys)."""
    await client.initialize()
    found: set[str] = set()
    for node in client.get_primaries():
        master = _master_client(node)
        try:
            found.update([k.decode() async for k in master.scan_iter(match=pattern, count=SCAN_COUNT)])
        finally:
            await master.aclose()
    return found


async def _empty_master(master: aioredis.Redis, patterns: Sequence[str], keep: Collection[str]) -> int:
    kept = {k.encode() for k in keep}
    deleted = 0
    for pattern in patterns:
        batch: list[bytes] = []
        async for key in master.scan_iter(match=pattern, count=SCAN_COUNT):
            if key in kept:
                continue
            batch.append(key)
            if len(batch) >= SCAN_COUNT:
                deleted += await _unlink(master, batch)
                batch = []
        deleted += await _unlink(master, batch)
    return deleted


async def _unlink(master: aioredis.Redis, keys: list[bytes]) -> int:
    """UNLINK ``keys`` (one command each, in one pipeline); how many existed. Deleting while a SCAN goes on
    is safe: SCAN still returns every key present from its start to its end."""
    if not keys:
        return 0
    pipe = master.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(int(n) for n in await pipe.execute())
