"""The cluster stack's Kafka and Spark under a fault (marker ``cluster``: needs ``adplatform stack up
--topology cluster``; run by ``make test-cluster``, not by the default suite).

Kafka: a topic with replication 3 and ``min.insync.replicas=2``, the platform's producer (``acks=all``,
idempotent); the leader of a partition is killed mid-stream: every message sent is acknowledged and read
back exactly once, and the broker rejoins. Spark: a job runs on the standalone master's 2 workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adplatform import names
from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, make_producer, read_to_end
from adplatform.redis_client import open_redis
from adplatform.wire import encoder, feedback_decoder
from archive.layout import ArchiveLayout
from archive.reader import iter_lines, read_lock, snapshot
from budget.budget_redis import BudgetStore
from devstack import cluster, kafka_cluster, spark_cluster
from tests.admin.helpers import adserver
from tests.adserver.serving import campaign_row, eventually, ingest
from tests.archive.conftest import publish
from tests.archive.events import make_events
from tests.fresh import fresh_config

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster_config() -> Config:
    base = load_config()
    rows = cluster.status(base)
    down = [name for name, _, _, ok in rows if not ok]
    if down:
        pytest.fail(
            f"the cluster stack is not up ({', '.join(down)}): adplatform stack up --topology cluster"
        )
    return cluster.cluster_config(base.namespaced(f"t{uuid.uuid4().hex[:8]}-"))


async def _leader(config: Config, topic: str) -> int:
    """The leader of partition 0 of a fresh topic (once its metadata reached the broker asked)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            (described,) = await admin.describe_topics([topic])
            partitions = {p["partition"]: p for p in described["partitions"]}
            if len(partitions) == config.topics.partitions and partitions[0]["leader"] >= 0:
                assert all(len(p["replicas"]) == 3 for p in partitions.values())
                return int(partitions[0]["leader"])
            assert time.monotonic() < deadline, described
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def test_produce_and_consume_go_on_with_a_broker_killed(cluster_config: Config) -> None:
    config = cluster_config
    topic = config.topics.feedback
    await ensure_topics(config, [topic])
    leader = await _leader(config, topic)
    node = next(n for n in cluster.nodes(config) if n.name == f"kafka-{leader}")
    producer = make_producer(config, linger_ms=1)
    await producer.start()
    sent: list[bytes] = []
    try:
        for i in range(300):
            sent.append(f"m{i}".encode())
            await producer.send_and_wait(topic, sent[-1], key=str(i % 7).encode())
        assert cluster.stop_node(node, sig=signal.SIGKILL)  # the leader of partition 0 dies
        killed_at = time.monotonic()
        acks = []
        for i in range(300, 900):
            sent.append(f"m{i}".encode())
            acks.append(await producer.send(topic, sent[-1], key=str(i % 7).encode()))
        await asyncio.wait_for(asyncio.gather(*acks), 60)  # acks=all with 2 of 3 in sync
        produce_s = time.monotonic() - killed_at
    finally:
        await producer.stop()
        base = Path(load_config().stack_dir)
        root = cluster.root(load_config())
        kafka_cluster.start_broker(
            root, leader, jars=base / "jars" / "kafka", logs=root / "logs",
            cluster_id=(root / "kafka.cluster.id").read_text().strip(),
        )  # fmt: skip
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(config.topics.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got += [r.value for records in batch.values() for r in records if r.value is not None]
    finally:
        await consumer.stop()
    print(f"600 messages acknowledged {produce_s:.1f}s after the leader was killed")
    assert sorted(got) == sorted(sent)  # nothing lost, nothing twice
    deadline = time.monotonic() + 90
    while cluster.node_pid(node) is None or not await _three_brokers(config):
        assert time.monotonic() < deadline, "the killed broker did not rejoin"
        await asyncio.sleep(1)
    with contextlib.suppress(Exception):
        await delete_topics(config, [topic])


async def _three_brokers(config: Config) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    try:
        await admin.start()
        return len((await admin.describe_cluster())["brokers"]) == 3
    finally:
        await admin.close()


JOB = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("adp-cluster-test").getOrCreate()
total = spark.sparkContext.parallelize(range(100_000), 8).map(lambda x: x * 2).sum()
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
print(f"RESULT {total} {executors}")
spark.stop()
"""


def test_a_job_runs_on_the_standalone_master_and_its_two_workers(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    submit = spark_cluster.spark_home() / "bin" / "spark-submit"
    done = subprocess.run(
        [str(submit), "--master", spark_cluster.master_url(), "--executor-memory", "512m",
         "--conf", "spark.ui.enabled=false", "--conf", "spark.pyspark.python=" + sys.executable,
         # Start once both workers' executors are registered, so the job runs on the two of them.
         "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
         "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=60s", str(job)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, done.stderr[-3000:]
    _, total, executors = line.split()
    assert int(total) == 2 * sum(range(100_000))
    assert int(executors) == 2  # one executor per worker


@pytest.mark.postgres  # the session's own database; Redis and Kafka are the cluster stack's
async def test_two_ad_server_hosts_charge_once_and_both_stop_at_exhaustion(
    base_config: Config, tmp_path: Path
) -> None:
    """Ad Manager and two ad-server instances (2 workers each, as two hosts) on the cluster stack: a click
    is charged on Redis Cluster (one replica acknowledged) and published; a retry is not charged again;
    exhaustion reaches every worker of both hosts."""
    config = cluster.cluster_config(fresh_config(base_config, kafka=False))
    await ensure_topics(config)
    cid = f"cl{uuid.uuid4().hex[:8]}"
    client = open_redis(config.redis_url, socket_timeout=5)
    try:
        await ingest(config, [campaign_row(cid, cpc="0.0010", cpa="0.0500", budget="500")], tmp_path)
        env = cluster.cluster_env()
        async with (
            adserver(config, tmp_path / "host-a.log", env) as host_a,
            adserver(config, tmp_path / "host-b.log", env) as host_b,
        ):
            params = {"device_type": "iPhone"}
            # Every worker of both hosts serves the campaign: ten answers in a row on new connections, as
            # the exhaustion check below asks (one answer on a kept connection is one worker: the other
            # may still be loading, and the test's next request, on a new connection, may go to it).
            fresh_limits = httpx.Limits(max_keepalive_connections=0)
            for host in (host_a, host_b):
                async with httpx.AsyncClient(base_url=host, limits=fresh_limits) as http:

                    async def ready(http: httpx.AsyncClient = http) -> bool:
                        try:
                            for _ in range(10):
                                if (await http.get("/ad/user/u1/serve", params=params)).status_code != 200:
                                    return False
                        except httpx.TransportError:
                            return False
                        return True

                    await eventually(ready, timeout_s=90, poll_s=0.2)
            async with httpx.AsyncClient(base_url=host_a) as http:
                token = (await http.get("/ad/user/u1/serve", params=params)).json()["request_id"]
                first = await http.post(f"/ad/{token}/feedback", json={"click": 1})
                assert first.status_code == 200, first.text
            # The retry, on the other host: there it is an orphan candidate, answered only once the first
            # charge is older than any worker could still be publishing it (publish timeout + margin, 3 s)
            # and ad-feedback has been read, so it may take longer than httpx's default 5 s on a busy machine.
            async with httpx.AsyncClient(base_url=host_b, timeout=30) as http:
                again = await http.post(f"/ad/{token}/feedback", json={"click": 1})
                assert again.status_code == 200 and again.json() == first.json()
            store = BudgetStore(client, slot_s=config.slot_s)
            state = await store.get(cid)
            assert state["spent"] > 0 and state["spent"] <= 1000  # one click, at most its cpc
            await client.hset(names.budget_key(cid), "slot_spent", state["slot_budget"] - 1)
            async with httpx.AsyncClient(base_url=host_a) as http:
                token = (await http.get("/ad/user/u2/serve", params=params)).json()["request_id"]
                assert (await http.post(f"/ad/{token}/feedback", json={"click": 1})).status_code == 200
            started = time.monotonic()
            for host in (host_a, host_b):  # new connections: every worker answers
                async with httpx.AsyncClient(base_url=host, limits=fresh_limits) as fresh:

                    async def stopped(fresh: httpx.AsyncClient = fresh) -> bool:
                        for _ in range(10):
                            if (await fresh.get("/ad/user/u1/serve", params=params)).status_code != 404:
                                return False
                        return True

                    await eventually(stopped, timeout_s=5, poll_s=0.01)
            print(f"exhaustion reached both hosts' workers within {time.monotonic() - started:.2f} s")
            await store.aclose()
        events = await read_to_end(config.kafka_bootstrap, config.topics.feedback)
        charged = [feedback_decoder.decode(r.value or b"").expenditure_micros for r in events]
        assert len(charged) == 2 and sum(charged) == (await BudgetStore(client, slot_s=600).get(cid))["spent"]
    finally:
        await client.delete(f"adp:camp:{{{cid}}}")
        await client.aclose()
        with contextlib.suppress(Exception):
            await delete_topics(config, list(config.topics.all()))


async def test_the_archive_job_runs_on_the_standalone_cluster(tmp_path: Path) -> None:
    """``adplatform archive submit --master spark://…`` (the job unchanged) archives every event of the
    cluster's ``ad-feedback`` (replication 3) with the standalone master's workers as executors."""
    config = cluster.cluster_config(fresh_config(load_config(), kafka=False))
    config = dataclasses.replace(config, archive_dir=tmp_path / "archive")
    await ensure_topics(config, [config.topics.feedback])
    events = make_events(25, seed=11, start_ms=1_760_000_000_000)
    await publish(config, [encoder.encode(e) for e in events])
    env = {
        **os.environ, **cluster.cluster_env(), "ADP_TOPIC_PREFIX": config.topics.prefix,
        "ADP_GROUP_PREFIX": config.group_prefix, "ADP_ARCHIVE_DIR": str(config.archive_dir),
        "ADP_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    master = spark_cluster.master_url()
    cmd = [
        sys.executable,
        "-m",
        "adplatform.cli",
        "archive",
        "submit",
        "--master",
        master,
        "--",
        "--until-idle",
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr_bytes = await asyncio.wait_for(proc.communicate(), 280)
        stderr = stderr_bytes.decode(errors="replace")
        assert proc.returncode == 0, stderr[-4000:]
        layout = ArchiveLayout(config.archive_dir)
        with read_lock(layout):
            archived = [orjson.loads(raw)["event_id"] for raw in iter_lines(snapshot(layout).files)]
        assert sorted(archived) == sorted(e.event_id for e in events)
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(config, [config.topics.feedback])
