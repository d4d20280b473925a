"""The stack's Kafka: one KRaft broker and controller on :19092/:19093 from the Maven jars, data under
``.stack/kafka``, started in its own session so it outlives the CLI."""

from __future__ import annotations

import base64
import subprocess
import uuid
from typing import Final

from adplatform.pidfile import age_s, write_pid_file
from devstack.paths import KAFKA_CONTROLLER_PORT, KAFKA_PORT, Paths, StackError
from devstack.pids import read_pid
from devstack.ports import ensure_free

KAFKA_PROPERTIES = """\
# KRaft, one combined broker + controller, private ports. Written by `adplatform stack up`.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.hours=168
"""

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


#: The broker's JVM memory and collector. A fixed 1 GB heap, as Kafka's own start script gives it: a young
#: generation large enough that a broker loaded by serve collects every 12-16 s instead of every 2-3 s.
#: One parallel GC thread: the broker shares a small machine with the ad server, and a young collection on
#: every core at once stalls all of its workers together (serve's p99; BENCHMARKS.md, "HTTP").
KAFKA_JVM: Final = ("-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:ParallelGCThreads=1")


#: A broker younger than this is still compiling its hot paths (its JIT): under feedback load its CPU per
#: request is 3-5x a warm broker's for its first ~25 s of load (BENCHMARKS.md, 2026-12-07), and the first
#: demo after a broker start missed the demo's latency targets (feedback p99 52-63 ms against 25-30 ms).
#: The demo and the feedback bench load a younger broker first, unmeasured (the serve bench does not need to).
YOUNG_BROKER_S: Final = 300.0


def young_broker_age_s(paths: Paths) -> float | None:
    """Seconds since the stack's broker started when it is younger than ``YOUNG_BROKER_S``; ``None`` for
    an older broker, or when no broker of the stack's runs here (a warm-up would not reach it)."""
    pid = read_pid(paths, "kafka")
    age = None if pid is None else age_s(pid)
    return age if age is not None and age < YOUNG_BROKER_S else None


def kafka_java(paths: Paths, main: str, *args: str) -> list[str]:
    return [
        "java", *KAFKA_JVM, "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{paths.kafka / 'log4j.properties'}",
        "-cp", f"{paths.kafka_jars}/*", main, *args,
    ]  # fmt: skip


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never beginning with '-'.

    Kafka's own ``Uuid.randomUuid`` draws again in that case too: one id in 64 would begin with '-' and
    be read as an option by ``kafka-storage format``.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def start_kafka(paths: Paths) -> None:
    if read_pid(paths, "kafka") is not None:
        return
    ensure_free(KAFKA_PORT, "Kafka")
    ensure_free(KAFKA_CONTROLLER_PORT, "Kafka's controller")
    paths.kafka.mkdir(parents=True, exist_ok=True)
    props = paths.kafka / "server.properties"
    props.write_text(
        KAFKA_PROPERTIES.format(port=KAFKA_PORT, controller=KAFKA_CONTROLLER_PORT, data=paths.kafka / "data")
    )
    (paths.kafka / "log4j.properties").write_text(LOG4J_PROPERTIES.format(log=paths.logs / "kafka.log"))
    cluster_file = paths.kafka / "cluster.id"
    if not cluster_file.exists():
        cluster_file.write_text(new_cluster_id())
    cluster_id = cluster_file.read_text().strip()
    # `--cluster-id=ID`, one argument: an id kept from an older checkout may begin with '-', and as a
    # separate argument the tool's parser would take it for an option.
    fmt = subprocess.run(
        kafka_java(paths, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                    "--config", str(props), "--ignore-formatted"),
        capture_output=True,
        text=True,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise StackError(f"Kafka storage format failed: {fmt.stdout}{fmt.stderr}")
    with (paths.logs / "kafka.out").open("ab") as out:
        proc = subprocess.Popen(
            kafka_java(paths, "kafka.Kafka", str(props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI; `down` stops it by PID
        )
    # With its start time and boot id: after a reboot the file names no process, whoever has the PID.
    write_pid_file(paths.pid_file("kafka"), proc.pid)
