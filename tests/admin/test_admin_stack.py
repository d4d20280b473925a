"""The admin service on the real stack: writes publish through Kafka and the real Ad Manager, reads come
from PostgreSQL and Redis, ``?wait=true`` waits for a real 2-worker ad server's index."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from admin.settings import AdminConfig
from adplatform.config import Config
from adplatform.kafka import read_to_end
from loadtest.workers import wait_workers_ready
from tests.admin.helpers import admin_client, adserver, body, keys, winners
from tests.adserver.serving import manager_running
from tests.adserver.test_workers_stack import WORKERS
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


async def test_create_serve_update_stop_and_the_audit_trail(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    auth = await keys(pg)
    async with adserver(topics, tmp_path / "server.log") as url, manager_running(topics):
        await wait_workers_ready(url, WORKERS, timeout_s=60)
        settings = AdminConfig(adserver_urls=(url,), adserver_workers=WORKERS, wait_timeout_s=20)
        async with admin_client(topics, settings) as client:
            # A competitor that outbids the new campaign at first.
            rival = await client.post("/v1/campaigns?wait=true", json=body("rival", cpc="0.0020"),
                                      headers=auth["write"])  # fmt: skip
            assert rival.status_code == 200, rival.text
            created = await client.post("/v1/campaigns?wait=true", json=body("c1", cpc="0.0010"),
                                        headers=auth["write"])  # fmt: skip
            assert created.status_code == 200, created.text
            got = created.json()
            assert got["applied"] is True and got["version"] == got["offset"] + 1
            assert got["author"] == "write-user" and got["action"] == "New Campaign"
            assert got["wait_ms"] > 0
            assert await winners(url, device_type="iPhone") == {"rival"}

            # Outbid the rival: every worker's auction changes within the wait.
            updated = await client.patch("/v1/campaigns/c1?wait=true", json={"cpc": "0.0030"},
                                         headers=auth["write"])  # fmt: skip
            assert updated.status_code == 200, updated.text
            assert await winners(url, device_type="iPhone") == {"c1"}
            detail = (await client.get("/v1/campaigns/c1", headers=auth["read"])).json()
            assert detail["campaign"]["cpc"] == "0.003000" and detail["campaign"]["status"] == "Active"
            assert detail["last_change"]["author"] == "write-user"
            assert detail["last_change"]["action"] == "Update Campaign"
            assert detail["money"]["budget"] == "500.000000" and detail["money"]["spent"] == "0.000000"
            assert detail["pacing"] in ("on pace", "behind")
            assert detail["delivery"]["flight"]["views"] is None

            stopped = await client.post("/v1/campaigns/c1/stop?wait=true", headers=auth["admin"])
            assert stopped.status_code == 200, stopped.text
            assert await winners(url, device_type="iPhone") == {"rival"}
            again = await client.post("/v1/campaigns/c1/stop", headers=auth["write"])
            assert again.status_code == 200 and again.json()["published"] is False
            detail = (await client.get("/v1/campaigns/c1", headers=auth["read"])).json()
            assert detail["campaign"]["status"] == "Inactive" and detail["pacing"] == "stopped"

            audit = (await client.get("/v1/audit?campaign_id=c1", headers=auth["admin"])).json()
            assert [(e["action"], e["author"]) for e in audit["items"]] == [
                ("stop", "admin-user"), ("update", "write-user"), ("create", "write-user"),
            ]  # fmt: skip
            listed = (await client.get("/v1/campaigns?status=Active", headers=auth["read"])).json()
            assert [c["campaign_id"] for c in listed["items"]] == ["rival"]
    # The author travels with each instruction as a Kafka header.
    records = await read_to_end(topics.kafka_bootstrap, topics.topics.instructions)
    authors = {dict(r.headers).get("author") for r in records}
    assert authors == {b"write-user", b"admin-user"}


def _percentiles(took_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(took_ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_create_with_wait_p99(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Create-to-served: sequential creates with ``wait=true`` against a 2-worker ad server, and as the
    same-run reference the same number of creates without the wait (publish and audit only)."""
    auth = await keys(pg)
    count = int(os.environ.get("ADP_ADMIN_WAIT_COUNT", "50"))
    async with adserver(topics, tmp_path / "server.log") as url, manager_running(topics):
        await wait_workers_ready(url, WORKERS, timeout_s=60)
        settings = AdminConfig(adserver_urls=(url,), adserver_workers=WORKERS, wait_timeout_s=20)
        async with admin_client(topics, settings) as client:
            timings: dict[str, list[float]] = {"false": [], "true": []}
            for wait in ("false", "true"):
                for i in range(count):
                    started = time.perf_counter()
                    answer = await client.post(
                        f"/v1/campaigns?wait={wait}", json=body(f"p{wait}{i}"), headers=auth["write"]
                    )
                    timings[wait].append((time.perf_counter() - started) * 1000)
                    assert answer.status_code == (200 if wait == "true" else 202), answer.text
    ref50, ref99 = _percentiles(timings["false"])
    p50, p99 = _percentiles(timings["true"])
    print(
        f"\ncreate-with-wait over {count}: p50 {p50:.1f} ms, p99 {p99:.1f} ms; same-run reference, create "
        f"without wait: p50 {ref50:.1f} ms, p99 {ref99:.1f} ms; ratio p99 {p99 / ref99:.1f}x"
    )
    assert p99 < 20_000


