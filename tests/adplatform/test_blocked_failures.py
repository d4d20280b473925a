"""The blocked-set listener retries a failure of the Redis client, even one redis-py does not mean to raise
(an ``AttributeError`` from a connection closed under its session), and dies on a bug of ours."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection

from adplatform.blocked import BlockedListener


async def _inside_redis_py() -> None:
    await Connection()._send_packed_command([b"PING"])  # no writer: AttributeError from redis-py's own code


class _Failing(BlockedListener):
    def __init__(self, failure: object) -> None:
        super().__init__("redis://127.0.0.1:1/0", set())
        self.failure = failure
        self.sessions = 0

    async def _single(self) -> None:
        self.sessions += 1
        if self.failure == "redis-py":
            await _inside_redis_py()
        raise AttributeError("'NoneType' object has no attribute 'members'")  # no redis-py frame


async def test_an_error_inside_the_redis_client_is_retried() -> None:
    listener = _Failing("redis-py")
    task = asyncio.create_task(listener.run())
    await asyncio.sleep(0.8)  # the first session, 0.5 s of backoff, the second
    assert not task.done() and listener.sessions == 2 and listener.reconnects == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_bug_of_ours_ends_the_listener() -> None:
    listener = _Failing("ours")
    with pytest.raises(AttributeError, match="members"):
        await asyncio.wait_for(listener.run(), timeout=5)
    assert listener.sessions == 1
