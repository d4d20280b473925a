"""Abuse and bad input against the real server: the OpenAPI contract under schemathesis, request limits,
key rotation with ads in flight, and secrets that must never show."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config, TokenKey
from loadtest.workers import wait_workers_ready
from tests.adserver.serving import campaign_row, ingest, serve, serving
from tests.adserver.test_workers_stack import WORKERS
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

SECRET_KEY = "k7:never-show-this-token-secret-0042"
SECRET_PASSWORD = "never-show-this-db-password-0042"


async def test_request_limits(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await ingest(topics, [campaign_row("c1")], tmp_path)
    async with serving(topics) as (_, client):
        long_query = await client.get("/ad/user/u1/serve", params={"city": "x" * 5000})
        assert long_query.status_code == 414 and "detail" in long_query.json()
        many = {f"x-h{i}": "v" for i in range(100)}
        assert (await client.get("/healthz", headers=many)).status_code == 431
        big = {"x-big": "v" * 20_000}
        assert (await client.get("/ad/user/u1/serve", headers=big)).status_code == 431
        token = (await serve(client, "u1", device_type="iPhone")).json()["request_id"]
        oversized = await client.post(f"/ad/{token}/feedback", content=b" " * 5000)
        assert oversized.status_code == 413
        assert (await serve(client, "u1", device_type="iPhone")).status_code == 200  # still serving


async def test_key_rotation_keeps_ads_in_flight_valid(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await ingest(topics, [campaign_row("c1", budget="100")], tmp_path)
    old = TokenKey("old1", b"the-old-signing-key-0001")
    new = TokenKey("new2", b"the-new-signing-key-0002")
    async with serving(replace(topics, token_keys=(old,))) as (_, client):
        in_flight = (await serve(client, "u1", device_type="iPhone")).json()["request_id"]
    assert in_flight.startswith("old1.")
    async with serving(replace(topics, token_keys=(new, old))) as (_, client):
        fresh = (await serve(client, "u1", device_type="iPhone")).json()["request_id"]
        assert fresh.startswith("new2.")
        body = {"view": 1, "click": 1, "acquisition": 0}
        assert (await client.post(f"/ad/{in_flight}/feedback", json=body)).status_code == 200
        assert (await client.post(f"/ad/{fresh}/feedback", json=body)).status_code == 200
        # Replayed: accepted (idempotent), charged once; forged with a retired key: refused.
        assert (await client.post(f"/ad/{in_flight}/feedback", json=body)).status_code == 200
    async with serving(replace(topics, token_keys=(new,))) as (_, client):
        assert (await client.post(f"/ad/{in_flight}/feedback", json=body)).status_code == 404


@pytest.fixture
async def secret_server(topics: Config, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A real 2-worker server whose token key and database password are secrets; yields (url, log)."""
    port = free_port()
    dsn = topics.pg_dsn.replace("postgres@", f"postgres:{SECRET_PASSWORD}@", 1)  # trust auth ignores it
    env = {
        **os.environ,
        "ADP_TOPIC_PREFIX": topics.topics.prefix,
        "ADP_GROUP_PREFIX": topics.group_prefix,
        "ADP_TOKEN_KEYS": SECRET_KEY,
        "ADP_PG_DSN": dsn,
        "ADP_LOG_LEVEL": "DEBUG",
        "ADP_CLIENT_TIMEOUT_S": "2",
    }
    log_path = tmp_path / "server.log"
    log = await asyncio.to_thread(open, log_path, "wb")
    cmd = [sys.executable, "-m", "adplatform.cli", "serve", "--workers", str(WORKERS), "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        log.close()


async def test_secrets_never_appear_in_logs_errors_or_metrics(
    secret_server: tuple[str, Path], topics: Config, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    url, log_path = secret_server
    await ingest(topics, [campaign_row("c1")], tmp_path)
    seen: list[str] = []
    await wait_workers_ready(url, WORKERS, timeout_s=60)
    async with httpx.AsyncClient(base_url=url) as client:
        ok = await client.get("/ad/user/u1/serve", params={"device_type": "iPhone"})
        seen.append(ok.text)
        token = ok.json()["request_id"]
        for path, body in [(f"/ad/{token}/feedback", b"{"), ("/ad/forged.x.y/feedback", b"{}"),
                           (f"/ad/{token}/feedback", b'{"view": 1}')]:  # fmt: skip
            seen.append((await client.post(path, content=body)).text)
        seen.append((await client.get("/ad/user/u1/serve", params={"age": "old"})).text)
        seen.append((await client.get("/metrics")).text)
        seen.append((await client.get("/openapi.json")).text)
    text = "\n".join(seen) + (await asyncio.to_thread(log_path.read_text, errors="replace"))
    for secret in (SECRET_KEY.split(":", 1)[1], SECRET_PASSWORD):
        assert secret not in text


async def test_openapi_contract_holds_under_schemathesis(
    secret_server: tuple[str, Path], topics: Config, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    url, _ = secret_server
    await ingest(
        topics, [campaign_row("c1"), campaign_row("c2", city="Mumbai", state="Maharashtra")], tmp_path
    )
    await wait_workers_ready(url, WORKERS, timeout_s=60)
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples", "60", "--seed", "7", "--no-color",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 400)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-12000:]


async def test_the_real_server_cuts_off_slow_clients(
    secret_server: tuple[str, Path], topics: Config, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    """``adplatform serve`` runs the guarded protocol: an idle connection and a dribbled body get 408
    after ADP_CLIENT_TIMEOUT_S (2 s here) while the server keeps serving everyone else."""
    url, _ = secret_server
    port = int(url.rsplit(":", 1)[1])
    await ingest(topics, [campaign_row("c1")], tmp_path)
    await wait_workers_ready(url, WORKERS, timeout_s=60)
    async with httpx.AsyncClient(base_url=url) as client:
        token = (await serve(client, "u1", device_type="iPhone")).json()["request_id"]
        idle = await asyncio.open_connection("127.0.0.1", port)
        dribble = await asyncio.open_connection("127.0.0.1", port)
        dribble[1].write(f"POST /ad/{token}/feedback HTTP/1.1\r\nhost: x\r\n".encode()
                         + b"content-length: 40\r\n\r\n{\"view\": 1")  # fmt: skip
        started = time.monotonic()
        assert (await serve(client, "u1", device_type="iPhone")).status_code == 200  # others unaffected
        for reader, writer in (idle, dribble):
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
            writer.close()
        assert time.monotonic() - started < 6
        # The dribbled feedback never reached the budget: the same request id is still chargeable once.
        body = {"view": 1, "click": 1, "acquisition": 0}
        assert (await client.post(f"/ad/{token}/feedback", json=body)).status_code == 200
