"""The slot pacer on the real Redis: one pacer acts per slot, and a new slot unblocks a campaign."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from adplatform.redis_client import is_blocked
from budget.budget_redis import BudgetStore
from budget.pacer import Pacer
from index.campaign import Campaign
from index.pacing import ManualClock
from tests.notices import budget_notices

pytestmark = pytest.mark.redis

SLOT_S = 60
T0 = 1_800_000_000 - 1_800_000_000 % SLOT_S


def campaign(cid: str) -> Campaign:
    return Campaign(
        campaign_id=cid, version=1, status="Active", action="New Campaign", text="t", category="c",
        keywords="k", target_gender="All", target_age_start=0, target_age_end=0, target_city="All",
        target_state="All", target_country="India", target_income_bucket="All", target_device="All",
        cpc_micros=100, cpa_micros=1000, cpm_units=12_500, budget_micros=1_000, flight_start_s=T0,
        flight_end_s=T0 + 10 * SLOT_S, slot_budget_micros=100,
    )  # fmt: skip


async def test_only_one_of_several_pacers_acts_per_slot(redis_client: aioredis.Redis) -> None:
    store = BudgetStore(redis_client, slot_s=SLOT_S)
    await store.init_campaigns([campaign("p1"), campaign("p2")], T0, new={"p1", "p2"})
    clock = ManualClock(T0 + 1)
    pacers = [Pacer(redis_client, slot_s=SLOT_S, clock=clock) for _ in range(4)]
    results = await asyncio.gather(*(p.pace_slot() for p in pacers))
    assert sum(r.acted for r in results) == 1
    assert next(r for r in results if r.acted).campaigns == 2
    clock.advance(SLOT_S)
    results = await asyncio.gather(*(p.pace_slot() for p in pacers))
    assert sum(r.acted for r in results) == 1


async def test_a_new_slot_unblocks_a_campaign_that_spent_its_slot_budget(
    redis_client: aioredis.Redis,
) -> None:
    store = BudgetStore(redis_client, slot_s=SLOT_S)
    await store.init_campaigns([campaign("p1")], T0, new={"p1"})
    debit = await store.debit("p1", "e1", 500, now_s=T0 + 5, dedup_ttl_s=60)
    assert (debit.charged_micros, debit.exhausted) == (100, True)
    assert await is_blocked(redis_client, "p1")
    async with budget_notices(redis_client, "p1") as pubsub:
        pacer = Pacer(redis_client, slot_s=SLOT_S, clock=ManualClock(T0 + SLOT_S + 1))
        result = await pacer.pace_slot()
        assert result.acted and result.blocked == 0
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and message["data"] == b"unblock:p1"
    state = await store.get("p1")
    # 900 left over 9 remaining slots.
    assert (state["slot_budget"], state["slot_spent"]) == (100, 0)
    assert not await is_blocked(redis_client, "p1")
