"""Serving on the real stack: campaigns ingested producer → manager, served only where eligible.

Every campaign has its own bid, so each request's answer is the highest-bidding eligible campaign: a
request that a campaign wrongly matched would return it instead of the expected one.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adserver.token import TokenSigner
from index.money import cpm_units
from ingest.generator import User
from ingest.users_postgres import write_users
from tests.adserver.serving import (
    ANONYMOUS,
    campaign_row,
    eventually,
    ingest,
    serve,
    served_id,
    serving,
    state_of,
)
from tests.notices import announce, set_blocked

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def stack(topics: Config, pg: asyncpg.Pool, redis_client: aioredis.Redis) -> Config:
    """This test's topics, on an emptied database and a flushed Redis."""
    return topics


#: Highest bid first. F and G bid the most but are outside their flights.
CAMPAIGNS = [
    campaign_row("F-not-started", cpc="0.0100", starts_in=timedelta(hours=2), lasts=timedelta(hours=1)),
    campaign_row("G-ended", cpc="0.0100", starts_in=timedelta(hours=-3), lasts=timedelta(hours=2)),
    campaign_row("A-mumbai", cpc="0.0090", city="Mumbai", state="Maharashtra"),
    campaign_row("B-iphone", cpc="0.0080", device="iPhone"),
    campaign_row("C-female", cpc="0.0070", gender="F"),
    campaign_row("D-age-20-30", cpc="0.0060", age=(20, 30)),
    campaign_row("E-high-income", cpc="0.0050", income="H"),
    campaign_row("H-karnataka", cpc="0.0040", state="Karnataka"),
    campaign_row("I-nepal", cpc="0.0030", country="Nepal"),
    campaign_row("J-macbook-male-low", cpc="0.0020", device="Macbook", gender="M", income="L"),
    campaign_row("Z-everyone", cpc="0.0010"),
]
PUNE = {"city": "Pune", "state": "Maharashtra", "device_type": "Android Mobile"}

CASES: list[tuple[str, dict[str, str], str | None]] = [
    # The privacy user: demographics ignored even when sent; location and device still count.
    (
        ANONYMOUS,
        {"city": "Mumbai", "device_type": "iPhone", "age": "25", "gender": "F", "income_bucket": "H"},
        "A-mumbai",
    ),
    (ANONYMOUS, {"city": "Pune", "state": "Maharashtra", "device_type": "iPhone"}, "B-iphone"),
    (ANONYMOUS, {**PUNE, "gender": "F", "age": "25", "income_bucket": "H"}, "Z-everyone"),
    (
        ANONYMOUS,
        {"city": "Mumbai", "device_type": "Macbook", "gender": "M", "income_bucket": "L"},
        "A-mumbai",
    ),
    ("u1", {**PUNE, "gender": "F"}, "C-female"),
    ("u1", {**PUNE, "gender": "M", "age": "25"}, "D-age-20-30"),
    ("u1", {**PUNE, "gender": "M", "age": "20"}, "D-age-20-30"),  # bounds are inclusive
    ("u1", {**PUNE, "gender": "M", "age": "30"}, "D-age-20-30"),
    ("u1", {**PUNE, "gender": "M", "age": "31", "income_bucket": "H"}, "E-high-income"),
    ("u1", {**PUNE, "gender": "M", "age": "19", "income_bucket": "L"}, "Z-everyone"),
    ("u1", {**PUNE, "device_type": "Macbook", "gender": "M", "income_bucket": "L"}, "J-macbook-male-low"),
    ("u1", {**PUNE, "device_type": "Macbook", "gender": "M", "income_bucket": "M"}, "Z-everyone"),
    # Location hierarchy: a city implies its state and country; the table wins over a wrong state.
    ("u1", {"city": "Bangalore", "device_type": "Android Mobile"}, "H-karnataka"),
    ("u1", {"state": "Karnataka", "device_type": "Android Mobile"}, "H-karnataka"),
    ("u1", {"city": "Mumbai", "state": "Karnataka", "device_type": "Android Mobile"}, "A-mumbai"),
    ("u1", {"city": "mumbai", "device_type": "android mobile"}, "A-mumbai"),  # case-insensitive
    ("u1", {"city": "Kathmandu", "country": "Nepal", "device_type": "Android Mobile"}, "I-nepal"),
    ("u1", {"city": "Colombo", "country": "Sri Lanka", "device_type": "Android Mobile"}, None),
    # Absent parameters are unknown: only All matches them.
    ("u1", {}, "Z-everyone"),
]


