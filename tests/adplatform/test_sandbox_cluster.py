"""A sandbox's Redis side on a Redis Cluster (the tests' own): a key namespace, claimed by an owner key and
emptied on every master without touching the user's keys (``adp:``), another namespace's or another
application's. The namespace is the process's (``ADP_REDIS_NAMESPACE``, fixed at import): here the
prefix is patched, as a process started with the variable would have it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from redis.asyncio.cluster import RedisCluster

from adplatform import names, sandbox_cluster
from adplatform.sandbox import (
    SandboxError,
    claim_namespace,
    flush_redis_db,
    process_owner,
    release_stale,
    wipe_claimed,
)
from budget.budget_redis import BudgetStore, DebitRequest
from tests.budget.test_budget_redis import SLOT_S, T0, campaign
from tests.redis_cluster import SessionCluster

IDS = [f"n{i}" for i in range(12)]
#: The user's platform keys (no namespace), another run's namespace, another application's keys.
OTHERS = ["adp:camp:{n1}", "adp:blocked", "adp@other:camp:{n2}", "adp@other:sandbox:owner", "app:{n3}", "x"]


async def _keys(client: RedisCluster) -> set[str]:
    return {k.decode() async for k in client.scan_iter(count=1000)}  # every master


async def _seed(client: RedisCluster) -> None:
    store = BudgetStore(client, slot_s=SLOT_S)
    await store.init_campaigns([campaign(cid, budget=400) for cid in IDS], T0, new=set(IDS))
    await store.debit_many([DebitRequest(cid, f"r-{cid}", 100) for cid in IDS], now_s=T0, dedup_ttl_s=600)


def _use_namespace(monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    """What a process started with ``ADP_REDIS_NAMESPACE=namespace`` has in ``adplatform.names``."""
    prefix = names.redis_prefix(namespace)
    for attr in ("CHANNEL_BUDGET", "PACER_LEASE", "BLOCKED_SET"):
        monkeypatch.setattr(names, attr, prefix + getattr(names, attr).removeprefix(names.REDIS_PREFIX))
    monkeypatch.setattr(names, "NAMESPACE", namespace)
    monkeypatch.setattr(names, "REDIS_PREFIX", prefix)


@pytest.mark.redis_cluster
async def test_a_namespace_is_claimed_and_emptied_on_every_master_and_nothing_else(
    cluster_client: RedisCluster, test_cluster: SessionCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in OTHERS:
        await cluster_client.set(key, "keep")
    _use_namespace(monkeypatch, "tns")
    assert names.budget_key("n1") == "adp@tns:camp:{n1}"  # same hash tag, so the same slot

    assert await claim_namespace(test_cluster.url, "me") == "tns"
    await _seed(cluster_client)
    ours = {k for k in await _keys(cluster_client) if k.startswith("adp@tns:")}
    assert len({cluster_client.get_node_from_key(k) for k in ours}) == 3  # keys on every master
    assert {k.split(":")[1] for k in ours} == {"camp", "dedup", "blocked", "sandbox"}

    with pytest.raises(SandboxError, match="held by me"):
        await claim_namespace(test_cluster.url, "someone-else")
    assert not await flush_redis_db(test_cluster.url, "someone-else", keep_claim=True)
    assert await flush_redis_db(test_cluster.url, "me", keep_claim=True)
    assert await _keys(cluster_client) == set(OTHERS) | {sandbox_cluster.claim_key()}

    await _seed(cluster_client)
    await wipe_claimed(cluster_client)  # "Redis lost its data": the claim stays
    assert await _keys(cluster_client) == set(OTHERS) | {sandbox_cluster.claim_key()}
    assert await claim_namespace(test_cluster.url, "me") == "tns"  # the same owner re-opens it

    assert await flush_redis_db(test_cluster.url, "me", keep_claim=False)
    assert await _keys(cluster_client) == set(OTHERS)
    with pytest.raises(SandboxError, match="no sandbox claimed"):
        await wipe_claimed(cluster_client)

    await cluster_client.set(names.budget_key("n4"), "not a sandbox's")
    with pytest.raises(SandboxError, match="has no owner"):  # data without an owner: never taken
        await claim_namespace(test_cluster.url, "me")


def _gone_owner() -> str:
    """The owner a run killed before its tear-down leaves: bound to a process that has exited."""
    code = "from adplatform.sandbox import process_owner; print(process_owner('killed'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


@pytest.mark.redis_cluster
async def test_the_namespaces_of_runs_whose_process_is_gone_are_released_and_nothing_else(
    cluster_client: RedisCluster, test_cluster: SessionCluster
) -> None:
    for key in OTHERS:
        await cluster_client.set(key, "keep")
    owners = {"gone": _gone_owner(), "live": process_owner("live"), "named": "name:adplatform_demo"}
    kept: set[str] = set()
    for namespace, owner in owners.items():
        claim = f"adp@{namespace}:{sandbox_cluster.CLAIM_SUFFIX}"
        await cluster_client.set(claim, owner)
        data = [f"adp@{namespace}:camp:{{{cid}}}" for cid in IDS]
        for key in data:
            await cluster_client.set(key, "1")
        if namespace != "gone":
            kept |= {claim, *data}
    assert len({cluster_client.get_node_from_key(f"adp@gone:camp:{{{cid}}}") for cid in IDS}) == 3

    assert await release_stale(test_cluster.url) == ["namespace adp@gone:"]
    assert await _keys(cluster_client) == set(OTHERS) | kept  # every master's gone keys, nobody else's
    for key in kept | set(OTHERS):
        await cluster_client.unlink(key)


@pytest.mark.redis_cluster
async def test_a_process_without_a_namespace_gets_no_sandbox_on_a_cluster(
    test_cluster: SessionCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(names, "NAMESPACE", "")
    with pytest.raises(SandboxError, match=names.NAMESPACE_ENV):
        await claim_namespace(test_cluster.url, "me")


def test_the_namespace_comes_from_the_environment_at_import() -> None:
    code = (
        "from adplatform import names; print(names.budget_key('c'), names.BLOCKED_SET, names.CHANNEL_BUDGET)"
    )
    env = {**os.environ, names.NAMESPACE_ENV: "t1-a"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["adp@t1-a:camp:{c}", "adp@t1-a:blocked", "adp@t1-a:budget-events"]
    for bad in ("T1", "a{b}", "a*", "a:b", "x" * 33):
        with pytest.raises(ValueError, match=names.NAMESPACE_ENV):
            names.redis_prefix(bad)
