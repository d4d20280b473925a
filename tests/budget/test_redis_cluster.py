"""The budget scripts, frequency caps and exhaustion notices on a real Redis Cluster (3 masters + 3 replicas,
the tests' own: ``tests.redis_cluster``): every call single-slot, batches split per slot and merged in
order, SCAN over every master, sharded notices, replica acknowledgement, and a master failover."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from adplatform.blocked import BlockedListener
from adplatform.redis_client import (
    RedisLayout,
    RedisUrlError,
    blocked_members,
    cluster_seeds,
    is_blocked,
    is_cluster_url,
    open_redis,
)
from budget.budget_redis import BudgetStatus, BudgetStore, DebitRequest, DedupEntry
from budget.fcap_redis import FrequencyCapStore
from budget.pacer import Pacer
from budget.slot_call import ReplicationError, WaitPolicy
from devstack import redis_cluster
from index.fcap import FrequencyCap
from index.pacing import ManualClock
from tests.budget.test_budget_redis import SLOT_S, T0, _Model, campaign
from tests.index.index_factory import campaign as fcap_campaign
from tests.redis_cluster import SessionCluster

pytestmark = pytest.mark.redis_cluster

#: Campaign ids spread over the cluster's slots (and so its three masters).
IDS = [f"k{i}" for i in range(12)]


def _masters_of(client: RedisCluster, ids: list[str]) -> set[str]:
    nodes = {client.get_node_from_key(f"adp:camp:{{{cid}}}") for cid in ids}
    return {n.name for n in nodes if n is not None}


async def test_batches_across_slots_follow_the_rules_debit_by_debit(cluster_client: RedisCluster) -> None:
    """Random batches over 12 campaigns on all three masters (retries inside and across batches, an
    unknown campaign, exhaustion mid-batch, slot boundaries) against the plain model: results in order."""
    assert len(_masters_of(cluster_client, IDS)) == 3
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    campaigns = [campaign(cid, budget=300 + 100 * i, slots=3) for i, cid in enumerate(IDS)]
    await store.init_campaigns(campaigns, T0, new=set(IDS))
    model = _Model(campaigns)
    rng = random.Random(7)
    now, sent = T0, list[DebitRequest]()
    for _ in range(30):
        now += rng.choice((0, 0, 1, SLOT_S // 2))
        batch: list[DebitRequest] = []
        for _ in range(rng.randint(1, 40)):
            if sent and rng.random() < 0.2:
                batch.append(rng.choice(sent))
                continue
            batch.append(
                DebitRequest(rng.choice([*IDS, "nope"]), f"r{len(sent)}", rng.choice((0, 1, 37, 90)))
            )
            sent.append(batch[-1])
        got = await store.debit_many(batch, now_s=now, dedup_ttl_s=600)
        want = [model.debit(r.campaign_id, r.dedup_id, r.amount_micros, now) for r in batch]
        assert [(d.status, d.charged_micros, d.exhausted) for d in got] == want
    for cid, s in model.state.items():
        assert (await store.get(cid))["spent"] == s["spent"]
        blocked = s["spent"] >= s["budget"] or s["ss"] >= s["sb"]
        assert await is_blocked(cluster_client, cid) == blocked
    assert await store.spent_all() == {cid: s["spent"] for cid, s in model.state.items()}  # every master
    assert any(s["spent"] == s["budget"] for s in model.state.values())


async def test_concurrent_debits_never_exceed_the_budget(cluster_client: RedisCluster) -> None:
    store = BudgetStore(cluster_client, slot_s=SLOT_S, wait=WaitPolicy(replicas=1, timeout_ms=2000))
    await store.init_campaigns(
        [campaign(cid, budget=1_000, slots=1) for cid in IDS[:3]], T0, new=set(IDS[:3])
    )
    results = await asyncio.gather(
        *(
            store.debit_many(
                [DebitRequest(IDS[i % 3], f"r{i}", 7), DebitRequest(IDS[(i + 1) % 3], f"s{i}", 5)],
                now_s=T0, dedup_ttl_s=60,
            )
            for i in range(300)
        )
    )  # fmt: skip
    charged = {cid: 0 for cid in IDS[:3]}
    for pair in results:
        for req, debit in zip(("r", "s"), pair, strict=True):
            assert req and debit.status == BudgetStatus.CHARGED
    for cid in IDS[:3]:
        charged[cid] = (await store.get(cid))["spent"]
    assert charged == {cid: 1_000 for cid in IDS[:3]}
    assert await blocked_members(cluster_client) == set(IDS[:3])


async def test_a_wait_that_falls_short_refunds_the_batch(cluster_client: RedisCluster) -> None:
    """Two replicas asked, one exists: the debits run, WAIT says 1, the batch is refunded and refused."""
    store = BudgetStore(cluster_client, slot_s=SLOT_S, wait=WaitPolicy(replicas=2, timeout_ms=50))
    await store.init_campaigns([campaign(cid, budget=100, slots=1) for cid in IDS], T0, new=set(IDS))
    with pytest.raises(ReplicationError) as caught:
        await store.debit_many([DebitRequest(cid, "e1", 100) for cid in IDS], now_s=T0, dedup_ttl_s=60)
    assert isinstance(caught.value, RedisError)  # feedback answers 503 to what it cannot charge
    assert await store.spent_all() == dict.fromkeys(IDS, 0)
    assert await blocked_members(cluster_client) == set()
    ok = BudgetStore(cluster_client, slot_s=SLOT_S, wait=WaitPolicy(replicas=1, timeout_ms=2000))
    again = await ok.debit_many([DebitRequest(cid, "e1", 100) for cid in IDS], now_s=T0, dedup_ttl_s=60)
    assert [d.status for d in again] == [BudgetStatus.CHARGED] * len(IDS)  # the refund freed the ids


async def test_notices_reach_a_listener_of_every_shard_and_the_pacer_scans_every_master(
    test_cluster: SessionCluster, cluster_client: RedisCluster
) -> None:
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    assert RedisLayout.of(cluster_client).publish_command == "SPUBLISH"
    await store.init_campaigns([campaign(cid, budget=100, slots=2) for cid in IDS], T0, new=set(IDS))
    await store.debit(IDS[0], "before", 100, now_s=T0, dedup_ttl_s=60)  # blocked before the listener starts
    blocked: set[str] = set()
    listener = BlockedListener(test_cluster.url, blocked)
    task = asyncio.create_task(listener.run())
    try:
        await _until(lambda: listener.connected)
        assert blocked == {IDS[0]}  # loaded from the per-slot sets
        await store.debit_many([DebitRequest(cid, "e", 100) for cid in IDS], now_s=T0, dedup_ttl_s=60)
        await _until(lambda: blocked == set(IDS))  # from SPUBLISH on all three masters
        pacer = Pacer(cluster_client, slot_s=SLOT_S, clock=ManualClock(T0 + SLOT_S))
        assert sorted(await pacer.campaign_ids()) == sorted(IDS)
        result = await pacer.pace_slot()
        assert (result.acted, result.campaigns, result.blocked) == (True, len(IDS), 0)
        await _until(lambda: blocked == set())  # the new slot's budgets unblock every one
        assert (listener.bad_messages, listener.messages) == (0, 2 * len(IDS) - 1)  # k0 was blocked already
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_frequency_caps_on_the_cluster(cluster_client: RedisCluster) -> None:
    store = FrequencyCapStore(cluster_client)
    capped = [fcap_campaign(campaign_id=c, frequency_cap=FrequencyCap(count=2, window_s=3600)) for c in "ab"]
    now_s = 1_757_764_800
    for user in ("u1", "u2", "u3"):  # users on different slots
        assert [await store.pick(user, capped, now_s) for _ in range(5)] == [0, 0, 1, 1, -1]
    picks = await asyncio.gather(*(store.pick("u9", capped, now_s) for _ in range(20)))
    assert sorted(picks) == [-1] * 16 + [0, 0, 1, 1]


async def test_a_new_clients_first_burst_goes_to_the_right_master(
    test_cluster: SessionCluster, cluster_client: RedisCluster
) -> None:
    """64 cap checks at once as a new client's first calls, each to the user's master. redis-py 8.1 alone
    routed a call made before it had the slot map to a random master (MOVED), and every 5th MOVED closed
    every connection of the client under the other calls (``AttributeError`` in their handshakes). Counted
    by the nodes themselves: no MOVED."""
    nodes = [aioredis.Redis(host="127.0.0.1", port=port) for port in test_cluster.ports]
    try:
        for node in nodes:
            await node.config_resetstat()
        client = open_redis(test_cluster.url, socket_timeout=5)
        try:
            store = FrequencyCapStore(client)
            capped = [
                fcap_campaign(campaign_id=c, frequency_cap=FrequencyCap(count=2, window_s=3600)) for c in "ab"
            ]
            picks = await asyncio.gather(*(store.pick("burst", capped, 1_757_764_800) for _ in range(64)))
        finally:
            await client.aclose()
        moved = [(await node.info("errorstats")).get("errorstat_MOVED", {}).get("count", 0) for node in nodes]
    finally:
        for node in nodes:
            await node.aclose()
    assert sorted(picks) == [-1] * 60 + [0, 0, 1, 1]
    assert sum(moved) == 0, f"MOVED replies per node: {moved}"


async def test_a_master_failover_loses_no_answered_charge_and_charges_nothing_twice(
    test_cluster: SessionCluster, cluster_client: RedisCluster
) -> None:
    """Debits run (one replica must acknowledge each) while a master is killed: its replica takes over
    (about 4 s with a 2 s node timeout), the killed node restarts and rejoins as the new master's replica,
    debits go on, every answered charge survives with its id, and a retried id is charged once. (With one
    replica per master, a promoted master takes acknowledged debits again once it has a replica: the
    guarantee asked for, availability of that shard traded for it until then.)"""
    store = BudgetStore(cluster_client, slot_s=SLOT_S, wait=WaitPolicy(replicas=1, timeout_ms=500))
    await store.init_campaigns([campaign(cid, budget=10**9, slots=1) for cid in IDS], T0, new=set(IDS))
    key = "adp:camp:{" + IDS[0] + "}"
    victim_node = cluster_client.get_node_from_key(key)
    assert victim_node is not None
    victim = int(victim_node.port)
    answered: dict[str, tuple[str, int]] = {}  # dedup id -> (campaign, first answered charge)
    errors = 0
    stop_at = time.monotonic() + 14

    async def client_loop(worker: int) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < stop_at:
            batch = [
                DebitRequest(IDS[(worker + n + k) % len(IDS)], f"w{worker}-{n}-{k}", 3) for k in range(4)
            ]
            while True:  # a refused batch is retried with the same ids, as a feedback client would
                assert time.monotonic() < stop_at + 20, "debits did not resume"
                try:
                    got = await store.debit_many(batch, now_s=T0, dedup_ttl_s=600)
                    break
                except (RedisError, OSError):
                    errors += 1
                    await asyncio.sleep(0.05)
            for r, d in zip(batch, got, strict=True):
                assert d.status in (BudgetStatus.CHARGED, BudgetStatus.DUPLICATE)
                answered.setdefault(r.dedup_id, (r.campaign_id, d.charged_micros))
            n += 1

    loops = [asyncio.create_task(client_loop(w)) for w in range(4)]
    try:
        await asyncio.sleep(2)
        before = len(answered)
        test_cluster.kill(victim)
        killed_at = time.monotonic()

        def promoted() -> bool:
            node = cluster_client.get_node_from_key(key)
            return node is not None and int(node.port) != victim

        await _until(promoted, 20)
        failover_s = time.monotonic() - killed_at
        test_cluster.restart(victim)  # it rejoins as a replica of the promoted master
        await _until(lambda: redis_cluster.role(victim) == "slave", 20)
        after_failover = len(answered)
        await asyncio.gather(*loops)
    finally:
        for task in loops:
            task.cancel()
    print(f"failover {failover_s:.1f}s, {errors} refused batches (retried), {len(answered)} ids answered")
    assert before > 0 and len(answered) > after_failover  # debits went on after the failover
    assert errors > 0  # the failover was felt (refused batches, retried)
    spent = await store.spent_all()
    for cid in IDS:
        assert spent[cid] == sum(c for campaign_id, c in answered.values() if campaign_id == cid), cid
    await store.aclose()


async def _until(check: object, timeout_s: float = 10) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _until_sync(check: object, timeout_s: float) -> None:
    await _until(check, timeout_s)


def test_the_cluster_url_opens_a_cluster_client() -> None:
    client = open_redis("redis+cluster://127.0.0.1:17201,127.0.0.1:17202/0")
    assert isinstance(client, RedisCluster)
    assert RedisLayout.of(client) == RedisLayout(cluster=True)


async def test_repair_and_restored_dedup_keys_on_the_cluster(cluster_client: RedisCluster) -> None:
    """Reconciliation's writes on a cluster: a lost campaign rebuilt by compare-and-set (blocked in its
    slot's set when spent out), its de-duplication keys restored across slots, a retry then a duplicate."""
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    lost = [campaign(cid, budget=500, slots=1) for cid in IDS]
    entries = [DedupEntry(c.campaign_id, "e1", 500, int(T0 * 1000) + 600_000) for c in lost]
    assert await store.restore_dedup(entries, T0) == len(IDS)
    for c in lost:
        assert await store.repair(c, expected_spent=None, spent=500, now_s=T0)
    assert await store.spent_all() == dict.fromkeys(IDS, 500)
    assert await blocked_members(cluster_client) == set(IDS)
    again = await store.debit_many([DebitRequest(cid, "e1", 500) for cid in IDS], now_s=T0, dedup_ttl_s=60)
    assert {(d.status, d.charged_micros) for d in again} == {(BudgetStatus.DUPLICATE, 500)}
    await store.aclose()


