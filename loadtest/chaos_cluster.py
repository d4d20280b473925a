"""``make chaos TOPOLOGY=cluster``: the fault scenarios of the cluster stack, on ``loadtest.chaos``'s rig,
checks and table (``python -m loadtest.chaos --topology cluster``).

The rig runs on ``adplatform stack up --topology cluster`` (Redis Cluster 3 masters × 2 replicas, 3 Kafka
brokers with replication 3, a Spark standalone master with 2 workers) and the single-node stack's
PostgreSQL: a database of its own there, its own topics, and a key namespace of its own on the shared
Redis Cluster, which has only database 0 (``ADP_REDIS_NAMESPACE``: every key and channel is
``adp@<ns>:…``, as a test session's on the cluster). A process's namespace is fixed when it imports
``adplatform.names``, and the rig runs platform code in process too (the Ad Manager, the checks), so each
scenario runs in a child process started with a fresh namespace (``run_scenario``); its sandbox claims
the namespace and, when the scenario ends, deletes the whole prefix on every master (budgets,
de-duplication keys and in-flight marks, frequency caps, blocked sets, the pacer's lease). Two ad-server
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

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from adplatform import names
from adplatform.cli.common import script_main
from adplatform.config import Config, load_config
from adplatform.pidfile import children
from adplatform.ports import free_ports
from adplatform.redis_client import open_redis
from adplatform.sandbox import new_suffix, open_sandbox
from archive.layout import ArchiveLayout
from devstack import cluster, kafka_cluster, redis_cluster, spark_cluster
from devstack.paths import Paths
from loadtest.chaos import FULL, Result, Rig, Timing, run_rig

#: This module, as the child process of ``run_scenario`` runs it (``__name__`` is ``__main__`` there).
MODULE = "loadtest.chaos_cluster"
#: The two ad-server instances, as two hosts would be.
HOSTS = ("host-a", "host-b")


class ClusterRig(Rig):
    """``Rig`` on the cluster stack: two hosts, the archive on the standalone master, a PostgreSQL
    database and a Redis key namespace of its own (this process's, ``ADP_REDIS_NAMESPACE``)."""

    def __init__(self, base: Config, env: dict[str, str], name: str, timing: Timing) -> None:
        super().__init__(base, env, name, timing, streaming_archive=True)
        self.hosts = dict(zip(HOSTS, free_ports(len(HOSTS)), strict=True))

    @classmethod
    async def open_cluster(cls, base: Config, name: str, timing: Timing) -> ClusterRig:
        """A rig on stores of its own: the sandbox claims this process's namespace (refused without one,
        or when another owner holds it) and ``close`` deletes it on every master."""
        stores = await open_sandbox(cluster.cluster_config(base), new_suffix("chaos"))
        print(f"    {name}: {stores.database}, Redis namespace {names.REDIS_PREFIX}", flush=True)
        rig = cls(stores.config, {**cluster.cluster_env(), **stores.env}, name, timing)
        rig.stores = stores
        return rig

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


def kill_spark_worker(hold_s: float) -> Callable[[Rig], Awaitable[None]]:
    async def fault(r: Rig) -> None:
        mid_batch = False
        with contextlib.suppress(RuntimeError):  # no batch seen running: killed anyway, and said so
            await _wait_for(
                lambda: asyncio.to_thread(_batch_running, r.config.archive_dir), 60, "a batch", poll_s=0.02
            )
            mid_batch = True
        workers = [_node(r.config, f"spark-worker-{n}") for n in (1, 2)]
        with_executor = [w for w in workers if (pid := cluster.node_pid(w)) and children(pid)]
        victim = (with_executor or workers)[0]
        pid = cluster.node_pid(victim)
        assert pid is not None
        executors = children(pid)
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
    """Run ``name`` in a child process with a fresh key namespace (``chaos<hex>``) and read its result.

    Not in this process: its namespace was fixed when it imported ``adplatform.names``, and it may be
    one a sandbox already holds (a test session's on the cluster stack). The child's output is this
    process's; cancelled, the child gets SIGINT and stops its processes and drops its stores itself."""
    env = {**os.environ, names.NAMESPACE_ENV: f"chaos{uuid.uuid4().hex[:10]}"}
    with tempfile.TemporaryDirectory(prefix="adp-chaos-") as tmp:
        out = Path(tmp) / "result.json"
        args = [name, "--timing", msgspec.json.encode(timing).decode(), "--result", str(out)]
        child = await asyncio.create_subprocess_exec(sys.executable, "-m", MODULE, *args, env=env)
        try:
            code = await child.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
            raise
        if code != 0 or not out.is_file():
            raise RuntimeError(f"cluster chaos {name}: its process exited with {code} (output above)")
        return msgspec.json.decode(out.read_bytes(), type=Result)


async def run_in_namespace(name: str, timing: Timing) -> Result:
    """The scenario in this process, whose namespace (``ADP_REDIS_NAMESPACE``) its sandbox claims."""
    if not names.NAMESPACE:
        raise RuntimeError(f"the cluster rig needs a key namespace of its own: set {names.NAMESPACE_ENV}")
    base = load_config()
    await asyncio.to_thread(require_cluster, base)
    fault = scenarios(timing)[name]
    rig = await ClusterRig.open_cluster(base, name, timing)
    try:
        return await run_rig(rig, base, fault)
    finally:
        await rig.close()


def main(argv: list[str]) -> int:
    """The child of ``run_scenario``: one scenario, its result as JSON to ``--result``."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=main.__doc__)
    parser.add_argument("scenario", choices=list(scenarios(FULL)))
    parser.add_argument("--timing", required=True, help="a Timing as JSON")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(run_in_namespace(args.scenario, msgspec.json.decode(args.timing, type=Timing)))
    args.result.write_bytes(msgspec.json.encode(result))
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
