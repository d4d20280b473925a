"""``adplatform apikey create|list|revoke`` and ``adplatform admin`` as real processes: a key is printed
once, listed without its secret, works until revoked, and never shows in the service's (DEBUG) log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from tests.admin.helpers import body
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

ADPLATFORM = str(Path(sys.executable).with_name("adplatform"))


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        ADPLATFORM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_keys_from_the_cli_against_the_real_service(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    code, key, _ = await _cli("apikey", "create", "--name", "ops", "--role", "write")
    assert code == 0
    key = key.strip()
    assert key.startswith("adp_")
    code, _, err = await _cli("apikey", "create", "--name", "ops", "--role", "read")
    assert code == 1 and "exists already" in err
    code, listed, _ = await _cli("apikey", "list")
    assert code == 0 and "ops" in listed and "write" in listed and key.split(".")[1] not in listed
    port = free_port()
    env = {**os.environ, "ADP_TOPIC_PREFIX": topics.topics.prefix, "ADP_GROUP_PREFIX": topics.group_prefix,
           "ADP_LOG_LEVEL": "DEBUG"}  # fmt: skip
    log_path = tmp_path / "admin.log"
    log = await asyncio.to_thread(open, log_path, "wb")
    proc = await asyncio.create_subprocess_exec(
        ADPLATFORM, "admin", "--port", str(port), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(200):
                try:
                    answer = await client.post(
                        "/v1/campaigns", json=body("cli-1"), headers={"X-API-Key": key}
                    )
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code != 503:
                    break
                await asyncio.sleep(0.1)
            assert answer is not None and answer.status_code == 202, answer and answer.text
            assert (await client.get("/v1/campaigns", headers={"X-API-Key": key + "x"})).status_code == 401
            code, _, _ = await _cli("apikey", "revoke", "ops")
            assert code == 0
            assert (await client.get("/v1/campaigns", headers={"X-API-Key": key})).status_code == 401
            code, _, _ = await _cli("apikey", "revoke", "ops")
            assert code == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        log.close()
    text = await asyncio.to_thread(log_path.read_text, errors="replace")
    assert "Application startup complete" in text or "Started server" in text, text[-2000:]
    assert key.split(".")[1] not in text
    audit = await pg.fetch("SELECT author, action FROM online_ads.audit")
    assert [(r["author"], r["action"]) for r in audit] == [("ops", "create")]
