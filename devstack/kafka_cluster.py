"""Three Kafka brokers in KRaft combined mode (each a broker and one of a 3-voter controller quorum) on
private ports, from the stack's Maven jars, each with a small heap: the cluster stack's Kafka.

Replication: internal topics take 3 replicas and ``min.insync.replicas=2``; the platform's topics are
created by ``adplatform.kafka.ensure_topics`` with ``ADP_KAFKA_REPLICATION=3`` (the same settings), so an
``acks=all`` idempotent producer goes on writing with one broker down, and no acknowledged write is lost
with one broker gone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from adplatform.pidfile import write_pid_file
from devstack.kafka import LOG4J_PROPERTIES
from devstack.paths import StackError
from devstack.ports import ensure_free

#: Client ports of brokers 1..3; each node's controller listens 100 above.
KAFKA_CLUSTER_PORTS: Final = (19291, 19292, 19293)
CONTROLLER_OFFSET: Final = 100
#: Per broker; three of them share a small machine with Redis, Spark and the services.
KAFKA_HEAP: Final = "512m"

PROPERTIES = """\
# KRaft, node {node} of 3, combined broker + controller. Written by `adplatform stack up --topology cluster`.
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.hours=168
num.network.threads=2
num.io.threads=2
background.threads=2
"""


def node_dir(root: Path, node: int) -> Path:
    return root / f"kafka-{node}"


def pid_file(root: Path, node: int) -> Path:
    return node_dir(root, node) / "kafka.pid"


def bootstrap() -> str:
    return ",".join(f"127.0.0.1:{p}" for p in KAFKA_CLUSTER_PORTS)


def _java(jars: Path, folder: Path, main: str, *args: str) -> list[str]:
    return [
        "java", f"-Xms{KAFKA_HEAP}", f"-Xmx{KAFKA_HEAP}", "-XX:+UseG1GC", "-XX:ActiveProcessorCount=1",
        "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{folder / 'log4j.properties'}",
        "-cp", f"{jars}/*", main, *args,
    ]  # fmt: skip


def kafka_cmdline(root: Path, node: int) -> Callable[[Sequence[str]], bool]:
    props = str(node_dir(root, node) / "server.properties")
    return lambda argv: "kafka.Kafka" in argv and props in argv


def start_broker(root: Path, node: int, *, jars: Path, logs: Path, cluster_id: str) -> None:
    """Write node ``node``'s config, format its storage once, start it in a session of its own."""
    folder = node_dir(root, node)
    folder.mkdir(parents=True, exist_ok=True)
    voters = ",".join(
        f"{n}@127.0.0.1:{port + CONTROLLER_OFFSET}" for n, port in enumerate(KAFKA_CLUSTER_PORTS, start=1)
    )
    port = KAFKA_CLUSTER_PORTS[node - 1]
    ensure_free(port, f"Kafka broker {node}")
    ensure_free(port + CONTROLLER_OFFSET, f"Kafka broker {node}'s controller")
    props = folder / "server.properties"
    props.write_text(
        PROPERTIES.format(
            node=node, voters=voters, port=port, controller=port + CONTROLLER_OFFSET, data=folder / "data"
        )
    )
    (folder / "log4j.properties").write_text(LOG4J_PROPERTIES.format(log=logs / f"kafka-{node}.log"))
    fmt = subprocess.run(
        _java(jars, folder, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
              "--config", str(props), "--ignore-formatted"),
        capture_output=True, text=True,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise StackError(f"Kafka node {node} storage format failed: {fmt.stdout}{fmt.stderr}")
    with (logs / f"kafka-{node}.out").open("ab") as out:
        proc = subprocess.Popen(
            _java(jars, folder, "kafka.Kafka", str(props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI; `down` stops it by PID
        )
    write_pid_file(pid_file(root, node), proc.pid)
