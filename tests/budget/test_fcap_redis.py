"""The frequency-cap script on the real Redis: order, counting, the sliding window, and concurrency."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from adplatform import names
from adplatform.config import Config
from adplatform.redis_client import RedisClient, open_bounded
from budget.fcap_redis import FrequencyCapStore
from index.campaign import Campaign
from index.fcap import FrequencyCap
from tests.index.index_factory import campaign

pytestmark = pytest.mark.redis


def _capped(cid: str, count: int, window_s: int = 3600, **kw: int) -> Campaign:
    return campaign(campaign_id=cid, frequency_cap=FrequencyCap(count=count, window_s=window_s), **kw)


async def test_takes_the_first_under_its_cap_and_counts_it(redis_client: aioredis.Redis) -> None:
    store = FrequencyCapStore(redis_client)
    a, b = _capped("a", 2), _capped("b", 1)
    now_s = 1_757_764_800
    picks = [await store.pick("u1", [a, b], now_s) for _ in range(4)]
    assert picks == [0, 0, 1, -1]
    assert await store.seen("u1", a) == 2 and await store.seen("u1", b) == 1
    assert await store.pick("u2", [a, b], now_s) == 0  # per user
    ttl_ms = await redis_client.pttl(names.fcap_key("u1", "a"))
    assert 3_590_000 < ttl_ms <= 3_600_000
    assert await store.pick("u1", [], now_s) == -1


async def test_says_how_long_each_passed_over_candidate_stays_at_its_cap(
    redis_client: aioredis.Redis,
) -> None:
    store = FrequencyCapStore(redis_client)
    a, b = _capped("a", 1, 3600), _capped("b", 1, 1)
    assert (await store.pick_at_cap("u1", [a, b], 0)).taken == 0
    assert (await store.pick_at_cap("u1", [b], 0)).taken == 0
    passed = await store.pick_at_cap("u1", [a, b], 0)
    assert passed.taken == -1 and len(passed.at_cap_for_s) == 2
    assert 3599 < passed.at_cap_for_s[0] <= 3600 and 0.5 < passed.at_cap_for_s[1] <= 1
    await asyncio.sleep(passed.at_cap_for_s[1] + 0.01)  # b's window has freed by then, not a's
    again = await store.pick_at_cap("u1", [a, b], 0)
    assert again.taken == 1 and len(again.at_cap_for_s) == 1
    assert 3598 < again.at_cap_for_s[0] <= passed.at_cap_for_s[0]


async def test_flight_cap_lives_until_the_flight_ends(redis_client: aioredis.Redis) -> None:
    store = FrequencyCapStore(redis_client)
    now_s = 1_757_764_800
    c = _capped("f", 1, 0, flight_start_s=now_s - 100, flight_end_s=now_s + 50)
    assert await store.pick("u1", [c], now_s) == 0
    assert await store.pick("u1", [c], now_s) == -1
    assert 49_000 < await redis_client.pttl(names.fcap_key("u1", "f")) <= 50_000


async def test_the_window_slides(redis_client: aioredis.Redis) -> None:
    store = FrequencyCapStore(redis_client)
    c = _capped("w", 2, 1)
    assert [await store.pick("u1", [c], 0) for _ in range(3)] == [0, 0, -1]
    await asyncio.sleep(1.05)
    assert [await store.pick("u1", [c], 0) for _ in range(3)] == [0, 0, -1]
    assert await store.seen("u1", c) == 2  # the ads that left the window are trimmed


async def test_concurrent_picks_never_exceed_the_cap(redis_client: RedisClient, base_config: Config) -> None:
    # Four clients (as four workers), 200 calls in flight at once.
    clients = [
        open_bounded(
            base_config.redis_url, max_connections=50, timeout_s=10, socket_timeout_s=10, connect_timeout_s=5
        )
        for _ in range(4)
    ]
    try:
        stores = [FrequencyCapStore(client) for client in clients]
        a, b = _capped("a", 5), _capped("b", 3)
        picks = await asyncio.gather(*(stores[i % 4].pick("u1", [a, b], 0) for i in range(200)))
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(picks) == [-1] * 192 + [0] * 5 + [1] * 3


async def test_a_burst_beyond_the_pool_waits_for_a_connection(
    redis_client: RedisClient, base_config: Config
) -> None:
    # 40 calls at once through 4 connections (per node on a cluster, where a pool beyond its bound fails
    # at once): each waits its turn within its deadline, none fails.
    client = open_bounded(
        base_config.redis_url, max_connections=4, timeout_s=2, socket_timeout_s=2, connect_timeout_s=2
    )
    try:
        store = FrequencyCapStore(client, max_in_flight=4)
        c = _capped("burst", 3)
        picks = await asyncio.gather(
            *(asyncio.wait_for(store.pick("u1", [c], 0), 2) for _ in range(40)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert sorted(picks, key=repr) == [-1] * 37 + [0] * 3


def test_keys_of_a_user_share_one_hash_tag() -> None:
    keys = [names.fcap_key("user-7", cid) for cid in ("a", "b", "c")]
    assert {k[k.index("{") : k.index("}") + 1] for k in keys} == {"{user-7}"}
