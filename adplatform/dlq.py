"""Reading the dead-letter queue of campaign instructions: every rejected message with its reason."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adplatform.config import Config
from adplatform.kafka import read_to_end


@dataclass(frozen=True)
class DlqEntry:
    """One rejected instruction: where it sits in the DLQ topic, the original message and the reason."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    source: str
    timestamp_ms: int


def _entry(r: ConsumerRecord[bytes, bytes]) -> DlqEntry:
    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
    return DlqEntry(
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value or b"",
        reason=headers.get("reason", "?"),
        source=headers.get("source", "?"),
        timestamp_ms=r.timestamp,
    )


async def read_dlq(config: Config, *, limit: int | None = None) -> list[DlqEntry]:
    """Every DLQ entry from the beginning to the current end (bounded; no consumer group), oldest first."""
    entries: list[DlqEntry] = []
    for r in await read_to_end(config.kafka_bootstrap, config.topics.instructions_dlq):
        entries.append(_entry(r))
    entries.sort(key=lambda e: e.timestamp_ms)
    return entries[:limit] if limit is not None else entries


async def read_entry(
    config: Config, partition: int, offset: int, *, timeout_s: float = 10.0
) -> DlqEntry | None:
    """The DLQ entry at ``partition``/``offset``, or None when there is none (no such partition, an
    offset past the end or already deleted by retention)."""
    topic = config.topics.instructions_dlq
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:  # metadata of a topic this new client has not asked about yet (as read_to_end)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        if partition not in partitions:
            return None
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= offset < end:
            return None
        consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            for record in (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, []):
                if record.offset == offset:
                    return _entry(record)
                return None  # compacted away: the next record came instead
        raise TimeoutError(f"{topic}/{partition}/{offset}: not read within {timeout_s}s")
    finally:
        # Let the consumer's own start-up task run once: aiokafka's stop() re-raises the cancellation of
        # a task cancelled before it ever ran.
        await asyncio.sleep(0)
        await consumer.stop()
