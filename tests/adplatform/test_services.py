"""Each service of the local stack answers a real request."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from adplatform import names
from adplatform.config import Config
from adplatform.kafka import make_producer


@pytest.mark.kafka
async def test_kafka_produce_and_consume(topics: Config) -> None:
    producer = make_producer(topics)
    await producer.start()
    try:
        await producer.send_and_wait(topics.topics.feedback, b"hello", key=b"k1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topics.topics.feedback,
        bootstrap_servers=topics.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=topics.group("svc-test"),
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"k1", b"hello")


@pytest.mark.postgres
async def test_postgres_query(pg: asyncpg.Pool) -> None:
    async with pg.acquire() as conn:
        assert await conn.fetchval("SELECT 40 + $1::int", 2) == 42
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'online_ads'")
        }
    assert {"ads", "served_ads", "user", "consumer_offsets"} <= tables


@pytest.mark.redis
async def test_redis_set_get(redis_client: aioredis.Redis) -> None:
    # Inside the session's namespace on a cluster (its tear-down deletes only that), and deleted here.
    key = f"{names.REDIS_PREFIX}svc-test:{uuid.uuid4()}"
    await redis_client.set(key, "v")
    try:
        assert await redis_client.get(key) == b"v"
    finally:
        await redis_client.delete(key)
    # Every charge is on disk before its answer; no snapshot forks (devstack.stack.REDIS_PERSISTENCE).
    persistence = await redis_client.config_get("append*") | await redis_client.config_get("save")
    assert [persistence[k] for k in ("appendonly", "appendfsync", "save")] == ["yes", "always", ""]


@pytest.mark.kafka
@pytest.mark.spark
async def test_spark_reads_kafka_topic_with_offline_connector(topics: Config) -> None:
    producer = make_producer(topics)
    await producer.start()
    try:
        for i in range(10):
            await producer.send(topics.topics.feedback, f'{{"n": {i}}}'.encode(), key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    def read() -> list[str]:
        from archive.session import create_session

        spark = create_session("svc-test", topics.stack_dir)
        frame = (
            spark.read.format("kafka")
            .option("kafka.bootstrap.servers", topics.kafka_bootstrap)
            .option("subscribe", topics.topics.feedback)
            .option("startingOffsets", "earliest")
            .option("endingOffsets", "latest")
            .load()
        )
        return [row.value.decode() for row in frame.select("value").collect()]

    values = await asyncio.to_thread(read)
    assert sorted(values) == sorted(f'{{"n": {i}}}' for i in range(10))
