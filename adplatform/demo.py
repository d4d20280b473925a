"""`make demo`: the pipeline end to end on the local stack, with a summary.

Until every stage exists this runs a real round trip through each service; later stages extend it.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from adplatform.config import Config, load_config
from adplatform.kafka import make_producer


async def round_trip(config: Config) -> dict[str, float]:
    """Write and read back one value through PostgreSQL, Redis and Kafka; returns each latency in ms."""
    marker = uuid.uuid4().hex
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    conn = await asyncpg.connect(config.pg_dsn)
    try:
        assert await conn.fetchval("SELECT $1::text", marker) == marker
    finally:
        await conn.close()
    timings["postgres"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    client = aioredis.Redis.from_url(config.redis_url)
    try:
        await client.set(f"demo:{marker}", marker, ex=60)
        assert await client.get(f"demo:{marker}") == marker.encode()
    finally:
        await client.aclose()
    timings["redis"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    producer = make_producer(config)
    await producer.start()
    try:
        meta = await producer.send_and_wait(config.topics.served_ads, marker.encode(), key=b"demo")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition(meta.topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        message = await asyncio.wait_for(consumer.getone(), 10)
        assert message.value == marker.encode()
    finally:
        await consumer.stop()
    timings["kafka"] = (time.perf_counter() - t0) * 1000
    return timings


def main() -> int:
    config = load_config()
    if "--down" in sys.argv:
        return 0
    timings = asyncio.run(round_trip(config))
    print("demo: round trip through every service of the local stack")
    for name, ms in timings.items():
        print(f"  {name:<9} ok  {ms:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
