"""Kafka glue shared by every process: topic creation and client factories with the house settings.

Every client is aiokafka's but one: the ad server's two bulk streams (served ads, request samples) are
produced by librdkafka (confluent-kafka; ``native_producer_settings``), which builds and sends their batches
on its own threads instead of on the serving event loop (``adserver.sync.shipper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Literal, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from adplatform.config import Config, TopicConfig

#: Record-batch compression codecs aiokafka writes (snappy, lz4 and zstd through cramjam).
Compression: TypeAlias = Literal["gzip", "snappy", "lz4", "zstd"]

logger = logging.getLogger(__name__)

#: Per-topic settings. ad-changes is compacted: reading it from offset 0 rebuilds the whole active set.
TOPIC_SETTINGS: dict[str, dict[str, str]] = {
    "ad-changes": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"},
    "campaign-instructions-dlq": {"retention.ms": str(30 * 24 * 3600 * 1000)},
    # Diagnosis reads the last minutes of it: a day is plenty, and bounds its disk use.
    "ad-requests-sample": {"retention.ms": str(24 * 3600 * 1000)},
}

#: Longest a bounded mode's "drained?" check may take before it counts as "not yet".
DRAINED_CHECK_S = 10.0


async def start_or_close(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient) -> None:
    """Start ``client``; when that fails (no broker answers), close it before the error propagates, so the
    command's one-line error is not followed by aiokafka's "Unclosed AIOKafka..." warnings."""
    try:
        await client.start()
    except BaseException:
        if isinstance(client, AIOKafkaAdminClient):
            await client.close()
        else:
            await client.stop()
        raise


def topic_settings(topics: TopicConfig, name: str) -> dict[str, str]:
    base = name[len(topics.prefix) :] if topics.prefix and name.startswith(topics.prefix) else name
    settings = dict(TOPIC_SETTINGS.get(base, {}))
    if topics.replication >= 3:  # one broker may be down and acks=all writes still succeed
        settings["min.insync.replicas"] = str(topics.replication - 1)
    return settings


async def ensure_topics(config: Config, names: Iterable[str] | None = None) -> list[str]:
    """Create the platform's topics (or ``names``) if missing; returns those created. Idempotent."""
    wanted = list(names) if names is not None else list(config.topics.all())
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap, request_timeout_ms=10_000)
    await start_or_close(admin)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            new = [
                NewTopic(
                    name=n,
                    num_partitions=config.topics.partitions,
                    replication_factor=config.topics.replication,
                    topic_configs=topic_settings(config.topics, n),
                )
                for n in missing
            ]
            # A concurrent creator may win the race; the topic is there, which is what we want.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()


async def delete_topics(config: Config, names: Iterable[str] | None = None) -> list[str]:
    """Delete the platform's topics under ``config``'s prefix (or ``names``), those that exist; returns
    them. For the throwaway prefixes of tests, benches and fault runs: a broker holding thousands of dead
    partitions is slower to start and to answer metadata, and each partition keeps its files."""
    wanted = list(names) if names is not None else list(config.topics.all())
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap, request_timeout_ms=30_000)
    await start_or_close(admin)
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in wanted if t in existing]
        for start in range(0, len(mine), 100):
            await admin.delete_topics(mine[start : start + 100])
        return mine
    finally:
        await admin.close()


async def wait_for_topics(config: Config, names: Iterable[str], timeout_s: float = 30.0) -> None:
    """Wait until every topic has leaders for all its partitions (fresh topics take a moment)."""
    wanted = set(names)
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap)
    await start_or_close(consumer)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            topics = await consumer.topics()
            if wanted <= topics and all(consumer.partitions_for_topic(t) for t in wanted):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics not ready after {timeout_s}s: {sorted(wanted - topics)}")
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
    finally:
        await consumer.stop()


