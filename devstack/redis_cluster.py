"""A Redis Cluster of local processes (``redis-server --cluster-enabled yes``), each with its own folder, AOF
persistence as the single node's, and a 2 s node timeout so a failover takes seconds. Used by ``stack up
--topology cluster`` (3 masters with 2 replicas each) and by the tests' own cluster (3 masters with 1
replica each, other ports, other folder).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devstack.paths import StackError
from devstack.ports import ensure_free
from devstack.redis import REDIS_DIAGNOSTICS, REDIS_PERSISTENCE

#: Milliseconds without an answer before a master is failed over to its replica.
NODE_TIMEOUT_MS: Final = 2000


def _ask(port: int, command: bytes, timeout_s: float = 1.0) -> bytes:
    """One inline command to a node; its raw reply (b"" when the node does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(command + b"\r\n")
            chunks: list[bytes] = []
            while True:
                data = sock.recv(65536)
                chunks.append(data)
                reply = b"".join(chunks)
                if not data or _complete(reply):
                    return reply
    except OSError:
        return b""


def _complete(reply: bytes) -> bool:
    if reply.startswith(b"$"):  # bulk string: length line, then that many bytes and CRLF
        head, _, rest = reply.partition(b"\r\n")
        return len(rest) >= int(head[1:]) + 2
    return reply.endswith(b"\r\n")


def pong(port: int) -> bool:
    return _ask(port, b"PING").startswith(b"+PONG")


def cluster_info(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of one node as a dict (empty when it does not answer)."""
    raw = _ask(port, b"CLUSTER INFO").decode(errors="replace")
    return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


def role(port: int) -> str:
    """``master``, ``slave`` or ``""`` (down)."""
    raw = _ask(port, b"ROLE").decode(errors="replace").split("\r\n")
    return raw[2] if len(raw) > 2 else ""


def node_dir(root: Path, port: int) -> Path:
    return root / f"redis-{port}"


def pid_file(root: Path, port: int) -> Path:
    return node_dir(root, port) / "redis.pid"


def start_node(root: Path, port: int, log: Path) -> None:
    """Start one cluster node (daemonized; it writes its PID file) unless it answers already."""
    if pong(port):
        return
    ensure_free(port, f"Redis Cluster node :{port}")
    folder = node_dir(root, port)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        # A replica syncs at once (the default waits 5 s for more replicas to share the transfer).
        "--repl-diskless-sync-delay", "0",
        *REDIS_PERSISTENCE, *REDIS_DIAGNOSTICS,
        "--daemonize", "yes", "--pidfile", str(pid_file(root, port)),
        "--logfile", str(log), "--protected-mode", "yes",
    ]  # fmt: skip
    subprocess.run(cmd, check=True)


def start_cluster(
    root: Path, ports: Sequence[int], logs: Path, *, replicas: int = 1, timeout_s: float = 60
) -> None:
    """Start the nodes of ``ports``, create the cluster once (the first ``len(ports) / (1 + replicas)``
    ports as masters, ``replicas`` replicas each), wait until every node says ``cluster_state:ok`` and
    every master has its replicas in sync. Idempotent: a formed cluster keeps its data; nodes of ``ports``
    it does not know yet (a cluster formed with fewer replicas) join it as replicas, and replicas move to
    the masters that have fewer than ``replicas``."""
    if len(ports) % (1 + replicas):
        raise StackError(f"{len(ports)} Redis nodes do not make masters with {replicas} replicas each")
    logs.mkdir(parents=True, exist_ok=True)
    for port in ports:
        start_node(root, port, logs / f"redis-{port}.log")
    _wait(lambda: all(pong(p) for p in ports), timeout_s, "Redis Cluster nodes")
    members = [p for p in ports if int(cluster_info(p).get("cluster_known_nodes", "1")) > 1]
    if not members:
        formed = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        if formed.returncode != 0:
            output = formed.stdout[-2000:] + formed.stderr
            raise StackError("redis-cli could not form the cluster: " + output)
    else:
        _wait(lambda: all(healthy(p, len(members)) for p in members), timeout_s, "the formed Redis Cluster")
        for port in ports:
            if port not in members:
                _join_as_replica(port, members[0], timeout_s)
        _balance(members[0], replicas, timeout_s)
    _wait(lambda: all(healthy(p, len(ports)) for p in ports), timeout_s, "Redis Cluster (cluster_state:ok)")
    # Until its replicas are in sync a master cannot acknowledge a debit (WAIT 1); with two, it still can
    # after one of them is promoted.
    _wait(
        lambda: all(replicas_online(p) >= replicas for p in ports if role(p) == "master"),
        timeout_s,
        f"Redis replicas ({replicas} per master)",
    )


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``: a node's id, port, whether it is a master serving slots, and (for a
    replica) its master's id."""

    node_id: str
    port: int
    serves_slots: bool
    master_id: str | None
    failed: bool


def cluster_nodes(port: int) -> list[ClusterNode]:
    """The cluster as the node on ``port`` sees it (empty when it does not answer)."""
    raw = _ask(port, b"CLUSTER NODES").decode(errors="replace")
    out = []
    for line in raw.splitlines()[1:]:  # the first line is the bulk string's length
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        out.append(
            ClusterNode(
                node_id=fields[0],
                port=int(fields[1].partition("@")[0].rpartition(":")[2]),
                serves_slots="master" in flags and len(fields) > 8,
                master_id=fields[3] if "slave" in flags else None,
                failed="fail" in flags or "noaddr" in flags,
            )
        )
    return out


def _replicas_by_master(nodes: Sequence[ClusterNode]) -> dict[str, list[ClusterNode]]:
    by_master: dict[str, list[ClusterNode]] = {n.node_id: [] for n in nodes if n.serves_slots}
    for n in nodes:
        if n.master_id in by_master and not n.failed:
            by_master[n.master_id].append(n)
    return by_master


def _join_as_replica(port: int, member: int, timeout_s: float) -> None:
    """Add the empty node on ``port`` to ``member``'s cluster as a replica of the master with the fewest
    (``redis-cli --cluster add-node`` refuses a node that holds keys: nothing is overwritten)."""
    by_master = _replicas_by_master(cluster_nodes(member))
    if not by_master:
        raise StackError(f"Redis node :{member} lists no master serving slots")
    target = min(by_master, key=lambda m: len(by_master[m]))
    added = subprocess.run(
        ["redis-cli", "--cluster", "add-node", f"127.0.0.1:{port}", f"127.0.0.1:{member}",
         "--cluster-slave", "--cluster-master-id", target],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    if added.returncode != 0:
        raise StackError(
            f"redis-cli could not add :{port} as a replica: {added.stdout[-2000:]}{added.stderr}"
        )

    def replicating() -> bool:
        return any(n.port == port and n.master_id == target for n in cluster_nodes(member))

    _wait(replicating, timeout_s, f"Redis node :{port} as a replica")


def _balance(member: int, replicas: int, timeout_s: float) -> None:
    """Move replicas from masters with more than ``replicas`` to masters with fewer (``CLUSTER REPLICATE``
    on the moved replica); a failover or an older layout can leave them uneven. Each move waits until
    ``member`` sees it, so the next is planned on the current layout."""
    by_master = _replicas_by_master(cluster_nodes(member))
    short = [m for m, rs in by_master.items() for _ in range(replicas - len(rs))]
    spare = [r for rs in by_master.values() for r in rs[replicas:]]
    for master_id, replica in zip(short, spare, strict=False):
        if not _ask(replica.port, f"CLUSTER REPLICATE {master_id}".encode()).startswith(b"+OK"):
            raise StackError(f"Redis node :{replica.port} refused to replicate {master_id}")

        def moved(port: int = replica.port, target: str = master_id) -> bool:
            return any(n.port == port and n.master_id == target for n in cluster_nodes(member))

        _wait(moved, timeout_s, f"Redis node :{replica.port} as a replica of {master_id}")


def replicas_online(port: int) -> int:
    """How many replicas of the master on ``port`` are in sync (``INFO replication``)."""
    raw = _ask(port, b"INFO replication").decode(errors="replace")
    return sum(1 for line in raw.splitlines() if line.startswith("slave") and "state=online" in line)


def healthy(port: int, nodes: int) -> bool:
    info = cluster_info(port)
    return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(nodes)


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"{what} not ready within {timeout_s:.0f}s")


def redis_cmdline(port: int) -> Callable[[Sequence[str]], bool]:
    """Whether a process's command line is the cluster node of ``port`` (its title:
    ``redis-server 127.0.0.1:<port> [cluster]``)."""

    def match(argv: Sequence[str]) -> bool:
        return bool(argv) and argv[0].startswith("redis-server") and f"127.0.0.1:{port}" in " ".join(argv)

    return match


def seeds_url(ports: Sequence[int]) -> str:
    """The ``redis+cluster://`` URL naming every node as a seed (any one that answers will do)."""
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
