"""Helpers of the admin tests: the app with its real lifespan behind an in-process client, keys of each
role, campaign bodies in the CSV's spelling, and a real 2-worker ad server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from admin.app import create_app
from admin.keys import create_key
from admin.settings import AdminConfig
from adplatform.config import Config
from tests.adserver.serving import campaign_row
from tests.adserver.test_workers_stack import WORKERS
from tests.ports import free_port


def body(campaign_id: str, **kw: Any) -> dict[str, str]:
    """A create body: a campaign row (by default everyone, live now for a day) without ``action``."""
    row = campaign_row(campaign_id, **kw)
    del row["action"]
    return row


async def keys(pool: asyncpg.Pool) -> dict[str, dict[str, str]]:
    """An Authorization header for each role, keys named after their role."""
    out = {}
    for role in ("read", "write", "admin"):
        out[role] = {"Authorization": f"Bearer {await create_key(pool, f'{role}-user', role)}"}
    return out


@contextlib.asynccontextmanager
async def admin_client(
    config: Config, settings: AdminConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, settings or AdminConfig(wait_timeout_s=5))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin", timeout=60) as client:
            ref = app.state.ref
            await asyncio.wait_for(ref.state.publisher.connected.wait(), 30)
            yield client


@contextlib.asynccontextmanager
async def adserver(
    config: Config, log_path: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """``adplatform serve`` with 2 workers on this test's topics (plus ``extra_env``); yields its base URL."""
    port = free_port()
    env = {**os.environ, "ADP_TOPIC_PREFIX": config.topics.prefix, "ADP_GROUP_PREFIX": config.group_prefix}
    env.update(extra_env or {})
    cmd = [str(Path(sys.executable).with_name("adplatform")), "serve", "--workers", str(WORKERS),
           "--port", str(port)]  # fmt: skip
    log = await asyncio.to_thread(open, log_path, "wb")
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


async def winners(url: str, tries: int = 12, **params: str) -> set[str | None]:
    """The campaigns served for one request over fresh connections (so both workers answer)."""
    seen: set[str | None] = set()
    for _ in range(tries):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            response = await client.get("/ad/user/u1/serve", params=params)
        assert response.status_code in (200, 404), response.text
        seen.add(response.json().get("campaign_id") if response.status_code == 200 else None)
    return seen


LIVE = timedelta(hours=-1)