async def test_refusals(topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis) -> None:
    """401/403/404/409/413/422 and a stop of a stopped campaign; no manager runs, so the 409 and the
    second stop are decided from the audit trail of writes not yet applied."""
    auth = await keys(pg)
    settings = AdminConfig(max_body_bytes=4096, wait_timeout_s=1)
    async with admin_client(topics, settings) as client:
        assert (await client.get("/v1/campaigns")).status_code == 401
        assert (
            await client.get("/v1/campaigns", headers={"X-API-Key": "adp_0123456789ab.x"})
        ).status_code == 401
        key = auth["read"]["Authorization"].split()[1]
        # The key with its last character changed (to another one: a key may already end in "A").
        bad = {"Authorization": "Bearer " + key[:-1] + ("B" if key.endswith("A") else "A")}
        assert (await client.get("/v1/campaigns", headers=bad)).status_code == 401
        assert (await client.post("/v1/campaigns", json=body("c1"), headers=auth["read"])).status_code == 403
        assert (await client.get("/v1/audit", headers=auth["write"])).status_code == 403
        assert (await client.get("/v1/campaigns/nope", headers=auth["read"])).status_code == 404
        assert (
            await client.patch("/v1/campaigns/nope", json={"cpc": "1"}, headers=auth["write"])
        ).status_code == 404
        assert (await client.post("/v1/campaigns/nope/stop", headers=auth["write"])).status_code == 404
        first = await client.post("/v1/campaigns", json=body("c1"), headers=auth["write"])
        assert first.status_code == 202, first.text
        again = await client.post("/v1/campaigns", json=body("c1"), headers=auth["write"])
        assert again.status_code == 409
        big = await client.post("/v1/campaigns", json=body("c2", text="x" * 5000), headers=auth["write"])
        assert big.status_code == 413
        bad_fields = await client.post(
            "/v1/campaigns", json={**body("c3"), "cpc": "abc", "target_gender": "X", "extra": "1"},
            headers=auth["write"],
        )  # fmt: skip
        assert bad_fields.status_code == 422
        assert set(bad_fields.json()["errors"]) == {"cpc", "target_gender", "extra"}
        not_json = await client.post("/v1/campaigns", content=b"{", headers=auth["write"])
        assert not_json.status_code == 422 and not_json.json()["errors"] == {"body": "not JSON"}
        assert (await client.get("/v1/campaigns?limit=0", headers=auth["read"])).status_code == 422
        # Stop before the manager has applied the create, then again: published once.
        stop = await client.post("/v1/campaigns/c1/stop", headers=auth["write"])
        assert stop.status_code == 202 and stop.json()["published"] is True
        stop_again = await client.post("/v1/campaigns/c1/stop", headers=auth["write"])
        assert stop_again.status_code == 200 and stop_again.json()["published"] is False
        # A wait that cannot complete (no manager): 504 with where the instruction went.
        waited = await client.patch("/v1/campaigns/c1?wait=true", json={"cpc": "0.5"}, headers=auth["write"])
        assert waited.status_code == 504 and waited.json()["offset"] >= 0
        # A revoked key stops working at once.
        from admin.keys import revoke_key

        assert await revoke_key(pg, "read-user")
        assert (await client.get("/v1/campaigns", headers=auth["read"])).status_code == 401
    records = await read_to_end(topics.kafka_bootstrap, topics.topics.instructions)
    assert len(records) == 3  # create, stop, update: nothing for the refusals


async def test_kafka_down_answers_503_and_writes_nothing(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    from dataclasses import replace

    auth = await keys(pg)
    down = replace(topics, kafka_bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens there
    from admin.app import create_app

    app = create_app(down, AdminConfig())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            answer = await client.post("/v1/campaigns", json=body("c1"), headers=auth["write"])
            assert answer.status_code == 503, answer.text
            # Reads do not need Kafka.
            assert (await client.get("/v1/campaigns", headers=auth["read"])).status_code == 200
    assert await pg.fetchval("SELECT count(*) FROM online_ads.audit") == 0
    assert await read_to_end(topics.kafka_bootstrap, topics.topics.instructions) == []


async def test_dlq_list_and_idempotent_replay(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    from adplatform.kafka import make_producer
    from ingest.manager import run_manager

    auth = await keys(pg)
    producer = make_producer(topics, linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(topics.topics.instructions, b'{"not": "an instruction"}', key=b"c9")
    finally:
        await producer.stop()
    await run_manager(topics, until_idle=True, idle_timeout_s=60)
    async with admin_client(topics) as client:
        listed = (await client.get("/v1/dlq", headers=auth["read"])).json()["items"]
        assert (
            len(listed) == 1 and listed[0]["reason"] == "missing field: text" and listed[0]["replay"] is None
        )
        path = f"/v1/dlq/{listed[0]['partition']}/{listed[0]['offset']}/replay"
        assert (await client.post(path, headers=auth["read"])).status_code == 403
        first = await client.post(path, headers=auth["write"])
        assert first.status_code == 202, first.text
        second = await client.post(path, headers=auth["admin"])
        assert second.status_code == 200
        assert second.json()["offset"] == first.json()["offset"] and second.json()["replayed_before"] is True
        assert second.json()["author"] == "write-user"
        assert (await client.post("/v1/dlq/0/999999/replay", headers=auth["write"])).status_code == 404
        listed = (await client.get("/v1/dlq", headers=auth["read"])).json()["items"]
        assert listed[0]["replay"]["offset"] == first.json()["offset"]
    records = await read_to_end(topics.kafka_bootstrap, topics.topics.instructions)
    assert [r.value for r in records] == [b'{"not": "an instruction"}'] * 2
    assert dict(records[-1].headers)["author"] == b"write-user"
    await asyncio.sleep(0)
