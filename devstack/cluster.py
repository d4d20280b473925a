"""``adplatform stack up|down|status --topology cluster``: the scale-out stack on this one machine.

Redis Cluster (3 masters with 2 replicas each, :17101-17109), Kafka (3 KRaft brokers that are also the
controller quorum, :19291-19293, controllers 100 above), Spark standalone (master :17077, UI :17080, 2
workers) as separate processes under ``.stack/cluster/``: other ports and another folder than the
single-node stack, so both can run at once. PostgreSQL is the single-node stack's (:15432, started if
needed, never stopped here): the platform only sends it batched writes.

The services use the cluster through configuration alone: ``cluster_env`` (written to
``.stack/cluster/cluster.env``) sets the Redis Cluster URL, the brokers, topic replication 3 and a
replica acknowledgement per debit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from adplatform.config import Config
from adplatform.pidfile import CmdlineMatch, read_pid_file, remove, signal_if_same, why_stale
from devstack import kafka_cluster, redis_cluster, spark_cluster
from devstack.kafka import new_cluster_id
from devstack.paths import Paths, StackError, say

#: 3 masters (the first 3 ports when formed) with 2 replicas each: after a failover the promoted master
#: still has a replica, so ``WAIT 1`` keeps acknowledging its debits while the killed node is away.
REDIS_CLUSTER_PORTS: Final = tuple(range(17101, 17110))
REDIS_REPLICAS: Final = 2


def root(config: Config) -> Path:
    return config.stack_dir / "cluster"


def cluster_env() -> dict[str, str]:
    """The variables that point the platform at the cluster stack."""
    return {
        "ADP_REDIS_URL": redis_cluster.seeds_url(REDIS_CLUSTER_PORTS),
        "ADP_KAFKA_BOOTSTRAP": kafka_cluster.bootstrap(),
        "ADP_KAFKA_REPLICATION": "3",
        "ADP_REDIS_WAIT_REPLICAS": "1",
    }


def cluster_config(config: Config) -> Config:
    """``config`` pointed at the cluster stack (what ``cluster_env`` does through the environment)."""
    return dataclasses.replace(
        config,
        redis_url=redis_cluster.seeds_url(REDIS_CLUSTER_PORTS),
        kafka_bootstrap=kafka_cluster.bootstrap(),
        topics=dataclasses.replace(config.topics, replication=3),
        redis_wait_replicas=1,
    )


@dataclasses.dataclass(frozen=True)
class Node:
    """One process of the cluster stack: its name, port, PID file and how to recognise it in /proc."""

    name: str
    port: int
    pid_path: Path
    match: CmdlineMatch


def nodes(config: Config) -> list[Node]:
    r = root(config)
    out = [
        Node(f"redis-{p}", p, redis_cluster.pid_file(r, p), redis_cluster.redis_cmdline(p))
        for p in REDIS_CLUSTER_PORTS
    ]
    out += [
        Node(f"kafka-{n}", port, kafka_cluster.pid_file(r, n), kafka_cluster.kafka_cmdline(r, n))
        for n, port in enumerate(kafka_cluster.KAFKA_CLUSTER_PORTS, start=1)
    ]
    out.append(
        Node("spark-master", spark_cluster.SPARK_MASTER_PORT, spark_cluster.pid_file(r, "spark-master"),
             spark_cluster.spark_cmdline(r, "spark-master"))
    )  # fmt: skip
    out += [
        Node(f"spark-worker-{n}", port, spark_cluster.pid_file(r, f"spark-worker-{n}"),
             spark_cluster.spark_cmdline(r, f"spark-worker-{n}"))
        for n, port in enumerate(spark_cluster.SPARK_WORKER_UI_PORTS, start=1)
    ]  # fmt: skip
    return out


def node_pid(node: Node) -> int | None:
    """The node's PID when its PID file names it (checked against /proc), else None."""
    record = read_pid_file(node.pid_path)
    if record is None or why_stale(record, node.match) is not None:
        return None
    return record.pid


