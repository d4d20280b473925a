"""Is an event in ``ad-feedback`` already? The look-up before an orphaned charge is published again.

A retried feedback whose first charge is past every worker's publish window either had its event
acknowledged (the answer was lost on the way back, or its worker died right after) or never published
(its worker died between the debit and the publish). Reading the topic from a little before the first
charge's time to its end offsets now tells which, so a copy is published only for the second: rare (only
retries after a fault take this path) and bounded (a few seconds of the topic, read by one consumer per
worker, one look-up at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adplatform.kafka import start_or_close

logger = logging.getLogger(__name__)

#: Read from this long before the first charge's time: a producer stamps a record when it is sent, a
#: little after the debit, but clocks of hosts differ.
SLACK_MS = 5_000
#: Longest one look-up may take (its caller answers 503 after its publish timeout anyway).
LOOK_UP_TIMEOUT_S = 5.0


class _EventId(msgspec.Struct):
    event_id: str


_decoder = msgspec.json.Decoder(_EventId)


class PublishedEvents:
    """Looks event ids up in one topic with a consumer of its own (no group), started on first use."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one consumer: its assignment and positions are one look-up's

    async def aclose(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()
            self._consumer = None

    async def __call__(self, since: dict[str, int]) -> set[str]:
        """Which of ``since``'s event ids (→ the earliest time, ms, it may have been published) are in the
        topic; raises ``KafkaError``/``TimeoutError`` when the topic cannot be read to its end."""
        if not since:
            return set()
        async with self._lock, asyncio.timeout(LOOK_UP_TIMEOUT_S):
            try:
                return await self._find(since)
            except (KafkaError, OSError, TimeoutError):
                await self.aclose()  # a fresh consumer next time
                raise

    async def _find(self, since: dict[str, int]) -> set[str]:
        consumer = self._consumer
        if consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
            await start_or_close(consumer)
            self._consumer = consumer
        partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._topic) or set()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        if not tps:
            return set()
        consumer.assign(tps)
        start_ms = min(since.values()) - SLACK_MS
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        ends = await consumer.end_offsets(tps)
        remaining: set[TopicPartition] = set()
        for tp in tps:
            found = starts.get(tp)
            if found is None:  # nothing at or after that time in this partition
                continue
            consumer.seek(tp, found.offset)
            if found.offset < ends[tp]:
                remaining.add(tp)
        wanted = set(since)
        seen: set[str] = set()
        while remaining and seen != wanted:
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp] or record.value is None:
                        continue
                    try:
                        event_id = _decoder.decode(record.value).event_id
                    except msgspec.DecodeError:
                        continue
                    if event_id in wanted:
                        seen.add(event_id)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return seen
