"""One slot-budget rule in two languages: the budget scripts' Lua slot roll against ``index.pacing``.

Random states (seeded) go through each script that rolls a slot (the pacer's step, a debit, a new campaign
state) on the real Redis; every result must be ``pacing.slot_budget`` at the slot's start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from adplatform import names
from adplatform.redis_client import is_blocked
from budget.budget_redis import BudgetStatus, BudgetStore, DebitRequest
from index import pacing
from index.campaign import Campaign

pytestmark = pytest.mark.redis

T = 1_800_000_000
SLOT_LENGTHS = (1, 7, 60, 600, 3600, 86_400)


@dataclass(frozen=True)
class Case:
    slot_s: int
    budget: int
    spent: int
    flight_start_s: int
    flight_end_s: int
    now_s: int

    def expected(self) -> tuple[int, bool]:
        """Slot budget and blocked after the roll, by the Python rule."""
        slot = pacing.slot_id(self.now_s, self.slot_s)
        start, _ = pacing.slot_bounds(slot, self.slot_s)
        sb = pacing.slot_budget(
            self.budget - self.spent, start, self.flight_start_s, self.flight_end_s, self.slot_s
        )
        return sb, self.spent >= self.budget or sb <= 0

    def campaign(self, cid: str) -> Campaign:
        return Campaign(
            campaign_id=cid, version=1, status="Active", action="Update Campaign", text="t", category="c",
            keywords="k", target_gender="All", target_age_start=0, target_age_end=0, target_city="All",
            target_state="All", target_country="India", target_income_bucket="All", target_device="All",
            cpc_micros=100, cpa_micros=1000, cpm_units=12_500, budget_micros=self.budget,
            flight_start_s=self.flight_start_s, flight_end_s=self.flight_end_s, slot_budget_micros=0,
        )  # fmt: skip


def random_case(rng: random.Random) -> Case:
    slot_s = rng.choice(SLOT_LENGTHS)
    start = T + rng.randint(-1_000_000, 1_000_000)  # rarely aligned
    length = rng.choice(
        (0, -rng.randint(1, 5 * slot_s), 1, slot_s - 1, slot_s, slot_s + 1, rng.randint(1, 300 * slot_s))
    )
    end = start + length
    now = rng.randint(min(start, end) - 3 * slot_s, max(start, end) + 3 * slot_s)
    budget = rng.choice((1, 7, rng.randint(1, 10**6), rng.randint(1, 10**15), 2**52))
    spent = rng.choice((0, budget, rng.randint(0, budget), rng.randint(0, budget + budget // 5 + 1)))
    return Case(slot_s, budget, spent, start, end, now)


async def _seed(client: aioredis.Redis, cid: str, case: Case) -> None:
    """A budget hash as the scripts leave it, in an older slot (version 0, so a new state applies)."""
    await client.hset(
        names.budget_key(cid),
        mapping={"version": 0, "budget": case.budget, "spent": case.spent,
                 "flight_start": case.flight_start_s, "flight_end": case.flight_end_s,
                 "slot": -5, "slot_budget": 3, "slot_spent": 2},
    )  # fmt: skip


async def test_the_lua_slot_roll_is_the_pacing_rule(redis_client: aioredis.Redis) -> None:
    rng = random.Random(13)
    stores = {s: BudgetStore(redis_client, slot_s=s) for s in SLOT_LENGTHS}
    checked = {"zero": 0, "positive": 0}
    for i in range(300):
        case = random_case(rng)
        store = stores[case.slot_s]
        sb, blocked = case.expected()
        checked["zero" if sb == 0 else "positive"] += 1
        paced, debited, renewed = f"pace-{i}", f"debit-{i}", f"init-{i}"
        for cid in (paced, debited, renewed):
            await _seed(redis_client, cid, case)

        assert await store.pace([paced], case.now_s) == {paced: blocked}, case
        (debit,) = await store.debit_many([DebitRequest(debited, "e", 0)], now_s=case.now_s, dedup_ttl_s=60)
        assert (debit.status, debit.charged_micros, debit.exhausted) == (BudgetStatus.CHARGED, 0, blocked)
        assert await store.init_campaigns([case.campaign(renewed)], case.now_s, new=()) == 1

        slot = pacing.slot_id(case.now_s, case.slot_s)
        for cid in (paced, debited, renewed):
            state = await store.get(cid)
            assert (state["slot"], state["slot_budget"], state["slot_spent"]) == (slot, sb, 0), (cid, case)
            assert state["spent"] == case.spent
            assert await is_blocked(redis_client, cid) == blocked, (cid, case)
    assert min(checked.values()) > 50  # both sides of the rule were exercised
