"""``bench.minimal_durable``, the feedback bench's plain reference, makes both durable writes it claims:
each request is de-duplicated and counted in Redis and its event is in ``ad-feedback`` when it is
answered."""

from __future__ import annotations

import asyncio
from typing import cast

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.commands.core import AsyncScript

from adplatform.config import Config
from adplatform.kafka import read_to_end
from adplatform.redis_client import RedisClient
from bench import minimal_durable

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def test_each_answer_follows_its_redis_write_and_its_acknowledged_event(
    topics: Config, redis_client: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADP_TOPIC_PREFIX", topics.topics.prefix)
    monkeypatch.setenv("ADP_GROUP_PREFIX", topics.group_prefix)
    app = minimal_durable.app
    ids = [f"durable-{i}" for i in range(40)]
    async with (
        minimal_durable.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reference") as client,
    ):
        replies = await asyncio.gather(*(client.post(f"/ad/{rid}/feedback", content=b"{}") for rid in ids))
    assert [(r.status_code, r.json()) for r in replies] == [(200, {"status": "Success"})] * len(ids)
    assert int(await redis_client.get(minimal_durable.COUNT_KEY) or 0) == len(ids)
    assert all([await redis_client.exists(minimal_durable.dedup_key(rid)) for rid in ids])
    records = await read_to_end(topics.kafka_bootstrap, topics.topics.feedback)
    assert sorted(orjson.loads(r.value or b"{}")["request_id"] for r in records) == sorted(ids)
    assert all(500 < len(r.value or b"") < 700 for r in records)  # the size of a real event


async def test_a_failed_redis_call_fails_its_batch_and_the_next_batch_goes_on() -> None:
    """A script call Redis refuses (on the cluster stack the reference once sent keys of several hash
    slots in one call) fails its batch's requests, answered 500, instead of leaving them waiting for good
    (the bench hung until its timeout); the next batch calls again."""
    calls: list[list[str]] = []

    async def script(*, keys: list[str], args: list[int]) -> int:
        calls.append(keys)
        if len(calls) == 1:
            raise ConnectionError("Redis refused the call")
        return len(keys) - 1

    published: list[bytes] = []

    class Producer:
        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
            published.append(key)
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ack.set_result(None)
            return ack

    commit = minimal_durable.GroupCommit(cast(AsyncScript, script), cast(AIOKafkaProducer, Producer()), "t")
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionError):
            await commit.commit("first")
        await commit.commit("second")
    assert published == [b"second"]
    assert calls == [
        [minimal_durable.COUNT_KEY, minimal_durable.dedup_key(rid)] for rid in ("first", "second")
    ]
