"""The CLI as a client of a real ``adplatform admin`` (with the real Ad Manager and a 2-worker ad server):
``campaign create|show|update|list|stop``, ``dlq list|replay`` and ``explain`` as subprocesses; error
answers are one line and exit 1, an admin service that is not running is one line and exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from admin.keys import create_key
from adplatform.config import Config
from adplatform.kafka import make_producer
from loadtest.workers import wait_workers_ready
from tests.admin.helpers import adserver, body
from tests.adserver.serving import manager_running
from tests.adserver.test_workers_stack import WORKERS
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

ADPLATFORM = str(Path(sys.executable).with_name("adplatform"))


@asynccontextmanager
async def admin_service(config: Config, adserver_url: str, log_path: Path) -> AsyncIterator[str]:
    """``adplatform admin`` on a free port, on this test's topics; yields its URL once it answers."""
    port = free_port()
    env = {**os.environ, "ADP_TOPIC_PREFIX": config.topics.prefix, "ADP_GROUP_PREFIX": config.group_prefix,
           "ADP_ADSERVER_URLS": adserver_url, "ADP_ADSERVER_WORKERS": str(WORKERS),
           "ADP_ADMIN_WAIT_TIMEOUT_S": "20"}  # fmt: skip
    log = await asyncio.to_thread(open, log_path, "wb")
    proc = await asyncio.create_subprocess_exec(
        ADPLATFORM, "admin", "--port", str(port), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            for _ in range(300):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        log.close()


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        ADPLATFORM, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok_json(env: dict[str, str], *args: str) -> Any:
    code, out, err = await cli(env, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err  # no traceback
    return lines[0]


async def test_the_cli_drives_campaigns_and_the_dlq_through_the_admin_api(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    writer = await create_key(pg, "cli-writer", "write")
    reader = await create_key(pg, "cli-reader", "read")
    campaign_file = tmp_path / "campaign.json"
    campaign_file.write_text(json.dumps(body("cli1", cpc="0.0010")))
    async with (
        adserver(topics, tmp_path / "server.log") as server_url,
        manager_running(topics),
    ):
        await wait_workers_ready(server_url, WORKERS, timeout_s=60)
        async with admin_service(topics, server_url, tmp_path / "admin.log") as admin_url:
            env = {**os.environ, "ADP_ADMIN_URL": admin_url, "ADP_API_KEY": writer}
            read_env = {**env, "ADP_API_KEY": reader}

            # create (file + field, wait) -> show (table and JSON)
            code, out, err = await cli(env, "campaign", "create", "--file", str(campaign_file),
                                       "--field", "cpc=0.0030", "--wait")  # fmt: skip
            assert code == 0, err
            assert (
                out.startswith("cli1: New Campaign by cli-writer published (partition ") and "applied" in out
            )
            code, out, err = await cli(read_env, "campaign", "show", "cli1")
            assert code == 0, err
            assert "cli1" in out and "0.003000" in out and "last_change.author" in out and "cli-writer" in out
            shown = await ok_json(read_env, "campaign", "show", "cli1")
            assert shown["campaign"]["cpc"] == "0.003000" and shown["campaign"]["status"] == "Active"
            assert shown["last_change"] == {**shown["last_change"], "author": "cli-writer", "pending": False}

            # update (wait, JSON answer), a second campaign, list with filters and pages
            updated = await ok_json(env, "campaign", "update", "cli1", "--field", "budget=600", "--wait")
            assert updated["applied"] is True and updated["action"] == "Update Campaign"
            assert (await ok_json(read_env, "campaign", "show", "cli1"))["campaign"]["budget"] == "600.000000"
            other = {**body("cli2"), "category": "Other"}
            fields = [arg for k, v in other.items() for arg in ("--field", f"{k}={v}")]
            assert (await ok_json(env, "campaign", "create", *fields, "--wait"))["applied"] is True
            listed = await ok_json(read_env, "campaign", "list", "--category", "Other")
            assert [c["campaign_id"] for c in listed["items"]] == ["cli2"]
            paged = await ok_json(read_env, "campaign", "list", "--limit", "1", "--all")
            assert [c["campaign_id"] for c in paged["items"]] == ["cli1", "cli2"]
            code, out, err = await cli(read_env, "campaign", "list", "--q", "cli", "--limit", "1")
            assert code == 0 and "cli1" in out and "cli2" not in out and "--cursor cli1" in err

            # stop, then stop again (nothing published)
            code, out, err = await cli(env, "campaign", "stop", "cli1", "--wait")
            assert code == 0 and "Stop Campaign" in out and "applied" in out, err
            code, out, _ = await cli(env, "campaign", "stop", "cli1")
            assert code == 0 and out.strip() == "cli1: already stopped; nothing published"
            inactive = await ok_json(read_env, "campaign", "list", "--status", "Inactive")
            assert [c["campaign_id"] for c in inactive["items"]] == ["cli1"]

            # error answers: one line, exit 1
            code, _, err = await cli(env, "campaign", "create", "--field", "campaign_id=bad1",
                                     "--field", "cpc=abc")  # fmt: skip
            line = one_line(err)
            assert code == 1 and line.startswith("Error: 422: Invalid campaign.") and "cpc:" in line
            assert "text:" in line  # each field's reason: a missing one too
            code, _, err = await cli(env, "campaign", "create", "--file", str(campaign_file))
            assert code == 1 and one_line(err).startswith("Error: 409: Campaign cli1 exists already")
            code, _, err = await cli(read_env, "campaign", "show", "nope")
            assert code == 1 and one_line(err) == "Error: 404: No campaign nope."
            code, _, err = await cli(read_env, "campaign", "update", "cli2", "--field", "cpc=0.5")
            assert code == 1 and one_line(err).startswith("Error: 403: This needs the write role")
            bad_key = writer[:-1] + ("x" if writer[-1] != "x" else "y")
            code, out, err = await cli(env, "campaign", "list", "--api-key", bad_key)
            assert code == 1 and one_line(err) == "Error: 401: Invalid or revoked API key." and out == ""
            assert bad_key not in err and writer not in err
            no_key = {k: v for k, v in env.items() if k != "ADP_API_KEY"}
            code, _, err = await cli(no_key, "campaign", "list")
            assert code == 1 and "401" in one_line(err) and "ADP_API_KEY" in err

            # the DLQ: a bad instruction dead-lettered by the manager, listed and replayed once
            producer = make_producer(topics, linger_ms=0)
            await producer.start()
            try:
                await producer.send_and_wait(topics.topics.instructions, b'{"not": "it"}', key=b"bad9")
            finally:
                await producer.stop()
            deadline = time.monotonic() + 30
            while not (items := (await ok_json(read_env, "dlq", "list"))["items"]):
                assert time.monotonic() < deadline, "nothing in the DLQ"
                await asyncio.sleep(0.2)
            assert items[0]["key"] == "bad9" and items[0]["reason"] == "missing field: text"
            code, out, err = await cli(read_env, "dlq", "list")
            assert code == 0 and "bad9" in out and "missing field: text" in out, err
            where = (str(items[0]["partition"]), str(items[0]["offset"]))
            code, out, err = await cli(env, "dlq", "replay", *where)
            assert code == 0 and "replayed by cli-writer" in out, err
            code, out, err = await cli(env, "dlq", "replay", *where)
            assert code == 0 and "nothing published again" in out, err
            listed_dlq = (await ok_json(read_env, "dlq", "list"))["items"]
            assert listed_dlq[0]["replay"]["author"] == "cli-writer"

            # explain: the admin service's copy of the index agrees cli2 wins (cli1 is stopped)
            deadline = time.monotonic() + 60
            while True:
                code, out, err = await cli(read_env, "explain", "--device-type", "iPhone", "--json")
                if code == 0 and json.loads(out)["winner"] == "cli2":
                    break
                assert time.monotonic() < deadline, err or out[-2000:]
                await asyncio.sleep(0.5)
            code, out, err = await cli(read_env, "explain", "--device-type", "iPhone")
            assert code == 0 and "winner: cli2" in out and "cli1" in out, err
        # the same command once the admin service is gone: one line naming it, exit 2
        code, out, err = await cli(env, "campaign", "list")
        line = one_line(err)
        assert code == 2 and out == ""
        assert line.startswith(f"Error: The admin service is not reachable at {admin_url[7:]} (")
        assert "`adplatform admin`" in line and "ADP_ADMIN_URL" in line
