"""The pacing simulator (``bench.pacing``) in a tiny form on the session's Redis database: both modes run
through the real serving and budget code, never overspend nor break a cap, and its figures come out."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bench.pacing import report, simulate
from bench.pacing_world import build_world

pytestmark = pytest.mark.redis


async def test_a_tiny_day_in_both_modes(redis_client: aioredis.Redis) -> None:
    world = build_world(seed=3, campaigns=30, users=1_000, peak_rps=3.0, day_s=2 * 3600, sample=500)
    rows = {}
    for mode in ("asap", "even"):
        books = await simulate(world, mode, redis_client, tick_s=10, seed=3)
        rows[mode] = report(world, mode, books, tick_s=10)
    for row in rows.values():
        assert row["overspend_micros"] == 0 and row["cap_violations"] == 0, row
        assert row["requests"] and row["nrmse_median"] is not None and row["top1pct_spend_share"] is not None
    # The same seeded traffic in both modes (the draws differ once throttling differs).
    asap, even = rows["asap"]["requests"], rows["even"]["requests"]
    assert isinstance(asap, int) and isinstance(even, int)
    assert abs(asap - even) < 0.05 * asap
