"""Explain and diagnosis on the real stack: campaigns seeded producer → manager, an ad server sampling every
request (rate 1.0), and the admin service with its own copy of the index and the sample window."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from admin.app import create_app
from admin.insight import Insight
from admin.settings import AdminConfig
from adplatform.config import Config
from adplatform.params import ANONYMOUS_USER_ID
from adplatform.sample import RequestSample, user_digest
from adserver.sync.sampler import RequestSampler
from budget.budget_redis import BudgetStore
from index.money import cpm_units_to_decimal
from tests.admin.helpers import keys
from tests.adserver.serving import campaign_row, eventually, ingest, serve, serving, state_of

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.kafka]

CITIES = ("Mumbai", "Pune", "Delhi")
DEVICES = ("iPhone", "Android Mobile")


@contextlib.asynccontextmanager
async def admin_app(config: Config) -> AsyncIterator[tuple[httpx.AsyncClient, Insight]]:
    """The admin app with its real lifespan, in process; waits until its index holds every campaign."""
    app = create_app(config, AdminConfig(wait_timeout_s=5))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin", timeout=60) as client:
            insight = app.state.ref.state.insight
            assert isinstance(insight, Insight)
            yield client, insight


def _random_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        pick = rng.random
        rows.append(
            campaign_row(
                f"r{i:03d}",
                # Mostly distinct bids, a few equal ones: ties happen, but most auctions have one winner.
                cpc=f"0.{rng.randrange(5, 40):04d}",
                cpa=rng.choice(("0.0100", "0.0200", "0.0300")),
                city=rng.choice((*CITIES, "All", "All")),
                device=rng.choice((*DEVICES, "All", "All")),
                gender=rng.choice(("M", "F", "All", "All")),
                age=(0, 0) if pick() < 0.6 else (20, 40),
                income=rng.choice(("L", "H", "All", "All")),
            )
        )
    return rows


def _random_query(rng: random.Random) -> dict[str, str]:
    query = {"city": rng.choice(CITIES), "device_type": rng.choice(DEVICES)}
    if rng.random() < 0.8:
        query["gender"] = rng.choice(("M", "F"))
    if rng.random() < 0.7:
        query["age"] = str(rng.randint(15, 50))
    if rng.random() < 0.7:
        query["income_bucket"] = rng.choice(("L", "M", "H"))
    return query


async def _ready(insight: Insight, campaigns: int) -> None:
    async def check() -> bool:
        return insight.ready and sum(1 for _ in insight.index.campaigns()) == campaigns

    await eventually(check, timeout_s=60, poll_s=0.05)


async def test_explain_agrees_with_the_live_auction_on_random_requests(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    rng = random.Random(14)
    rows = _random_rows(rng, 60)
    await ingest(topics, rows, tmp_path)
    config = dataclasses.replace(topics, request_sample_rate=1.0)
    auth = (await keys(pg))["read"]
    async with serving(config) as (app, adserver), admin_app(config) as (admin, insight):
        await _ready(insight, len(rows))
        explained: dict[str, dict[str, Any]] = {}
        served: dict[str, str | None] = {}
        ties = no_fill = 0
        for i in range(120):
            user, query = f"user-{i}", _random_query(rng)
            response = await admin.get("/v1/explain", params={"user_id": user, **query}, headers=auth)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["campaigns"] == len(rows)
            got = await serve(adserver, user, **query)
            assert got.status_code in (200, 404), got.text
            winner = got.json()["campaign_id"] if got.status_code == 200 else None
            explained[user], served[user] = body, winner
            if body["tied"]:
                ties += 1
                assert winner in body["tied"]
            else:
                no_fill += winner is None
                assert winner == body["winner"], (query, body["winner"], winner)
        # The price: each served request's sample carries the live auction's clearing price.
        await _shipped(state_of(app).sampler, 120)
        assert await insight.window.catch_up(10)
        by_user: dict[str, RequestSample] = {s.user: s for s in insight.window.samples}
        key = config.token_keys[0].secret
        for user, body in explained.items():
            sample = by_user[user_digest(user, key, anonymous_id=ANONYMOUS_USER_ID)]
            assert sample.winner == served[user]
            if body["clearing"] is None:
                assert sample.clearing_cpm_units is None
                continue
            assert sample.clearing_cpm_units is not None
            assert str(cpm_units_to_decimal(sample.clearing_cpm_units)) == body["clearing"]["auction_cpm"]
            if not body["tied"]:
                assert sample.runner_up == body["runner_up"]
                assert str(sample.auction_cpc) == body["clearing"]["auction_cpc"]
        print(f"explain vs live: 120 requests, {ties} ties, {no_fill} no-fills")
        assert 120 - ties - no_fill >= 60  # enough single-winner auctions compared


async def test_diagnosis_names_why_a_campaign_loses(
    topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    live = {"starts_in": timedelta(minutes=-30), "lasts": timedelta(hours=2)}
    rows = [
        campaign_row("rich", cpc="0.0050", **live),  # type: ignore[arg-type]
        campaign_row("cheap", cpc="0.0010", **live),  # type: ignore[arg-type]
        campaign_row("pune", cpc="0.0090", city="Pune", **live),  # type: ignore[arg-type]
        campaign_row("spent", cpc="0.0100", budget="1", **live),  # type: ignore[arg-type]
    ]
    await ingest(topics, rows, tmp_path)
    # Exhaust "spent": one charge larger than any budget is capped at what is left, then it is blocked.
    budgets = BudgetStore(redis_client, slot_s=topics.slot_s)
    debit = await budgets.debit("spent", "exhaust", 10**9, now_s=time.time(), dedup_ttl_s=60)
    assert debit.exhausted and debit.charged_micros > 0
    config = dataclasses.replace(topics, request_sample_rate=1.0)
    auth = (await keys(pg))["read"]
    rng = random.Random(5)
    async with serving(config) as (app, adserver), admin_app(config) as (admin, insight):
        await _ready(insight, len(rows))
        await eventually(lambda: _has(insight.index.blocked, "spent"), timeout_s=30, poll_s=0.05)
        await eventually(lambda: _has(state_of(app).index.blocked, "spent"), timeout_s=30, poll_s=0.05)
        for i in range(200):
            query = {**_random_query(rng), "city": "Mumbai"}
            response = await serve(adserver, f"u{i}", **query)
            assert response.status_code == 200 and response.json()["campaign_id"] == "rich"
        await _shipped(state_of(app).sampler, 200)
        explained = (await admin.get("/v1/explain", params={"city": "Mumbai"}, headers=auth)).json()
        verdicts = {v["campaign_id"]: v for v in explained["verdicts"]}
        assert verdicts["spent"]["reason"] == "blocked" and "spent" in verdicts["spent"]["detail"]
        assert (verdicts["pune"]["reason"], verdicts["pune"]["attribute"]) == ("targeting", "city")
        assert verdicts["cheap"]["reason"] == "outbid" and explained["winner"] == "rich"

        async def diagnosis(cid: str) -> dict[str, Any]:
            response = await admin.get(f"/v1/campaigns/{cid}/diagnosis", headers=auth)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert body["samples"] >= 200
            return body

        pune, spent, cheap, rich = [await diagnosis(c) for c in ("pune", "spent", "cheap", "rich")]
        assert rich["won"]["share"] >= 0.99
        # Wrong city: every sampled loss is a request its targeting rejected, on the city.
        assert pune["won"]["count"] == pune["matched"]["count"] == 0
        assert (
            pune["top_mismatch"]["attribute"] == "city" and pune["top_mismatch"]["campaign_value"] == "Pune"
        )
        assert pune["top_mismatch"]["count"] >= 0.9 * pune["samples"]
        # Exhausted budget: matched every request, lost each one to its blocked budget.
        assert spent["lost_by_reason"]["blocked"]["share"] >= 0.9 and spent["won"]["count"] == 0
        assert any("spent" in s for s in spent["static"])
        # Outbid: matched, lost on price.
        assert cheap["lost_by_reason"]["outbid"]["share"] >= 0.9 and cheap["won"]["count"] == 0
        missing = await admin.get("/v1/campaigns/nope/diagnosis", headers=auth)
        assert missing.status_code == 404
        assert (await admin.get("/v1/explain", params={"age": "x"}, headers=auth)).status_code == 422
        assert (await admin.get("/v1/explain")).status_code == 401


async def _shipped(sampler: RequestSampler, count: int) -> None:
    async def check() -> bool:
        return sampler.sent >= count

    await eventually(check, timeout_s=30, poll_s=0.05)
    assert (sampler.sampled, sampler.dropped, sampler.failed) == (sampler.sent, 0, 0)


async def _has(blocked: set[str], campaign_id: str) -> bool:
    return campaign_id in blocked