def test_cluster_urls_name_their_seeds_and_database_0_only() -> None:
    assert cluster_seeds("redis+cluster://:pw@127.0.0.1:17101,localhost:17102/0") == [
        ("127.0.0.1", 17101),
        ("localhost", 17102),
    ]
    with pytest.raises(RedisUrlError, match="database 0"):
        open_redis("redis+cluster://127.0.0.1:17101/3")
    with pytest.raises(RedisUrlError, match="host:port"):
        cluster_seeds("redis+cluster://127.0.0.1")
    assert not is_cluster_url("redis://127.0.0.1:16379/0")


async def test_the_listener_follows_a_failover_and_reloads_what_it_missed(
    test_cluster: SessionCluster, cluster_client: RedisCluster
) -> None:
    """A master dies under a listening worker: the listener reconnects to the promoted master, reloads
    the blocked sets (a campaign blocked while it was away is there) and hears the new master's notices."""
    store = BudgetStore(cluster_client, slot_s=SLOT_S)
    await store.init_campaigns([campaign(cid, budget=100, slots=2) for cid in IDS], T0, new=set(IDS))
    key = "adp:camp:{" + IDS[1] + "}"
    victim_node = cluster_client.get_node_from_key(key)
    assert victim_node is not None
    victim = int(victim_node.port)
    on_victim = [cid for cid in IDS if cluster_client.get_node_from_key(f"adp:camp:{{{cid}}}") == victim_node]
    elsewhere = [cid for cid in IDS if cid not in on_victim]
    blocked: set[str] = set()
    listener = BlockedListener(test_cluster.url, blocked)
    task = asyncio.create_task(listener.run())
    try:
        await _until(lambda: listener.connected)
        test_cluster.kill(victim)
        await _until(lambda: not listener.connected, 10)
        # Blocked while the listener is away (another master): only the reload can tell it.
        await store.debit(elsewhere[0], "away", 100, now_s=T0, dedup_ttl_s=60)

        async def promoted() -> bool:
            with contextlib.suppress(RedisError, OSError):
                got = await store.debit_many(
                    [DebitRequest(on_victim[0], "probe", 0)], now_s=T0, dedup_ttl_s=60
                )
                return got[0].status == BudgetStatus.CHARGED
            return False

        deadline = time.monotonic() + 30
        while not await promoted():
            assert time.monotonic() < deadline, "no master took over"
            await asyncio.sleep(0.2)
        await _until(lambda: listener.connected, 30)
        assert elsewhere[0] in blocked  # reloaded
        await store.debit(on_victim[0], "after", 100, now_s=T0, dedup_ttl_s=60)  # on the promoted master
        await _until(lambda: on_victim[0] in blocked)
        assert listener.reconnects >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.aclose()
        test_cluster.restart(victim)
        await _until(lambda: redis_cluster.role(victim) == "slave", 30)
