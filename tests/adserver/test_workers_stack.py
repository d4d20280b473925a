"""``adplatform serve --workers 2``: real uvicorn worker processes, each with its own index.

Each worker answers ``/readyz`` for itself and names its pid, so polling over fresh connections until
both pids have answered shows what each worker's index holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from ingest.instruction import STOP
from loadtest.workers import each_worker
from tests.adserver.serving import InstructionSender, campaign_row, eventually, ingest, manager_running
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

WORKERS = 2


@pytest.fixture
async def server(topics: Config, tmp_path: Path) -> AsyncIterator[str]:
    """``adplatform serve`` with 2 workers on this test's topics; yields its base URL."""
    port = free_port()
    env = {**os.environ, "ADP_TOPIC_PREFIX": topics.topics.prefix, "ADP_GROUP_PREFIX": topics.group_prefix}
    adplatform = str(Path(sys.executable).with_name("adplatform"))
    cmd = [adplatform, "serve", "--workers", str(WORKERS), "--port", str(port)]
    log = await asyncio.to_thread(open, tmp_path / "server.log", "wb")  # kept for a failing test's reader
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers and waits for them
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


async def _each_worker(url: str, **want: object) -> bool:
    """True when every worker's ``/readyz`` body has the values in ``want``."""
    try:
        seen = await each_worker(url, WORKERS)
    except httpx.TransportError:
        return False  # not listening yet
    return seen is not None and all(all(b.get(k) == v for k, v in want.items()) for b in seen.values())


async def test_every_worker_bootstraps_and_follows_a_stop(
    server: str, topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    rows = [campaign_row("top", cpc="0.0090")] + [campaign_row(f"c{i}", cpc="0.0010") for i in range(50)]
    await ingest(topics, rows, tmp_path)
    await eventually(lambda: _each_worker(server, status="ready", index_size=51),
                     timeout_s=60, poll_s=0.2)  # fmt: skip
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.get("/ad/user/u1/serve", params={"device_type": "iPhone"})
        assert response.status_code == 200 and response.json()["campaign_id"] == "top"
    async with manager_running(topics), InstructionSender(topics) as sender:
        await sender.send(campaign_row("top", action=STOP, cpc="0.0090"))
        await eventually(lambda: _each_worker(server, index_size=50), timeout_s=2, poll_s=0.01)
    for _ in range(40):
        async with httpx.AsyncClient(base_url=server) as client:
            response = await client.get("/ad/user/u1/serve", params={"device_type": "iPhone"})
        assert response.status_code == 200 and response.json()["campaign_id"] != "top"