def make_producer(
    config: Config,
    *,
    linger_ms: int = 5,
    client_id: str = "adplatform",
    compression_type: Compression | None = None,
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) with the given linger: batched, never a flush per message; its
    record batches compressed with ``compression_type`` (every consumer here reads them: aiokafka with
    cramjam, Spark's Kafka client natively)."""
    return AIOKafkaProducer(
        bootstrap_servers=config.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        compression_type=compression_type,
        request_timeout_ms=10_000,
    )


def native_producer_settings(
    config: Config,
    *,
    client_id: str,
    compression_type: Compression,
    queued_records: int,
    delivery_timeout_ms: int,
    linger_ms: int = 5,
) -> dict[str, str | int | bool]:
    """librdkafka producer settings with ``make_producer``'s house guarantees: idempotent, acks=all, record
    batches of up to 256 KiB compressed with ``compression_type``. At most ``queued_records`` records wait
    in its queue (``produce`` then refuses: the caller drops), each given up after ``delivery_timeout_ms``.
    ``linger_ms`` gathers the records a caller hands over in one burst into the same batches."""
    return {
        "bootstrap.servers": config.kafka_bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": compression_type,
        "linger.ms": linger_ms,
        "batch.size": 256 * 1024,
        "queue.buffering.max.messages": queued_records,
        # The queue's bytes are bounded too (librdkafka's default is 1 GiB): 64 MiB.
        "queue.buffering.max.kbytes": 64 * 1024,
        "message.timeout.ms": delivery_timeout_ms,
        "request.timeout.ms": 10_000,
    }


async def kafka_alive(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when the broker answers a metadata request."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
        return True
    except (KafkaConnectionError, TimeoutError, OSError):
        return False
    finally:
        await admin.close()


async def seek_to_first(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """Seek each of ``tps`` (assigned, no group) to its first offset, by number; the offsets.

    Not ``seek_to_beginning``: that only asks for a reset, and ``assign`` has already started one to the
    consumer's default (latest). Both leave the partition "awaiting reset", so whichever answer comes
    last wins: on several brokers the latest one often did, and a reader took the partition's end for its
    position and missed every record in it (the 3-broker cluster stack: whole partitions of
    ``ad-changes`` missing from an ad server's index). An explicit seek ends the wait for a reset, and
    aiokafka drops the answer of one still in flight."""
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets(list(tps))
    for tp in tps:
        consumer.seek(tp, starts[tp])
    return starts


async def read_to_end(
    bootstrap: str, topic: str, *, start: dict[int, int] | None = None, timeout_s: float = 60.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from ``start`` (partition → offset; default: the beginning) to its end
    offsets now (no consumer group; bounded)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await start_or_close(consumer)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return records
        consumer.assign(tps)
        await seek_to_first(consumer, tps)
        for tp in tps:
            if start and tp.partition in start:
                consumer.seek(tp, start[tp.partition])
        try:
            async with asyncio.timeout(timeout_s):  # every await below, ``position`` included
                ends = await consumer.end_offsets(tps)
                remaining = {tp for tp in tps if ends[tp] > (start or {}).get(tp.partition, 0)}
                while remaining:
                    batch = await consumer.getmany(*remaining, timeout_ms=500)
                    for tp, part in batch.items():
                        records.extend(r for r in part if r.offset < ends[tp])
                    for tp in list(remaining):
                        if await consumer.position(tp) >= ends[tp]:
                            remaining.discard(tp)
        except TimeoutError:
            raise TimeoutError(f"{topic}: not read to its end offsets within {timeout_s}s") from None
    finally:
        await consumer.stop()
    return records


async def drained(consumer: AIOKafkaConsumer) -> bool:
    """True when the consumer has partitions and its position is at the end of each (bounded modes)."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    try:
        # Bounded: ``position`` waits (and loops) until a reset position is known, so an unbounded
        # call could keep a bounded mode from ever seeing its stop event.
        async with asyncio.timeout(DRAINED_CHECK_S):
            ends = await consumer.end_offsets(list(assignment))
            for tp in assignment:
                if await consumer.position(tp) < ends[tp]:
                    return False
    except TimeoutError:
        return False
    return True
