"""``bench.throttle_tick`` measures the real tick and its plain reference on the real Redis, for every size
asked, and deletes the budget hashes it made."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from adplatform.redis_client import RedisClient
from bench import throttle_tick

pytestmark = pytest.mark.redis


async def test_both_arms_are_measured_and_no_key_is_left(redis_client: RedisClient) -> None:
    if isinstance(redis_client, RedisCluster):
        pytest.skip("the bench runs on one Redis (the stack's), as bench.debit_redis")
    rows = await throttle_tick.run([30, 60], repeats=1)

    assert [r["watched"] for r in rows] == [30, 60]
    for r in rows:
        assert float(str(r["tick_cpu_ms"])) > 0 and float(str(r["plain_cpu_ms"])) > 0
        assert r["cpu_ratio"] is not None and float(str(r["tick_held_ms"])) >= 0
    assert [key async for key in redis_client.scan_iter(match="*bench-tick-*")] == []
