"""How ``devstack.redis_cluster.start_cluster`` lays out masters and replicas, on a cluster of the test's own
(marker ``redis_cluster``: ``redis-server`` processes on free ports under ``tmp_path``, never the stack's).

The cluster stack moved from 3 masters + 3 replicas to 3 masters with 2 replicas each: a directory formed
with the older layout keeps its keys, its 3 new nodes join as replicas, and a later start moves replicas
back to a master left with fewer.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from devstack import redis_cluster
from tests.redis_cluster import SessionCluster, free_ports

NODES_CLUSTER = """\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave \
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail \
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
"""


def test_cluster_nodes_reads_masters_replicas_and_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = f"${len(NODES_CLUSTER)}\r\n{NODES_CLUSTER}\r\n".encode()
    monkeypatch.setattr(redis_cluster, "_ask", lambda port, command, timeout_s=1.0: reply)
    nodes = {n.port: n for n in redis_cluster.cluster_nodes(30001)}
    assert sorted(nodes) == [30001, 30002, 30003, 30004, 30005]
    assert [p for p, n in sorted(nodes.items()) if n.serves_slots] == [30001, 30002, 30003]
    assert nodes[30004].master_id == nodes[30001].node_id and not nodes[30004].failed
    assert nodes[30005].failed
    by_master = redis_cluster._replicas_by_master(list(nodes.values()))
    port_of = {n.node_id: n.port for n in nodes.values()}
    assert {port_of[m]: [r.port for r in rs] for m, rs in by_master.items()} == {
        30001: [30004],
        30002: [],  # its one replica is failed
        30003: [],
    }


@pytest.fixture
def nine(tmp_path: Path) -> Iterator[SessionCluster]:
    # Above the session cluster's bases (17200-17999), with their bus ports free too.
    nodes = SessionCluster(tmp_path, free_ports(9, 18000, 19000, 20))
    try:
        yield nodes
    finally:
        nodes.stop()


def _layout(ports: Sequence[int]) -> dict[int, int]:
    """Replicas in sync per master port."""
    return {p: redis_cluster.replicas_online(p) for p in ports if redis_cluster.role(p) == "master"}


@pytest.mark.redis_cluster
def test_an_older_three_plus_three_cluster_gains_a_second_replica_per_master_and_keeps_its_keys(
    nine: SessionCluster,
) -> None:
    ports, logs = nine.ports, nine.root / "logs"
    redis_cluster.start_cluster(nine.root, ports[:6], logs, replicas=1)
    assert sorted(_layout(ports[:6]).values()) == [1, 1, 1]
    seeds = ",".join(f"127.0.0.1:{p}" for p in ports[:6])
    keys = [f"k{{{i}}}" for i in range(30)]  # over every master's slots
    for key in keys:
        assert _cli(seeds, "SET", key, "v").endswith("OK")

    redis_cluster.start_cluster(nine.root, ports, logs, replicas=2)
    assert sorted(_layout(ports).values()) == [2, 2, 2]
    assert all(redis_cluster.healthy(p, 9) for p in ports)
    assert all(_cli(seeds, "GET", key) == "v" for key in keys)

    # A replica moved to another master (as an uneven failover history can leave them): the next start
    # moves one back.
    nodes = redis_cluster.cluster_nodes(ports[0])
    by_master = redis_cluster._replicas_by_master(nodes)
    first, second = list(by_master)[:2]
    mover = by_master[first][0]
    assert _cli(f"127.0.0.1:{mover.port}", "CLUSTER", "REPLICATE", second) == "OK"
    deadline = time.monotonic() + 20
    while not any(
        n.port == mover.port and n.master_id == second for n in redis_cluster.cluster_nodes(ports[0])
    ):
        assert time.monotonic() < deadline, "the move was not seen"
        time.sleep(0.1)
    redis_cluster.start_cluster(nine.root, ports, logs, replicas=2)
    assert sorted(_layout(ports).values()) == [2, 2, 2]


def _cli(seeds: str, *args: str) -> str:
    """One command through ``redis-cli -c`` (follows ``MOVED``) at the first seed; its output."""
    host, _, port = seeds.split(",")[0].rpartition(":")
    done = subprocess.run(
        ["redis-cli", "-c", "-h", host, "-p", port, *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip()
