"""Even pacing's tick on a Redis Cluster (the tests' own): the watched campaigns' budget hashes live on all
three masters; a tick reads each master's share in a pipeline of its own, concurrently with frequency-cap
checks on the same cluster client (redis-py's cluster pipeline broke under such concurrent use), and
reaches the same probabilities as the hashes read one by one."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster

from adplatform import names
from adserver.throttle import FIELDS, EvenThrottle, SlotState
from budget.budget_redis import BudgetStore, DebitRequest
from budget.fcap_redis import FrequencyCapStore
from index.fcap import FrequencyCap
from index.pacing import ManualClock
from tests.budget.test_budget_redis import SLOT_S, T0, campaign
from tests.index.index_factory import campaign as fcap_campaign

pytestmark = pytest.mark.redis_cluster

IDS = [f"k{i}" for i in range(12)]


async def test_tick_reads_every_master_while_caps_are_checked(cluster_client: RedisCluster) -> None:
    masters = {cluster_client.get_node_from_key(names.budget_key(cid)) for cid in IDS}
    assert len({n.name for n in masters if n is not None}) == 3
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    clock = ManualClock(T0 + 60)
    throttles = [EvenThrottle(slot_s=SLOT_S, clock=clock) for _ in range(3)]
    reference = EvenThrottle(slot_s=SLOT_S, clock=clock)
    caps = FrequencyCapStore(cluster_client)
    capped = fcap_campaign(campaign_id="capped", frequency_cap=FrequencyCap(count=1_000, window_s=60))
    try:
        await store.init_campaigns([campaign(cid, budget=40_000) for cid in IDS], T0, new=set(IDS))
        for t in [*throttles, reference]:
            for cid in [*IDS, "never-initialised"]:
                t.watch(cid)

        async def check_caps() -> None:
            for n in range(40):
                await caps.pick(f"u{n % 7}", [capped], clock.now())

        for tick in range(5):
            # Spend differs per campaign and per tick, so the rate estimates differ too.
            debits = [
                DebitRequest(cid, f"t{tick}-{cid}", 10 * (i + 1) * (tick % 3)) for i, cid in enumerate(IDS)
            ]
            await store.debit_many(debits, now_s=clock.now(), dedup_ttl_s=600)
            await asyncio.gather(*(t.tick(cluster_client) for t in throttles), check_caps(), check_caps())
            for cid in IDS:  # the reference: each hash read alone
                reply = await cluster_client.hmget(names.budget_key(cid), list(FIELDS))
                raw = [v.encode() if isinstance(v, str) else v for v in reply]  # bytes: no decode_responses
                reference.update(cid, SlotState.parse(raw), clock.now())
            for t in throttles:
                assert t.probability == reference.probability
            clock.advance(1.0)
        assert set(reference.probability) == set(IDS)  # a campaign without a budget is not paced
        assert any(p < 1.0 for p in reference.probability.values())
    finally:
        await store.aclose()
        for t in throttles:
            await t.aclose()


async def test_run_keeps_probabilities_when_the_cluster_is_unreachable() -> None:
    """A cluster whose seeds do not answer: the tick fails, ``run`` logs and keeps going until cancelled,
    and its per-master clients are closed."""
    from adplatform.redis_client import open_redis

    client = open_redis("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.2)
    assert isinstance(client, RedisCluster)
    throttle = EvenThrottle(slot_s=SLOT_S, tick_s=0.01)
    throttle.watch("k1")
    throttle.probability["k1"] = 0.5
    task = asyncio.create_task(throttle.run(client))
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert throttle.probability == {"k1": 0.5}
    await client.aclose()