def stop_node(node: Node, *, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Signal the node by its verified PID (SIGKILL after ``timeout_s``); whether it was running."""
    return bool(stop_nodes([node], sig=sig, timeout_s=timeout_s))


def stop_nodes(group: Sequence[Node], *, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> list[Node]:
    """Signal every node of ``group`` at once (brokers stopped one by one wait for each other's
    controller), wait for each, SIGKILL what outlives ``timeout_s``; the nodes that were running."""
    signalled = []
    for node in group:
        record = read_pid_file(node.pid_path)
        if record is not None and signal_if_same(record, sig, node.match):
            signalled.append((node, record))
        else:
            remove(node.pid_path)
    deadline = time.monotonic() + timeout_s
    for node, record in signalled:
        while why_stale(record, node.match) is None:
            if time.monotonic() > deadline:
                signal_if_same(record, signal.SIGKILL, node.match)
                deadline = time.monotonic() + 10
            time.sleep(0.1)
        remove(node.pid_path)
    return [node for node, _ in signalled]


def up(config: Config) -> None:
    """Start every node not running yet, form the Redis Cluster once, create the topics (replication 3,
    min.insync.replicas 2), wait for the Spark workers. Idempotent."""
    from devstack import stack

    r = root(config)
    base = Paths(config.stack_dir)
    logs = r / "logs"
    for d in (logs, r / "run"):
        d.mkdir(parents=True, exist_ok=True)
    stack.ensure_installed()
    stack.fetch_jars(base)
    stack.start_postgres(base)  # the one PostgreSQL both topologies share
    redis_cluster.start_cluster(r, REDIS_CLUSTER_PORTS, logs, replicas=REDIS_REPLICAS)
    say(
        f"redis cluster: {len(REDIS_CLUSTER_PORTS)} nodes :{REDIS_CLUSTER_PORTS[0]}-"
        f"{REDIS_CLUSTER_PORTS[-1]}, {REDIS_REPLICAS} replicas per master"
    )
    by_name = {n.name: n for n in nodes(config)}
    id_file = r / "kafka.cluster.id"
    if not id_file.exists():
        id_file.write_text(new_cluster_id())
    for n in range(1, 4):
        if node_pid(by_name[f"kafka-{n}"]) is None:
            kafka_cluster.start_broker(
                r, n, jars=base.kafka_jars, logs=logs, cluster_id=id_file.read_text().strip()
            )
    if node_pid(by_name["spark-master"]) is None:
        spark_cluster.start_master(r, logs)
    for n in (1, 2):
        if node_pid(by_name[f"spark-worker-{n}"]) is None:
            spark_cluster.start_worker(r, n, logs)
    cfg = cluster_config(config)
    _wait(lambda: _kafka_ready(cfg), 180, "Kafka brokers (3 registered)", logs)
    created = asyncio.run(_topics(cfg))
    if created:
        say(f"created topics (replication 3, min.insync.replicas 2): {', '.join(created)}")
    _wait(lambda: (spark_cluster.alive_workers() or 0) >= 2, 120, "Spark master with 2 workers", logs)
    env_file = r / "cluster.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in cluster_env().items()))
    say(
        f"cluster up; point the platform at it with the variables in {env_file}; run the archive on Spark "
        f"with `adplatform archive submit --master {spark_cluster.master_url()}`"
    )


async def _topics(config: Config, timeout_s: float = 60) -> list[str]:
    """Create the topics, retried while brokers that just (re)started are not ready for requests."""
    from aiokafka.errors import KafkaError

    from adplatform.kafka import ensure_topics

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await ensure_topics(config)
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


def _kafka_ready(config: Config) -> bool:
    return asyncio.run(_brokers(config.kafka_bootstrap)) >= 3


async def _brokers(bootstrap: str) -> int:
    """Brokers the cluster's metadata lists (0 when it does not answer)."""
    import logging

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        described = await admin.describe_cluster()
        return len(described.get("brokers", []))
    except (KafkaError, OSError, TimeoutError):
        return 0
    finally:
        await admin.close()


def _wait(check: Callable[[], bool], timeout_s: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready within {timeout_s:.0f}s; see {logs}")
        time.sleep(1)


def down(config: Config) -> None:
    """Stop every node of the cluster stack by its verified PID: Spark, then the Kafka brokers together,
    then Redis. Data stays under ``.stack/cluster``; PostgreSQL keeps running."""
    every = nodes(config)
    for kind in ("spark-", "kafka-", "redis-"):
        for node in stop_nodes([n for n in every if n.name.startswith(kind)]):
            say(f"stopped {node.name}")


def status(config: Config) -> list[tuple[str, int, int | None, bool]]:
    """(node, port, pid, healthy) for every node: Redis nodes by ``cluster_state:ok`` (and their role),
    Kafka brokers by answering metadata, Spark by the master's count of alive workers."""
    workers = spark_cluster.alive_workers()
    rows: list[tuple[str, int, int | None, bool]] = []
    for node in nodes(config):
        pid = node_pid(node)
        if node.name.startswith("redis-"):
            ok = redis_cluster.healthy(node.port, len(REDIS_CLUSTER_PORTS))
            role = redis_cluster.role(node.port) or "down"
            if role == "master":
                role += f", {redis_cluster.replicas_online(node.port)} replicas"
            name = f"{node.name} ({role})"
        elif node.name.startswith("kafka-"):
            ok = pid is not None and asyncio.run(_brokers(f"127.0.0.1:{node.port}")) > 0
            name = node.name
        elif node.name == "spark-master":
            ok, name = workers is not None, node.name
        else:
            ok, name = pid is not None and (workers or 0) > 0, node.name
        rows.append((name, node.port, pid, ok))
    return rows


def by_names(config: Config, names: Sequence[str]) -> list[Node]:
    wanted = set(names)
    return [n for n in nodes(config) if n.name in wanted]
