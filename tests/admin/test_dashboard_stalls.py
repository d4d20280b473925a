"""The overview's Redis line: Redis's own stalls over the last minute (``admin.board_data.redis_stalls``)."""

from __future__ import annotations

import socket
import time

import pytest

from admin import board_data
from adplatform.redis_client import RedisClient, is_cluster, open_redis
from tests.adplatform.test_redis_latency import BUSY_12_MS


async def test_the_overview_shows_no_stalls_line_when_redis_does_not_answer() -> None:
    with socket.socket() as held:  # a port nothing answers on: bound, never listening
        held.bind(("127.0.0.1", 0))
        client = open_redis(f"redis://127.0.0.1:{held.getsockname()[1]}/0", socket_connect_timeout=1)
        try:
            assert await board_data.redis_stalls(client, time.time()) is None
        finally:
            await client.aclose()


@pytest.mark.redis
async def test_the_overview_reads_the_last_minute_of_the_stacks_redis(redis_client: RedisClient) -> None:
    if is_cluster(redis_client):
        assert await board_data.redis_stalls(redis_client, time.time()) is None
        return
    await redis_client.eval(BUSY_12_MS, 0)
    stalls = await board_data.redis_stalls(redis_client, time.time())
    assert stalls is not None and (stalls.threshold_ms, stalls.window_s) == (5, board_data.STALLS_WINDOW_S)
    assert any(e.event == "command" and e.worst_ms >= 12 for e in stalls.events), stalls
