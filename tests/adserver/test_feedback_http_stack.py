"""``POST /ad/{request_id}/feedback`` through the app, and exhaustion across two real workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from adplatform import names
from adplatform.config import Config
from adplatform.kafka import read_to_end
from adplatform.wire import feedback_decoder
from budget.budget_redis import BudgetStore
from tests.adserver.serving import campaign_row, eventually, ingest, serve, serving
from tests.adserver.test_workers_stack import server  # noqa: F401  # the 2-worker server fixture

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

FEEDBACK = "/ad/{request_id}/feedback"


async def _events(config: Config) -> list[int]:
    records = await read_to_end(config.kafka_bootstrap, config.topics.feedback)
    return [feedback_decoder.decode(r.value or b"").expenditure_micros for r in records]


async def test_feedback_charges_once_caps_at_budget_and_refuses_bad_input(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # Budget 0.05 = 50,000 micros; a lone bidder pays the reserve, so charges are small: a few hundred
    # acquisitions exhaust the slot budget.
    await ingest(topics, [campaign_row("tiny", cpc="0.0010", cpa="0.0200", budget="0.05")], tmp_path)
    async with serving(topics) as (_, client):
        tokens = []
        for _ in range(300):
            response = await serve(client, "u1", device_type="iPhone", city="Mumbai", state="Maharashtra")
            assert response.status_code == 200
            tokens.append(response.json()["request_id"])
        gate = asyncio.Semaphore(200)

        async def send(token: str) -> int:
            async with gate:
                body = {"view": 1, "click": 1, "acquisition": 1}
                return (await client.post(FEEDBACK.format(request_id=token), json=body)).status_code

        statuses = await asyncio.gather(*(send(t) for t in tokens * 2))  # every feedback sent twice
        assert set(statuses) == {200}
        for bad, status in [
            ("dev1.AAAA.BBBB", 404),
            (tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB"), 404),
            ("x" * 600, 404),
        ]:
            response = await client.post(FEEDBACK.format(request_id=bad), json={"view": 1})
            assert response.status_code == status, response.text
        for body in (b"{", b'{"view": 2}', b"[]", b'{"view": 0, "click": 0, "acquisition": 0}'):
            response = await client.post(FEEDBACK.format(request_id=tokens[0]), content=body)
            assert response.status_code == 422 and "detail" in response.json()
        huge = await client.post(FEEDBACK.format(request_id=tokens[0]), content=b"{" + b" " * 10_000 + b"}")
        assert huge.status_code == 413
    state = await BudgetStore(redis_client, slot_s=topics.slot_s).get("tiny")
    events = await _events(topics)
    assert len(events) == 300  # the duplicates produced no event
    assert sum(events) == state["spent"] <= 50_000
    assert state["slot_spent"] == state["slot_budget"]  # ran out of its slot budget, exactly


async def test_feedback_outcomes_reach_metrics(topics: Config, pg: asyncpg.Pool, tmp_path: Path) -> None:
    await ingest(topics, [campaign_row("m")], tmp_path)
    async with serving(topics) as (_, client):
        served = await serve(client, "u1", device_type="iPhone", city="Mumbai", state="Maharashtra")
        token = served.json()["request_id"]
        body = {"view": 1, "click": 1, "acquisition": 1}
        for request_id, status in ((token, 200), (token, 200), ("dev1.AAAA.BBBB", 404)):
            response = await client.post(FEEDBACK.format(request_id=request_id), json=body)
            assert response.status_code == status, response.text
        lines = (await client.get("/metrics")).text.splitlines()
    events = await _events(topics)
    assert len(events) == 1
    for line in (
        "# TYPE adserver_feedback_accepted_total counter",
        "adserver_feedback_accepted_total 1.0",
        "adserver_feedback_duplicates_total 1.0",
        "adserver_feedback_rejected_tokens_total 1.0",
        "adserver_feedback_unavailable_total 0.0",
    ):
        assert line in lines, line
    charged = [
        line.split()[1] for line in lines if line.startswith("adserver_feedback_charged_micros_total ")
    ]
    assert [float(v) for v in charged] == [events[0]]


async def test_exhaustion_stops_serving_on_every_worker(
    server: str,  # noqa: F811
    topics: Config,
    pg: asyncpg.Pool,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    await ingest(topics, [campaign_row("only", cpc="0.0010", cpa="0.0500", budget="500")], tmp_path)
    params = {"device_type": "iPhone"}
    async with httpx.AsyncClient(base_url=server) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/ad/user/u1/serve", params=params)).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout_s=60, poll_s=0.1)
        token = (await client.get("/ad/user/u1/serve", params=params)).json()["request_id"]
        # Spend the whole slot budget at once: the next charge is capped and the campaign exhausted.
        store = BudgetStore(redis_client, slot_s=topics.slot_s)
        state = await store.get("only")
        await redis_client.hset(names.budget_key("only"), "slot_spent", state["slot_budget"] - 1)
        started = time.monotonic()
        response = await client.post(f"/ad/{token}/feedback", json={"view": 1, "click": 1, "acquisition": 1})
        assert response.status_code == 200

    # No keep-alive: a new connection per request, so the kernel spreads them over both workers.
    async with httpx.AsyncClient(base_url=server, limits=httpx.Limits(max_keepalive_connections=0)) as fresh:

        async def every_worker_stopped() -> bool:
            for _ in range(20):
                if (await fresh.get("/ad/user/u1/serve", params=params)).status_code != 404:
                    return False
            return True

        await eventually(every_worker_stopped, timeout_s=2, poll_s=0.001)
    elapsed_ms = (time.monotonic() - started) * 1000
    print(f"exhaustion reached every worker within {elapsed_ms:.0f} ms (20 fresh connections all 404)")
