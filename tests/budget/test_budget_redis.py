"""The budget scripts on the real Redis: caps, de-duplication, refunds, slots, exhaustion signals."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from adplatform import names
from adplatform.config import Config
from adplatform.redis_client import RedisClient, is_blocked, open_bounded
from budget.budget_redis import BudgetStatus, BudgetStore, DebitRequest
from index import pacing
from index.campaign import Campaign
from tests.notices import budget_notices

pytestmark = pytest.mark.redis

SLOT_S = 600
T0 = 1_800_000_000 - 1_800_000_000 % SLOT_S  # a slot boundary


def campaign(cid: str = "c1", *, budget: int = 1_000, version: int = 1, slots: int = 4) -> Campaign:
    return Campaign(
        campaign_id=cid, version=version, status="Active", action="New Campaign", text="t", category="c",
        keywords="k", target_gender="All", target_age_start=0, target_age_end=0, target_city="All",
        target_state="All", target_country="India", target_income_bucket="All", target_device="All",
        cpc_micros=100, cpa_micros=1000, cpm_units=12_500, budget_micros=budget, flight_start_s=T0,
        flight_end_s=T0 + slots * SLOT_S, slot_budget_micros=budget // slots,
    )  # fmt: skip


@pytest.fixture
def store(redis_client: RedisClient) -> BudgetStore:
    return BudgetStore(redis_client, slot_s=SLOT_S)


async def test_init_sets_budget_and_slot_budget_and_ignores_old_versions(store: BudgetStore) -> None:
    assert await store.init_campaigns([campaign(version=5)], T0, new={"c1"}) == 1
    state = await store.get("c1")
    assert (state["budget"], state["spent"], state["slot_budget"], state["version"]) == (1000, 0, 250, 5)
    assert await store.init_campaigns([campaign(version=5, budget=9)], T0, new=()) == 0
    assert await store.init_campaigns([campaign(version=4, budget=9)], T0, new=()) == 0
    assert (await store.get("c1"))["budget"] == 1000


async def test_a_missing_budget_is_created_only_for_a_new_campaign(store: BudgetStore) -> None:
    """A campaign already in the books whose hash is missing (Redis lost its data) has an unknown spend:
    a new state of it must not create a budget with spent 0, which would let it spend its budget again."""
    assert await store.init_campaigns([campaign(version=5)], T0, new=()) == 0
    assert await store.get("c1") == {}
    refused = await store.debit("c1", "r1:click", 100, now_s=T0, dedup_ttl_s=60)
    assert (refused.status, refused.charged_micros) == (BudgetStatus.UNKNOWN, 0)
    # Rebuilt by reconciliation (the true spend), later states update it as usual, spend kept.
    assert await store.repair(campaign(version=5), expected_spent=None, spent=300, now_s=T0)
    assert await store.init_campaigns([campaign(version=6, budget=2_000)], T0, new=()) == 1
    state = await store.get("c1")
    assert (state["budget"], state["spent"], state["version"]) == (2_000, 300, 6)


async def test_debit_caps_at_slot_and_total_budget_and_dedups(
    store: BudgetStore, redis_client: aioredis.Redis
) -> None:
    await store.init_campaigns([campaign(budget=1000, slots=4)], T0, new={"c1"})
    first = await store.debit("c1", "r1:click", 200, now_s=T0, dedup_ttl_s=60)
    assert (first.status, first.charged_micros, first.exhausted) == (BudgetStatus.CHARGED, 200, False)
    again = await store.debit("c1", "r1:click", 200, now_s=T0, dedup_ttl_s=60)
    assert (again.status, again.charged_micros) == (BudgetStatus.DUPLICATE, 200)
    capped = await store.debit("c1", "r2:click", 200, now_s=T0, dedup_ttl_s=60)
    assert (capped.charged_micros, capped.exhausted) == (50, True)  # the slot budget is 250
    assert await is_blocked(redis_client, "c1")
    nothing = await store.debit("c1", "r3:click", 200, now_s=T0 + 1, dedup_ttl_s=60)
    assert nothing.charged_micros == 0
    # Next slot: the leftover of 750 spreads over the 3 remaining slots.
    nxt = await store.debit("c1", "r4:click", 100, now_s=T0 + SLOT_S, dedup_ttl_s=60)
    assert nxt.charged_micros == 100
    state = await store.get("c1")
    assert (state["spent"], state["slot_budget"], state["slot_spent"]) == (350, 250, 100)
    assert not await is_blocked(redis_client, "c1")


async def test_unknown_campaign_is_refused_and_refund_undoes_a_debit(store: BudgetStore) -> None:
    unknown = await store.debit("nope", "r1:click", 10, now_s=T0, dedup_ttl_s=60)
    assert (unknown.status, unknown.charged_micros) == (BudgetStatus.UNKNOWN, 0)
    await store.init_campaigns([campaign()], T0, new={"c1"})
    debit = await store.debit("c1", "r1:click", 100, now_s=T0, dedup_ttl_s=60)
    assert await store.refund("c1", "r1:click", debit)
    assert not await store.refund("c1", "r1:click", debit)  # idempotent
    state = await store.get("c1")
    assert (state["spent"], state["slot_spent"]) == (0, 0)
    retry = await store.debit("c1", "r1:click", 100, now_s=T0, dedup_ttl_s=60)
    assert (retry.status, retry.charged_micros) == (BudgetStatus.CHARGED, 100)


async def test_concurrent_debits_never_exceed_the_budget(
    redis_client: aioredis.Redis, base_config: Config
) -> None:
    client = open_bounded(
        base_config.redis_url, max_connections=64, timeout_s=10, socket_timeout_s=10, connect_timeout_s=5
    )
    store = BudgetStore(client, slot_s=SLOT_S)
    await store.init_campaigns([campaign(budget=1_000, slots=1)], T0, new={"c1"})
    results = await asyncio.gather(
        *(store.debit("c1", f"r{i}:click", 7, now_s=T0, dedup_ttl_s=60) for i in range(500))
    )
    await client.aclose()
    assert sum(r.charged_micros for r in results) == 1_000
    assert (await store.get("c1"))["spent"] == 1_000


async def test_exhaustion_is_published(store: BudgetStore, redis_client: RedisClient) -> None:
    await store.init_campaigns([campaign(budget=100, slots=1)], T0, new={"c1"})
    async with budget_notices(redis_client, "c1") as pubsub:
        await store.debit("c1", "r1:acquisition", 1_000, now_s=T0, dedup_ttl_s=60)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and message["data"] == b"block:c1"


async def test_repair_is_a_compare_and_set(store: BudgetStore) -> None:
    c = campaign(budget=1_000, slots=1)
    assert await store.repair(c, expected_spent=None, spent=300, now_s=T0)  # rebuilt after a wipe
    assert (await store.get("c1"))["spent"] == 300
    assert not await store.repair(c, expected_spent=None, spent=999, now_s=T0)
    assert not await store.repair(c, expected_spent=1, spent=999, now_s=T0)
    assert await store.repair(c, expected_spent=300, spent=400, now_s=T0)
    assert (await store.get("c1"))["spent"] == 400


class _Model:
    """The debit rules in plain Python: what a batch must do, debit by debit."""

    def __init__(self, campaigns: list[Campaign]) -> None:
        self.state = {
            c.campaign_id: {"budget": c.budget_micros, "spent": 0, "slot": -1, "sb": 0, "ss": 0,
                            "fs": c.flight_start_s, "fe": c.flight_end_s}
            for c in campaigns
        }  # fmt: skip
        self.dedup: dict[tuple[str, str], int] = {}

    def debit(self, cid: str, dedup_id: str, amount: int, now_s: int) -> tuple[int, int, bool]:
        if (cid, dedup_id) in self.dedup:
            return BudgetStatus.DUPLICATE, self.dedup[cid, dedup_id], False
        s = self.state.get(cid)
        if s is None:
            return BudgetStatus.UNKNOWN, 0, False
        slot = pacing.slot_id(now_s, SLOT_S)
        if s["slot"] != slot:
            sb = pacing.slot_budget(s["budget"] - s["spent"], slot * SLOT_S, s["fs"], s["fe"], SLOT_S)
            s.update(slot=slot, sb=sb, ss=0)
        charge = max(0, min(amount, s["budget"] - s["spent"], s["sb"] - s["ss"]))
        s["spent"] += charge
        s["ss"] += charge
        self.dedup[cid, dedup_id] = charge
        return BudgetStatus.CHARGED, charge, s["spent"] >= s["budget"] or s["ss"] >= s["sb"]


async def test_batches_apply_their_debits_one_by_one_as_the_rules_say(
    store: BudgetStore, redis_client: aioredis.Redis
) -> None:
    """Random batches (several campaigns, duplicates inside a batch and across batches, an unknown
    campaign, exhaustion mid-batch, slot boundaries, amounts near 2^53) against a plain model."""
    rng = random.Random(5)
    campaigns = [campaign("c1", budget=5_000, slots=6), campaign("c2", budget=400, slots=2),
                 campaign("big", budget=4_000_000_000_000_000, slots=3)]  # fmt: skip
    await store.init_campaigns(campaigns, T0, new={c.campaign_id for c in campaigns})
    model = _Model(campaigns)
    now, sent = T0, list[DebitRequest]()
    for _ in range(40):
        now += rng.choice((0, 0, 0, 1, SLOT_S // 3))
        batch = []
        for _ in range(rng.randint(1, 25)):
            if sent and rng.random() < 0.2:
                batch.append(rng.choice(sent))  # a retry of an earlier (or this batch's) request
                continue
            cid = rng.choice(("c1", "c1", "c2", "big", "nope"))
            amount = rng.choice((0, 1, 90, 333, 10**15)) if cid == "big" else rng.choice((0, 1, 90, 333))
            batch.append(DebitRequest(cid, f"r{len(sent)}", amount))
            sent.append(batch[-1])
        got = await store.debit_many(batch, now_s=now, dedup_ttl_s=600)
        want = [model.debit(r.campaign_id, r.dedup_id, r.amount_micros, now) for r in batch]
        assert [(d.status, d.charged_micros, d.exhausted) for d in got] == want
        for cid, s in model.state.items():
            if s["slot"] < 0:
                continue
            state = await store.get(cid)
            held = (state["spent"], state["slot_budget"], state["slot_spent"])
            assert held == (s["spent"], s["sb"], s["ss"])
            blocked = s["spent"] >= s["budget"] or s["ss"] >= s["sb"]
            assert await is_blocked(redis_client, cid) == blocked
    assert model.state["c2"]["spent"] == 400  # the run did exhaust a campaign
    assert model.state["big"]["spent"] > 10**15  # and charged amounts where a double's digits matter


@pytest.mark.single_node(reason="logical databases and their plain pub/sub channels are the single node's")
async def test_exhaustion_is_not_heard_on_another_databases_channel(
    store: BudgetStore, redis_client: aioredis.Redis
) -> None:
    """Pub/sub is server-wide: the session's database publishes on its own channel, never on database
    0's, where the user's ad servers listen."""
    db = int(redis_client.connection_pool.connection_kwargs.get("db") or 0)
    assert db != 0 and names.budget_channel_of(redis_client) != names.budget_channel(0)
    await store.init_campaigns([campaign(budget=100, slots=1)], T0, new={"c1"})
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(names.budget_channel(0), names.budget_channel(db))
    for _ in range(2):
        await pubsub.get_message(timeout=1)  # the subscribe confirmations
    await store.debit("c1", "r1:acquisition", 1_000, now_s=T0, dedup_ttl_s=60)
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    extra = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated
    assert message is not None and message["channel"] == names.budget_channel(db).encode()
    assert extra is None
