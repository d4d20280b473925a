"""``hmget_many`` answers what a redis-py pipeline of ``HMGET`` calls answers, on the real Redis, across its
chunks; an error reply fails the call without leaving unread replies in the client's pool."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from adplatform.redis_client import RedisClient, hmget_many

pytestmark = pytest.mark.redis

FIELDS = ("slot", "spent", "budget", "ünïcode")


def one_node(client: RedisClient) -> aioredis.Redis:
    if isinstance(client, RedisCluster):
        pytest.skip(
            "one node's client; the cluster's reads go through per-master clients (test_throttle_cluster)"
        )
    return client


async def _pipeline(client: aioredis.Redis, keys: list[str]) -> list[list[bytes | None]]:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, *FIELDS)
        return list(await pipe.execute())


async def test_same_replies_as_a_pipeline_across_chunks(redis_client: RedisClient) -> None:
    client = one_node(redis_client)
    keys = [f"hm:{i}" for i in range(10)] + ["hm:none", "hm:ключ"]
    for i, key in enumerate(keys[:10]):
        # Some fields missing, values of every length (an empty one, a binary one).
        mapping = {"slot": i, "spent": "" if i % 3 else b"\x00\xff", "ünïcode": "v" * (i * 300)}
        await client.hset(key, mapping=mapping)  # type: ignore[arg-type]
    await client.hset("hm:ключ", "budget", 7)

    expected = await _pipeline(client, keys)
    got = await hmget_many(client, keys, FIELDS, chunk=3)  # four chunks, the last one short

    assert got == expected
    assert got[10] == [None, None, None, None]  # no such hash
    assert got[11] == [None, None, b"7", None]
    assert await hmget_many(client, [], FIELDS) == []


async def test_an_error_reply_fails_the_call_and_the_client_stays_usable(redis_client: RedisClient) -> None:
    client = one_node(redis_client)
    await client.hset("hm:a", "slot", 1)
    await client.set("hm:string", "not a hash")
    await client.hset("hm:b", "slot", 2)

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await hmget_many(client, ["hm:a", "hm:string", "hm:b"], FIELDS)

    # The failed connection was closed, not returned with a reply unread: the next calls read their own.
    assert await hmget_many(client, ["hm:b", "hm:a"], FIELDS) == [
        [b"2", None, None, None],
        [b"1", None, None, None],
    ]
    assert await client.get("hm:string") == b"not a hash"
