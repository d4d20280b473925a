"""``adplatform reset`` and the simulator's spend line on a Redis Cluster (the tests' own): a reset deletes
the platform's keys on every master and nothing else (a cluster has one database, shared with whatever
else the user keeps there); one node keeps its FLUSHDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from adplatform import names
from adplatform.cli.load import redis_spend
from adplatform.config import load_config
from adplatform.reset import describe, empty_redis
from budget.budget_redis import BudgetStore, DebitRequest
from budget.fcap_redis import FrequencyCapStore
from index.fcap import FrequencyCap
from tests.budget.test_budget_redis import SLOT_S, T0, campaign
from tests.index.index_factory import campaign as fcap_campaign
from tests.redis_cluster import SessionCluster

NO_DOTENV = Path("/nonexistent/.env")
IDS = [f"k{i}" for i in range(12)]
#: Keys of another application in the same cluster, on several slots (and so masters).
FOREIGN = ["other:{k1}", "other:{k5}", "app:x", "app:y", "adp_not_ours", "{adp}:camp:x"]


def _platform_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if k.startswith(names.REDIS_PREFIX)]


async def _all_keys(client: RedisCluster) -> list[str]:
    keys: list[str] = [k.decode() async for k in client.scan_iter(count=1000)]  # every master
    return sorted(keys)


@pytest.mark.redis_cluster
async def test_cluster_reset_deletes_only_the_platforms_keys_on_every_master(
    cluster_client: RedisCluster, test_cluster: SessionCluster
) -> None:
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    try:
        await store.init_campaigns([campaign(cid, budget=400) for cid in IDS], T0, new=set(IDS))
        # Dedup keys on every master, and blocked sets (slot budgets of 100 spent) in several slots.
        await store.debit_many([DebitRequest(cid, f"r-{cid}", 100) for cid in IDS], now_s=T0, dedup_ttl_s=600)
        caps = FrequencyCapStore(cluster_client)
        capped = fcap_campaign(campaign_id="capped", frequency_cap=FrequencyCap(count=2, window_s=60))
        for user in ("u1", "u2", "u3"):
            assert await caps.pick(user, [capped], T0) == 0
        await cluster_client.set(names.PACER_LEASE, "me")
        for key in FOREIGN:
            await cluster_client.set(key, "keep")
        assert await redis_spend(test_cluster.url, SLOT_S) != "n/a"

        before = await _all_keys(cluster_client)
        ours = _platform_keys(before)
        kinds = {k.split(":")[1] for k in ours}
        assert {"camp", "dedup", "fcap", "blocked", "pacer"} <= kinds, kinds
        masters = {cluster_client.get_node_from_key(k) for k in ours}
        assert len({n.name for n in masters if n is not None}) == 3  # the reset must visit each

        assert await empty_redis(cluster_client) == len(ours)
        assert await _all_keys(cluster_client) == sorted(FOREIGN)
        assert await store.spent_all() == {}
        assert await empty_redis(cluster_client) == 0  # nothing left to delete, still no FLUSHALL
        assert await _all_keys(cluster_client) == sorted(FOREIGN)
    finally:
        await store.aclose()


@pytest.mark.redis_cluster
async def test_simulator_spend_line_reads_every_master(
    cluster_client: RedisCluster, test_cluster: SessionCluster
) -> None:
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    try:
        await store.init_campaigns([campaign(cid, budget=4_000_000) for cid in IDS], T0, new=set(IDS))
        await store.debit_many(
            [DebitRequest(cid, f"r-{cid}", 250_000) for cid in IDS], now_s=T0, dedup_ttl_s=600
        )
    finally:
        await store.aclose()
    assert await redis_spend(test_cluster.url, SLOT_S) == "3.000000"  # 12 x 0.25 over three masters


def test_describe_names_what_each_topology_loses() -> None:
    one = load_config({"ADP_REDIS_URL": "redis://:secret@127.0.0.1:16379/3"}, dotenv=NO_DOTENV)
    assert "(FLUSHDB)" in describe(one) and "secret" not in describe(one)
    seeds = "redis+cluster://:secret@127.0.0.1:17101,127.0.0.1:17102"
    text = describe(load_config({"ADP_REDIS_URL": seeds}, dotenv=NO_DOTENV))
    assert "Redis Cluster" in text and "on every master" in text and "FLUSH" not in text
    assert "secret" not in text
