"""A Redis master killed under feedback load on two ad-server hosts (cluster stack; marker ``cluster``).

Clients serve and click on both hosts and retry a 503 with the same request_id, as the platform's clients
do; the master holding most campaigns is SIGKILLed mid-load, its replica takes over, the killed node
restarts as the new replica. Checked: no answered charge is lost from Redis, no event id is charged or
published twice, no campaign spends past its budget, and each answered feedback's event is in Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from adplatform.config import Config
from adplatform.kafka import delete_topics, ensure_topics, read_to_end
from adplatform.redis_client import open_redis
from adplatform.wire import feedback_decoder
from adserver.token import digest
from budget.budget_redis import BudgetStore
from devstack import cluster, redis_cluster
from tests.admin.helpers import adserver
from tests.adserver.serving import campaign_row, eventually, ingest
from tests.fresh import fresh_config

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


async def test_a_redis_master_killed_under_feedback_load(base_config: Config, tmp_path: Path) -> None:
    config = cluster.cluster_config(fresh_config(base_config, kafka=False))
    await ensure_topics(config)
    tag = uuid.uuid4().hex[:6]
    ids = [f"ch{tag}{i}" for i in range(9)]
    client = open_redis(config.redis_url, socket_timeout=5)
    await client.initialize()
    by_master = Counter(client.get_node_from_key(f"adp:camp:{{{cid}}}").name for cid in ids)  # type: ignore[union-attr]
    victim = int(by_master.most_common(1)[0][0].rpartition(":")[2])
    answered: dict[str, str] = {}  # event id -> campaign of a 200
    refused = 0
    try:
        await ingest(
            config, [campaign_row(cid, cpc="0.0010", cpa="0.0500", budget="500") for cid in ids], tmp_path
        )
        async with (
            adserver(config, tmp_path / "host-a.log", cluster.cluster_env()) as host_a,
            adserver(config, tmp_path / "host-b.log", cluster.cluster_env()) as host_b,
        ):
            hosts = [host_a, host_b]
            for host in hosts:
                async with httpx.AsyncClient(base_url=host) as http:

                    async def ready(http: httpx.AsyncClient = http) -> bool:
                        with contextlib.suppress(httpx.TransportError):
                            return (await http.get("/ad/user/u1/serve")).status_code == 200
                        return False

                    await eventually(ready, timeout_s=90, poll_s=0.2)
            stop_at = time.monotonic() + 20

            async def user(n: int) -> None:
                nonlocal refused
                rng = random.Random(n)
                async with httpx.AsyncClient(timeout=10) as http:
                    while time.monotonic() < stop_at:
                        host = rng.choice(hosts)
                        served = await http.get(f"{host}/ad/user/u{rng.randint(1, 999)}/serve")
                        if served.status_code != 200:
                            continue
                        body = served.json()
                        token = body["request_id"]
                        while True:  # retried with the same id until answered, on either host
                            assert time.monotonic() < stop_at + 40, "feedback did not recover"
                            reply = await http.post(
                                f"{rng.choice(hosts)}/ad/{token}/feedback", json={"click": 1}
                            )
                            if reply.status_code == 200:
                                answered[f"{digest(token)}:click"] = body["campaign_id"]
                                break
                            assert reply.status_code == 503, reply.text
                            refused += 1
                            await asyncio.sleep(0.1)

            users = [asyncio.create_task(user(n)) for n in range(6)]
            await asyncio.sleep(6)
            nodes = {n.port: n for n in cluster.nodes(base_config) if n.name.startswith("redis-")}
            killed_at = time.monotonic()
            assert cluster.stop_node(nodes[victim], sig=9)
            await asyncio.sleep(5)  # promotion (node timeout 2 s)
            redis_cluster.start_node(
                cluster.root(base_config), victim, cluster.root(base_config) / "logs" / f"redis-{victim}.log"
            )
            await asyncio.gather(*users)
            print(
                f"killed master :{victim} at +6 s; {len(answered)} clicks answered 200, "
                f"{refused} 503s retried; load ran {time.monotonic() - killed_at:.0f} s past the kill"
            )
        events = [
            feedback_decoder.decode(r.value or b"")
            for r in await read_to_end(config.kafka_bootstrap, config.topics.feedback)
        ]
        published = Counter(e.event_id for e in events)
        assert max(published.values()) == 1  # nothing published twice
        kafka_spent: Counter[str] = Counter()
        for e in events:
            kafka_spent[e.campaign_id] += e.expenditure_micros
        store = BudgetStore(client, slot_s=config.slot_s)
        redis_spent = {cid: (await store.get(cid)).get("spent", 0) for cid in ids}
        missing = [eid for eid in answered if eid not in published]
        print(
            f"200s without an event: {len(missing)}; redis - kafka per campaign: "
            f"{ {cid: redis_spent[cid] - kafka_spent[cid] for cid in ids} }"
        )
        assert all(redis_spent[cid] <= 500_000_000 for cid in ids)
        assert not missing
        assert redis_spent == {cid: kafka_spent[cid] for cid in ids}
        await store.aclose()
    finally:
        pipe = client.pipeline(transaction=False)
        for cid in ids:
            pipe.delete(f"adp:camp:{{{cid}}}")
        await pipe.execute()
        await client.aclose()
        with contextlib.suppress(Exception):
            await delete_topics(config, list(config.topics.all()))
