"""A Redis Cluster of local processes: 3 masters + 3 replicas (``redis-server --cluster-enabled yes``), each
with its own folder, AOF persistence as the single node's, and a 2 s node timeout so a failover takes
seconds. Used by ``stack up --topology cluster`` and by the tests' own cluster (other ports, other folder).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from devstack.paths import StackError
from devstack.redis import REDIS_PERSISTENCE

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
    folder = node_dir(root, port)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        # A replica syncs at once (the default waits 5 s for more replicas to share the transfer).
        "--repl-diskless-sync-delay", "0",
        *REDIS_PERSISTENCE,
        "--daemonize", "yes", "--pidfile", str(pid_file(root, port)),
        "--logfile", str(log), "--protected-mode", "yes",
    ]  # fmt: skip
    subprocess.run(cmd, check=True)


def start_cluster(root: Path, ports: Sequence[int], logs: Path, *, timeout_s: float = 60) -> None:
    """Start the nodes of ``ports`` (3 masters then 3 replicas), create the cluster once, wait until every
    node says ``cluster_state:ok``. Idempotent: a formed cluster is left as it is."""
    logs.mkdir(parents=True, exist_ok=True)
    for port in ports:
        start_node(root, port, logs / f"redis-{port}.log")
    _wait(lambda: all(pong(p) for p in ports), timeout_s, "Redis Cluster nodes")
    if cluster_info(ports[0]).get("cluster_slots_assigned", "0") == "0":
        formed = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        if formed.returncode != 0:
            output = formed.stdout[-2000:] + formed.stderr
            raise StackError("redis-cli could not form the cluster: " + output)
    _wait(lambda: all(healthy(p, len(ports)) for p in ports), timeout_s, "Redis Cluster (cluster_state:ok)")
    # Until its replica is in sync a master cannot acknowledge a debit (WAIT 1).
    _wait(lambda: all(replicas_online(p) for p in ports if role(p) == "master"), timeout_s, "Redis replicas")


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
