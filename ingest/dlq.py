"""Reading the dead-letter queue of campaign instructions: every rejected message with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from adplatform.config import Config


@dataclass(frozen=True)
class DlqEntry:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    source: str
    timestamp_ms: int


async def read_dlq(config: Config, *, limit: int | None = None) -> list[DlqEntry]:
    """Every DLQ entry from the beginning to the current end (bounded; no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    entries: list[DlqEntry] = []
    try:
        topic = config.topics.instructions_dlq
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    entries.append(
                        DlqEntry(r.partition, r.offset, r.key, r.value or b"", headers.get("reason", "?"),
                                 headers.get("source", "?"), r.timestamp)
                    )  # fmt: skip
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if limit is not None and len(entries) >= limit:
                break
    finally:
        await consumer.stop()
    entries.sort(key=lambda e: e.timestamp_ms)
    return entries[:limit] if limit is not None else entries
