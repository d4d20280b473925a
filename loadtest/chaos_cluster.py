"""``make chaos TOPOLOGY=cluster``: the fault scenarios of the cluster stack, on ``loadtest.chaos``'s rig,
checks and table (``python -m loadtest.chaos --topology cluster``).

The rig runs on ``adplatform stack up --topology cluster`` (Redis Cluster 3 masters + 3 replicas, 3 Kafka
brokers with replication 3, a Spark standalone master with 2 workers) and the single-node stack's
PostgreSQL: a database of its own there, its own topics, and campaigns of its own ids on the shared Redis
Cluster (a cluster has only database 0; their keys are deleted when the scenario ends). Two ad-server
hosts (``adplatform serve`` on two ports, 2 workers each) serve the simulator's clients, which spread over
both and retry a 503 or a dead connection on the other host with the same request id; the pipeline's
services run as on one node, the streaming archive is submitted to the standalone master.

Scenarios (each under load, the fault held ``hold_s`` then healed):
- ``kill-kafka-leader``: SIGKILL the broker that leads most of ``ad-feedback``'s partitions;
- ``kill-redis-master``: SIGKILL the Redis master holding most of the campaigns (its replica is promoted;
  the killed node restarts and rejoins as a replica);
- ``kill-spark-worker``: SIGKILL a Spark worker and its executor while the archive runs a batch;
- ``kill-adserver-host``: SIGKILL one ad-server instance with its workers (clients fail over).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from adplatform import names
from adplatform.config import Config, load_config
from adplatform.redis_client import open_redis
from adplatform.sandbox import create_database, database_of, drop_database, new_suffix
from archive.layout import ArchiveLayout
from budget.budget_redis import BudgetStore
from devstack import cluster, kafka_cluster, redis_cluster, spark_cluster
from devstack.paths import Paths
from loadtest.chaos import Result, Rig, Timing, run_rig

#: The two ad-server instances, as two hosts would be.
HOST_PORTS = {"host-a": 8021, "host-b": 8022}


class ClusterRig(Rig):
    """``Rig`` on the cluster stack: two hosts, the archive on the standalone master, a PostgreSQL
    database of its own and campaigns of its own on the shared Redis Cluster."""

    def __init__(
        self, base: Config, env: dict[str, str], name: str, timing: Timing, *, database: str
    ) -> None:
        super().__init__(base, env, name, timing, streaming_archive=True)
        self.hosts = dict(HOST_PORTS)
        self.campaign_seed = random.SystemRandom().randrange(1 << 30)  # ids no other run has
        self.database = database
        self.admin_dsn = base.pg_dsn

    @classmethod
    async def open_cluster(cls, base: Config, name: str, timing: Timing) -> ClusterRig:
        database = f"{database_of(base.pg_dsn)}_{new_suffix('chaos')}"
        dsn = await create_database(base.pg_dsn, database)
        config = cluster.cluster_config(dataclasses.replace(base, pg_dsn=dsn))
        rig = cls(config, {**cluster.cluster_env(), "ADP_PG_DSN": dsn}, name, timing, database=database)
        rig.admin_dsn = base.pg_dsn
        return rig

    async def close_stores(self) -> None:
        await _delete_campaign_keys(self.config.redis_url, self.campaign_ids)
        await drop_database(self.admin_dsn, self.database)

    async def wait_ready(self, timeout_s: float = 120) -> None:
        """Both hosts' workers, and the archive's query started on the standalone master (spark-submit
        takes tens of seconds here: a fault early in the load would find no batch to interrupt)."""
        await super().wait_ready(timeout_s)
        metadata = ArchiveLayout(self.config.archive_dir).feedback_checkpoint / "metadata"

        async def started() -> bool:
            return metadata.exists()

        await _wait_for(started, 240, f"{self.name}: the archive's query on {spark_cluster.master_url()}")

    def archive_args(self, *, until_idle: bool) -> tuple[str, ...]:
        job = ("--until-idle",) if until_idle else ("--trigger-s", "2")
        return ("archive", "submit", "--master", spark_cluster.master_url(), "--", *job)


async def _delete_campaign_keys(url: str, campaign_ids: list[str]) -> None:
    """The run's campaigns' keys on the cluster: budgets, de-duplication keys, blocked-set entries."""
    if not campaign_ids:
        return
    ours = set(campaign_ids)
    client = open_redis(url, socket_timeout=10)
    store = BudgetStore(client, slot_s=60)  # only its key layout is used
    try:
        dedup = [
            key
            async for key in client.scan_iter(match=names.REDIS_PREFIX + "dedup:*", count=1000)
            if names.campaign_id_of(key.decode()) in ours
        ]
        for key in [*dedup, *(names.budget_key(cid) for cid in campaign_ids)]:
            await client.unlink(key)
        for cid in campaign_ids:
            await client.srem(store.layout.blocked_key(cid), cid)
    except (RedisError, RedisClusterException, OSError) as exc:  # the cluster is down: they stay
        print(f"    could not delete the run's Redis keys ({exc})")
    finally:
        await store.aclose()
        await client.aclose()


def _node(config: Config, name: str) -> cluster.Node:
    (node,) = cluster.by_names(config, [name])
    return node


async def _wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, *, poll_s: float = 0.2
) -> float:
    """Poll ``check`` until true; the seconds it took (RuntimeError after ``timeout_s``)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f}s")
        await asyncio.sleep(poll_s)
    return time.monotonic() - started


