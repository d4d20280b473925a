"""The tests' own Redis Cluster: 6 ``redis-server`` processes (3 masters + 3 replicas) on ports 17201-17206
under ``.stack/test-redis-cluster/``, started fresh once per session (a few seconds) and stopped by their
PIDs at the end (and at the start, if a killed session left them running). It is not the cluster stack's
(17101-17106): a test may flush it or kill its nodes.

Tests that use it are marked ``redis_cluster``; they run in the normal suite (no stack needed, only the
``redis-server`` and ``redis-cli`` binaries).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest
from redis.asyncio.cluster import RedisCluster

from adplatform.config import load_config
from adplatform.pidfile import read_pid_file, signal_if_same, why_stale
from adplatform.redis_client import open_redis
from devstack import redis_cluster

TEST_CLUSTER_PORTS: Final = (17201, 17202, 17203, 17204, 17205, 17206)


class SessionCluster:
    """The session's cluster: its URL, and its nodes by port (to kill and restart one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = redis_cluster.seeds_url(TEST_CLUSTER_PORTS)

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        record = read_pid_file(redis_cluster.pid_file(self.root, port))
        assert record is not None and signal_if_same(record, sig, redis_cluster.redis_cmdline(port))
        deadline = time.monotonic() + 10
        while why_stale(record, redis_cluster.redis_cmdline(port)) is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, port: int) -> None:
        redis_cluster.start_node(self.root, port, self.root / f"redis-{port}.log")

    def wait_healthy(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        live = [p for p in TEST_CLUSTER_PORTS if redis_cluster.pong(p)]
        while not all(redis_cluster.healthy(p, len(TEST_CLUSTER_PORTS)) for p in live):
            assert time.monotonic() < deadline, "the test cluster did not become healthy"
            time.sleep(0.1)

    def stop(self) -> None:
        for port in TEST_CLUSTER_PORTS:
            record = read_pid_file(redis_cluster.pid_file(self.root, port))
            if record is not None and signal_if_same(
                record, signal.SIGKILL, redis_cluster.redis_cmdline(port)
            ):
                deadline = time.monotonic() + 10
                while why_stale(record) is None and time.monotonic() < deadline:
                    time.sleep(0.02)


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[SessionCluster]:
    root = load_config().stack_dir / "test-redis-cluster"
    cluster = SessionCluster(root)
    cluster.stop()  # a session killed before its end left them running
    shutil.rmtree(root, ignore_errors=True)
    try:
        redis_cluster.start_cluster(root, TEST_CLUSTER_PORTS, root)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_client(test_cluster: SessionCluster) -> AsyncIterator[RedisCluster]:
    """A client of the test cluster, every master flushed first (the cluster is the tests' own)."""
    test_cluster.wait_healthy()
    client = open_redis(test_cluster.url, socket_timeout=5)
    assert isinstance(client, RedisCluster)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()
