"""`stack up` is idempotent; `down` then `up` keeps data in every service."""

from __future__ import annotations

import subprocess
import sys
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from adplatform.config import Config
from adplatform.kafka import make_producer
from devstack import stack

CLI = [sys.executable, "-m", "adplatform.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=240)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.kafka
@pytest.mark.exclusive
@pytest.mark.single_node(
    reason="stops and restarts the single-node stack, whose PostgreSQL the cluster shares"
)
async def test_up_twice_then_down_up_keeps_data(topics: Config, pg_pool: asyncpg.Pool) -> None:
    first = _cli("stack", "up")
    assert first.returncode == 0, first.stderr
    again = _cli("stack", "up")
    assert again.returncode == 0, again.stderr
    assert "up: postgres" in again.stdout

    marker = uuid.uuid4().hex
    conn = await asyncpg.connect(topics.pg_dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.stack_persistence (marker text)")
        await conn.execute("INSERT INTO public.stack_persistence VALUES ($1)", marker)
    finally:
        await conn.close()
    rd = aioredis.Redis.from_url(topics.redis_url)
    await rd.set(f"persist:{marker}", marker)
    await rd.aclose()
    producer = make_producer(topics)
    await producer.start()
    await producer.send_and_wait(topics.topics.served_ads, marker.encode())
    await producer.stop()

    down = _cli("stack", "down")
    assert down.returncode == 0, down.stderr
    status = _cli("stack", "status")
    assert status.returncode == 1 and "DOWN" in status.stdout
    up = _cli("stack", "up")
    assert up.returncode == 0, up.stderr
    await pg_pool.expire_connections()

    conn = await asyncpg.connect(topics.pg_dsn)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM public.stack_persistence WHERE marker = $1", marker)
            == 1
        )
        await conn.execute("DROP TABLE public.stack_persistence")
    finally:
        await conn.close()
    rd = aioredis.Redis.from_url(topics.redis_url)
    assert await rd.get(f"persist:{marker}") == marker.encode()
    await rd.aclose()
    consumer = AIOKafkaConsumer(
        topics.topics.served_ads,
        bootstrap_servers=topics.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        values = [m.value for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    assert marker.encode() in values


def test_cluster_id_never_begins_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """One random id in 64 encodes to a leading '-', which `kafka-storage format` reads as an option."""
    # 0xF8 as the first byte: its top six bits are 62, '-' in URL-safe base64.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x04" + bytes(15))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    cluster_id = stack.new_cluster_id()
    assert cluster_id == "BAAAAAAAAAAAAAAAAAAAAA"
    assert len(cluster_id) == 22