# --- Kafka --------------------------------------------------------------------------------------------


async def _leaders(config: Config, topic: str) -> Counter[int]:
    """Broker id → how many of ``topic``'s partitions it leads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return Counter(int(p["leader"]) for p in described["partitions"] if int(p["leader"]) >= 0)
    finally:
        await admin.close()


def kill_kafka_leader(hold_s: float) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        topic = r.config.topics.feedback
        leaders = await _leaders(r.config, topic)
        broker, led = leaders.most_common(1)[0]
        root = cluster.root(r.config)
        assert cluster.stop_node(_node(r.config, f"kafka-{broker}"), sig=signal.SIGKILL)
        moved = await _wait_for(
            lambda: _led_elsewhere(r.config, topic, broker), 60, "ad-feedback's leadership moving"
        )
        r.faults.append(f"SIGKILL kafka-{broker} ({led}/{sum(leaders.values())} leaders) {hold_s:.0f}s")
        r.notes.append(
            f"kafka-{broker}: every ad-feedback partition led elsewhere {moved:.1f} s after the kill"
        )
        await asyncio.sleep(max(0.0, hold_s - moved))
        paths = Paths(r.config.stack_dir)
        cluster_id = (root / "kafka.cluster.id").read_text().strip()
        kafka_cluster.start_broker(
            root, broker, jars=paths.kafka_jars, logs=root / "logs", cluster_id=cluster_id
        )
        await _wait_for(lambda: _in_sync(r.config, topic), 120, "the restarted broker back in every ISR")

    return fault


async def _led_elsewhere(config: Config, topic: str, broker: int) -> bool:
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        return broker not in await _leaders(config, topic)
    return False


async def _in_sync(config: Config, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
        return all(len(p["isr"]) == 3 for p in described["partitions"])
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


# --- Redis --------------------------------------------------------------------------------------------


async def _masters_of(url: str, campaign_ids: list[str]) -> Counter[int]:
    """Master port → how many of the campaigns' budgets it holds (slot map read afresh)."""
    client = open_redis(url, socket_timeout=2)
    assert isinstance(client, RedisCluster), "the cluster rig needs a Redis Cluster URL"
    try:
        await client.initialize()
        owners = [client.get_node_from_key(names.budget_key(cid)) for cid in campaign_ids]
        return Counter(int(node.port) for node in owners if node is not None)
    finally:
        await client.aclose()