async def test_served_only_where_eligible(stack: Config, tmp_path: Path) -> None:
    await ingest(stack, CAMPAIGNS, tmp_path)
    async with serving(stack) as (app, client):
        assert len(state_of(app).index) == len(CAMPAIGNS) - 1  # the ended flight is pruned at bootstrap
        for user_id, params, expected in CASES:
            assert await served_id(client, user_id, **params) == expected, (user_id, params)


async def test_profile_fills_what_the_query_omits(stack: Config, tmp_path: Path) -> None:
    profile = User(
        user_id="p-1", name="Isha Nair", age=25, gender="F", income_bucket="H", device_type="iPhone",
        city="Pune", state="Maharashtra", country="India", email="isha@example.com",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    await write_users(stack.pg_dsn, [profile])
    await ingest(stack, CAMPAIGNS, tmp_path)
    async with serving(stack) as (_, client):
        assert await served_id(client, "p-1") == "B-iphone"  # device, location from the profile
        assert await served_id(client, "p-1", device_type="Android Mobile") == "C-female"
        assert await served_id(client, "p-1", device_type="Android Mobile", gender="M") == "D-age-20-30"
        assert await served_id(client, "p-1", city="Mumbai") == "A-mumbai"  # the query's location wins
        assert await served_id(client, "p-2") == "Z-everyone"  # unknown user: nothing known about them


async def test_request_id_is_signed_and_carries_second_price(stack: Config, tmp_path: Path) -> None:
    rows = [
        campaign_row("winner", cpc="0.0020", cpa="0.0400", device="iPhone"),
        campaign_row("runner-up", cpc="0.0010", cpa="0.0300"),
    ]
    await ingest(stack, rows, tmp_path)
    signer = TokenSigner(stack.token_keys, ttl_s=stack.token_ttl_s)
    bid, second = cpm_units(2_000, 40_000), cpm_units(1_000, 30_000)
    async with serving(stack) as (_, client):
        response = await serve(client, "u-42", device_type="iPhone", city="Delhi", age="33", gender="M")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"text", "request_id", "campaign_id", "category"}
        assert (
            body["campaign_id"] == "winner" and body["text"] == "ad of winner" and body["category"] == "Tests"
        )
        token = signer.verify(body["request_id"], now_ms=int(datetime.now(UTC).timestamp() * 1000))
        assert (token.campaign_id, token.user_id, token.user_age, token.user_city) == (
            "winner",
            "u-42",
            33,
            "Delhi",
        )
        assert token.clearing_cpm_units == second
        assert token.auction_cpc_micros == 2_000 * second // bid < 2_000
        assert token.auction_cpa_micros == 40_000 * second // bid < 40_000
        # A lone bidder pays the reserve.
        lone = await serve(client, "u-42", device_type="Android Mobile")
        assert lone.json()["campaign_id"] == "runner-up"
        token = signer.verify(lone.json()["request_id"], now_ms=int(datetime.now(UTC).timestamp() * 1000))
        assert token.clearing_cpm_units == stack.reserve_cpm_units
        # Sealed: none of what it carries is readable, and tampering breaks the AEAD tag.
        kid, sealed = body["request_id"].split(".")
        decoded = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        for value in (b"winner", b"u-42", b"Delhi", b"iPhone"):
            assert value not in decoded and value not in sealed.encode()
        with pytest.raises(ValueError):
            signer.verify(
                f"{kid}.{sealed[:-2]}{'BA' if sealed.endswith('AA') else 'AA'}", now_ms=token.issued_ms
            )


async def test_blocked_campaigns_are_skipped_and_restored(
    stack: Config, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await ingest(stack, [campaign_row("top", cpc="0.0050"), campaign_row("next", cpc="0.0010")], tmp_path)
    await set_blocked(redis_client, "top", True)  # blocked before start: loaded from the set
    async with serving(stack) as (app, client):
        state = state_of(app)

        async def connected() -> bool:
            return state.blocked.connected

        async def serves(campaign_id: str) -> bool:
            return await served_id(client) == campaign_id

        await eventually(connected, timeout_s=5)
        assert await served_id(client) == "next"
        await set_blocked(redis_client, "top", False)
        await announce(redis_client, "top", "unblock:top")
        await eventually(lambda: serves("top"), timeout_s=2)
        await announce(redis_client, "top", "block:top")
        await eventually(lambda: serves("next"), timeout_s=2)
        await announce(redis_client, "top", "garbage")  # counted, ignored
        await announce(redis_client, "top", "unblock:top")
        await eventually(lambda: serves("top"), timeout_s=2)
        assert state.blocked.bad_messages == 1
