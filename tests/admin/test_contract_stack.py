"""The admin service's OpenAPI contract under schemathesis, positive and negative data (a body, query or
path the schema forbids must be refused with a 4xx), against the real app on the real stack."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from admin.app import create_app
from admin.settings import AdminConfig
from adplatform.config import Config
from tests.admin.helpers import body, keys

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "negative_data_rejection,missing_required_header,unsupported_method"
)


async def test_openapi_contract_holds_under_schemathesis(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    auth = await keys(pg)
    app = create_app(topics, AdminConfig(wait_timeout_s=0.5))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110  (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(300):  # the producer connects in the background
                answer = await client.post("/v1/campaigns", json=body("known"), headers=auth["admin"])
                if answer.status_code != 503:
                    break
                await asyncio.sleep(0.1)
            assert answer.status_code == 202, answer.text
        cmd = [
            str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/v1/openapi.json",
            "--checks", CHECKS, "--mode", "all", "--max-examples", "25", "--seed", "7", "--no-color",
            "-H", f"Authorization: {auth['admin']['Authorization']}",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        report = out.decode(errors="replace")
        assert proc.returncode == 0, report[-15000:]
        assert auth["admin"]["Authorization"].split()[1] not in report.replace(
            auth["admin"]["Authorization"], ""
        )
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