def kill_redis_master(hold_s: float) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        url = r.config.redis_url
        victim, held = (await _masters_of(url, r.campaign_ids)).most_common(1)[0]
        assert cluster.stop_node(_node(r.config, f"redis-{victim}"), sig=signal.SIGKILL)

        async def promoted() -> bool:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                return victim not in await _masters_of(url, r.campaign_ids)
            return False

        took = await _wait_for(promoted, 60, f"a replica of :{victim} promoted")
        r.faults.append(f"SIGKILL redis :{victim} master {hold_s:.0f}s")
        r.notes.append(
            f"redis :{victim} held {held} campaigns; its replica promoted {took:.1f} s after the kill"
        )
        await asyncio.sleep(max(0.0, hold_s - took))
        root = cluster.root(r.config)
        redis_cluster.start_node(root, victim, root / "logs" / f"redis-{victim}.log")
        ports = cluster.REDIS_CLUSTER_PORTS

        async def rejoined() -> bool:
            return redis_cluster.role(victim) == "slave" and all(
                redis_cluster.healthy(p, len(ports)) for p in ports
            )

        await _wait_for(rejoined, 120, f":{victim} back as a replica")

    return fault


# --- Spark --------------------------------------------------------------------------------------------


def _batch_running(archive_dir: Path) -> bool:
    """Whether the streaming archive is inside a batch: its checkpoint logged the batch's offsets (at its
    start) and not yet its commit (at its end)."""
    checkpoint = ArchiveLayout(archive_dir).feedback_checkpoint

    def last(log: str) -> int:
        with contextlib.suppress(OSError):
            return max((int(f.name) for f in (checkpoint / log).iterdir() if f.name.isdigit()), default=-1)
        return -1

    return last("offsets") > last("commits")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def kill_spark_worker(hold_s: float) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        mid_batch = False
        with contextlib.suppress(RuntimeError):  # no batch seen running: killed anyway, and said so
            await _wait_for(
                lambda: asyncio.to_thread(_batch_running, r.config.archive_dir), 60, "a batch", poll_s=0.02
            )
            mid_batch = True
        workers = [_node(r.config, f"spark-worker-{n}") for n in (1, 2)]
        with_executor = [w for w in workers if (pid := cluster.node_pid(w)) and _children(pid)]
        victim = (with_executor or workers)[0]
        pid = cluster.node_pid(victim)
        assert pid is not None
        executors = _children(pid)
        for child in executors:  # a host lost: the worker and its executor together
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        assert cluster.stop_node(victim, sig=signal.SIGKILL)
        r.faults.append(f"SIGKILL {victim.name}+executor {hold_s:.0f}s")
        r.notes.append(
            f"{victim.name} and {len(executors)} executor process(es) killed "
            + ("while a batch ran" if mid_batch else "(no running batch seen within 60 s)")
        )
        await asyncio.sleep(hold_s)
        root = cluster.root(r.config)
        spark_cluster.start_worker(root, int(victim.name.rsplit("-", 1)[1]), root / "logs")

        async def both() -> bool:
            return (await asyncio.to_thread(spark_cluster.alive_workers) or 0) >= 2

        await _wait_for(both, 120, "the Spark worker back")

    return fault


# --- ad-server hosts ----------------------------------------------------------------------------------


def kill_adserver_host(hold_s: float) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        host = next(iter(r.hosts))
        r.sup.kill(host)  # its process group: the supervisor and every worker
        r.faults.append(f"SIGKILL {host} (+workers) {hold_s:.0f}s")
        await asyncio.sleep(hold_s)
        r.start_host(host)

    return fault


def scenarios(t: Timing) -> dict[str, Callable[[Rig], Awaitable[None]]]:
    return {
        "kill-kafka-leader": kill_kafka_leader(t.hold_s),
        "kill-redis-master": kill_redis_master(max(t.hold_s, 8.0)),  # promotion alone takes ~4-5 s
        "kill-spark-worker": kill_spark_worker(t.hold_s),
        "kill-adserver-host": kill_adserver_host(t.hold_s),
    }


def require_cluster(config: Config) -> None:
    down = [name for name, _, _, ok in cluster.status(config) if not ok]
    if down:
        raise RuntimeError(
            f"the cluster stack is not up ({', '.join(down)}): adplatform stack up --topology cluster"
        )


async def run_scenario(name: str, timing: Timing) -> Result:
    base = load_config()
    await asyncio.to_thread(require_cluster, base)
    fault = scenarios(timing)[name]
    rig = await ClusterRig.open_cluster(base, name, timing)
    try:
        return await run_rig(rig, base, fault)
    finally:
        await rig.close()
