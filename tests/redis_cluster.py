"""The tests' own Redis Cluster: 6 ``redis-server`` processes (3 masters + 3 replicas) started once per test
session (a few seconds) under ``.stack/test-redis-cluster/<pid of the session>/``, on 6 free ports of
17200-17999 (their cluster bus ports, 10000 above, free too), and stopped by their PIDs at the end. Two
sessions at once get two clusters; a session killed before its end leaves its nodes behind, and the next
session stops them (their PID files name a session that no longer runs). It is never the cluster stack's
(17101-17109): a test may flush it or kill its nodes.

Tests that use it are marked ``redis_cluster``; they run in the normal suite (no stack needed, only the
``redis-server`` and ``redis-cli`` binaries).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from adplatform.config import load_config
from adplatform.pidfile import read_pid_file, signal_if_same, why_stale
from adplatform.redis_client import open_redis
from devstack import redis_cluster

NODES = 6


class SessionCluster:
    """One session's cluster: its folder, ports and URL, and its nodes by port (to kill and restart one)."""

    def __init__(self, root: Path, ports: tuple[int, ...]) -> None:
        self.root = root
        self.ports = ports
        self.url = redis_cluster.seeds_url(ports)

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
        live = [p for p in self.ports if redis_cluster.pong(p)]
        while not all(redis_cluster.healthy(p, len(self.ports)) for p in live):
            assert time.monotonic() < deadline, "the test cluster did not become healthy"
            time.sleep(0.1)

    def stop(self) -> None:
        for port in self.ports:
            record = read_pid_file(redis_cluster.pid_file(self.root, port))
            if record is not None and signal_if_same(
                record, signal.SIGKILL, redis_cluster.redis_cmdline(port)
            ):
                deadline = time.monotonic() + 10
                while why_stale(record) is None and time.monotonic() < deadline:
                    time.sleep(0.02)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, low: int, high: int, step: int) -> tuple[int, ...]:
    """``count`` consecutive ports in ``low``..``high - 1`` with their bus ports (+10,000) free too; the first
    base tried depends on the pid, so concurrent sessions start apart."""
    for base in range(low + os.getpid() % ((high - low) // step) * step, high, step):
        ports = tuple(range(base, base + count))
        if all(_bindable(p) and _bindable(p + 10_000) for p in ports):
            return ports
    raise RuntimeError(f"no {count} free ports (and bus ports) in {low}-{high - 1} for a test Redis Cluster")


def _stop_stale(parent: Path) -> None:
    """Stop the clusters of sessions that ended without stopping them, and remove their folders."""
    for folder in parent.glob("*"):
        if not folder.is_dir():
            folder.unlink(missing_ok=True)
            continue
        owner = int(folder.name) if folder.name.isdigit() else 0
        if owner and Path(f"/proc/{owner}").exists():
            continue  # a session that still runs (its cluster is its own)
        ports_file = folder / "ports"
        if ports_file.exists():
            SessionCluster(folder, tuple(int(p) for p in ports_file.read_text().split())).stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[SessionCluster]:
    parent = load_config().stack_dir / "test-redis-cluster"
    parent.mkdir(parents=True, exist_ok=True)
    _stop_stale(parent)
    root = parent / str(os.getpid())
    root.mkdir()
    cluster = SessionCluster(root, free_ports(NODES, 17200, 18000, 10))
    (root / "ports").write_text(" ".join(map(str, cluster.ports)))
    try:
        redis_cluster.start_cluster(root, cluster.ports, root)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


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
