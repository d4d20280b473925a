"""Keeps one process's targeting index equal to ``ad-changes``: bootstrap from offset 0, then tail.

Shared by the ad server (one per worker, ``adserver.sync.refresher``) and the admin service (its own copy
of the index, for explain). Per process, a consumer without a group is assigned every partition of the
(compacted) topic. Bootstrap reads from the beginning to the end offsets taken when it starts, applies
everything in one ``apply_all`` and warms the candidate lists; only then is the process ready. Tailing then
applies each change as it arrives (the broker's long poll returns on the first new record: milliseconds),
and prunes ended flights every ``PRUNE_EVERY_S``; a burst of changes or of ended flights gives the event
loop a turn every ``TURN_S``, so serving goes on between them.

Degradation policy: Kafka down keeps the index as it is and serving goes on from it; the consumer is
re-created with backoff and resumes from the offsets already applied. A record that does not decode is
counted and skipped (it cannot stop the worker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adplatform.config import Config
from adplatform.errors import is_retriable
from adplatform.kafka import seek_to_first
from adplatform.wire import change_decoder
from index.campaign import Campaign
from index.index import TargetingIndex

logger = logging.getLogger(__name__)

#: How often ended flights are pruned from the candidate lists, seconds.
PRUNE_EVERY_S: Final = 60.0
#: The longest the tail applies changes or prunes before the event loop gets a turn (serving waits
#: meanwhile), seconds. One change costs ~0.3 ms at 100,000 campaigns (it moves every candidate list it
#: belongs to), so a burst of thousands (a bulk upload, a pause of every campaign of an advertiser, flights
#: that all end at midnight) would otherwise hold a worker for seconds (``python -m bench.index_churn``).
TURN_S: Final = 0.002


class LoopTurns:
    """Tells a long loop of synchronous work when ``turn_s`` has run since the event loop's last turn."""

    __slots__ = ("_since", "_turn_s", "given")

    def __init__(self, turn_s: float = TURN_S) -> None:
        self._turn_s = turn_s
        self._since = time.perf_counter()
        #: Turns given so far.
        self.given = 0

    def due(self) -> bool:
        return time.perf_counter() - self._since >= self._turn_s

    async def give(self) -> None:
        """Two turns of the event loop: whatever was ready (a request read) runs, and so does what it woke
        (a request handled in a task of its own, a timer), before the work goes on."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.given += 1
        self._since = time.perf_counter()


async def prune_in_turns(index: TargetingIndex, now_s: float, turns: LoopTurns | None = None) -> int:
    """``index.prune(now_s)``, giving the event loop a turn every ``TURN_S``; returns how many were pruned."""
    turns = turns or LoopTurns()
    pruned = 0
    for cid in index.ended(now_s):
        pruned += index.prune_ids((cid,), now_s)
        if turns.due():
            await turns.give()
    return pruned


class IndexFeed:
    """Owns the ``ad-changes`` consumer of one process and folds what it reads into ``index``."""

    def __init__(
        self, config: Config, index: TargetingIndex, *, client_id: str | None = None, turn_s: float = TURN_S
    ) -> None:
        self._config = config
        self._turn_s = turn_s
        self._client_id = client_id or f"index-feed-{os.getpid()}"
        self._topic = config.topics.ad_changes
        self.index = index
        self.ready = asyncio.Event()
        #: Next offset to apply, per partition: where a re-created consumer resumes.
        self._next: dict[TopicPartition, int] = {}
        #: End offsets seen at bootstrap: the lag's reference until fetches report high watermarks.
        self._ends: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self.applied = 0
        self.decode_errors = 0
        self.reconnects = 0
        self.bootstrap_s: float | None = None
        self.last_applied_s: float | None = None
        #: Turns of the event loop the tail gave in the middle of a batch of changes or of a prune.
        self.turns_given = 0

    def observe_propagation(self, seconds: float) -> None:
        """Called per change applied while tailing, with its age (record timestamp to apply)."""

    def lag(self) -> int | None:
        """Records in ``ad-changes`` not applied yet (last known high watermarks); None if unknown."""
        consumer = self._consumer
        if consumer is None or not self._next:
            return None
        # highwater() asserts that the partition is assigned; an assert is gone under ``python -O``, so
        # ask first. Unassigned means the consumer is being re-created: the lag is unknown meanwhile.
        assigned = consumer.assignment()
        total = 0
        for tp, next_offset in self._next.items():
            if tp not in assigned:
                return None
            high = consumer.highwater(tp)
            if high is None:
                high = self._ends.get(tp)
                if high is None:
                    return None
            total += max(high - next_offset, 0)
        return total

    async def run(self) -> None:
        """Bootstrap, then tail forever; every Kafka failure re-creates the consumer after a backoff."""
        backoff_s = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._config.kafka_bootstrap,
                client_id=self._client_id,
                enable_auto_commit=False,
                # Kafka's long poll answers as soon as a record arrives (fetch_min_bytes=1), so this wait
                # bounds only idle round trips, not latency: 10 ms and 500 ms measured the same
                # propagation, but 10 ms cost each idle worker ~4% of a core in empty fetches.
                fetch_max_wait_ms=250,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                request_timeout_ms=10_000,
            )
            try:
                await consumer.start()
                self._consumer = consumer
                await self._assign(consumer)
                if not self.ready.is_set():
                    await self._bootstrap(consumer)
                backoff_s = 0.5
                await self._tail(consumer)
            except Exception as exc:
                if not is_retriable(exc):  # never clears by reconnecting: the task dies, logged
                    raise
                self.reconnects += 1
                logger.warning("ad-changes consumer failed (%s); reconnecting in %.1fs", exc, backoff_s)
            finally:
                self._consumer = None
                await consumer.stop()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        partitions = consumer.partitions_for_topic(self._topic)
        attempts = 0
        while not partitions:
            if attempts == 1:  # the first miss only means the client had not fetched this topic yet
                logger.warning("topic %s not found; waiting for it (adplatform topics)", self._topic)
            if attempts:
                await asyncio.sleep(0.5)
            attempts += 1
            # Private, on purpose: partitions_for_topic reads the client's cached metadata, which only
            # this refreshes. The public ``await consumer.topics()`` fetches into a separate copy and
            # leaves that cache as it was (aiokafka 0.14), so a topic created after start would stay
            # unseen until the next periodic refresh (metadata_max_age_ms, 5 minutes).
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._topic)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        new = [tp for tp in tps if tp not in self._next]
        starts = await seek_to_first(consumer, new)  # not seek_to_beginning: see seek_to_first
        for tp in tps:
            if tp in self._next:
                consumer.seek(tp, self._next[tp])
            else:
                self._next[tp] = starts[tp]

    def _decode(self, record: ConsumerRecord[Any, Any]) -> Campaign | None:
        self._next[TopicPartition(record.topic, record.partition)] = record.offset + 1
        if record.value is None:
            return None  # a tombstone: Stop is a state (Inactive), not a deletion, so nothing to undo
        try:
            return change_decoder.decode(record.value)
        except msgspec.DecodeError as exc:
            self.decode_errors += 1
            logger.warning("ad-changes %d/%d skipped: %s", record.partition, record.offset, exc)
            return None

    async def _bootstrap(self, consumer: AIOKafkaConsumer) -> None:
        started = time.monotonic()
        ends = await consumer.end_offsets(list(self._next))
        self._ends.update(ends)
        remaining = {tp for tp, end in ends.items() if self._next[tp] < end}
        campaigns: list[Campaign] = []
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)
            for records in batch.values():
                campaigns.extend(c for c in map(self._decode, records) if c is not None)
            for tp in list(remaining):
                # The position, not the last record: it also steps over offsets compaction removed.
                position = await consumer.position(tp)
                if position >= ends[tp]:
                    self._next[tp] = max(self._next[tp], position)
                    remaining.discard(tp)
        self.applied += self.index.apply_all(campaigns)
        self.index.prune(time.time())
        self.index.warm()
        self.last_applied_s = time.time()
        self.bootstrap_s = time.monotonic() - started
        self.ready.set()
        logger.info(
            "index bootstrapped: %d records, %d campaigns indexed in %.2fs",
            len(campaigns),
            len(self.index),
            self.bootstrap_s,
        )

    async def _tail(self, consumer: AIOKafkaConsumer) -> None:
        index = self.index
        next_prune_s = time.monotonic() + PRUNE_EVERY_S
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            now_s = time.time()
            turns = LoopTurns(self._turn_s)
            for records in batch.values():
                for record in records:
                    campaign = self._decode(record)
                    if campaign is not None and index.apply(campaign):
                        self.applied += 1
                        self.observe_propagation(max(now_s - record.timestamp / 1000, 0.0))
                        self.last_applied_s = now_s
                    if turns.due():  # a burst of changes: requests get their turns between them
                        await turns.give()
                        now_s = time.time()
            if time.monotonic() >= next_prune_s:
                await prune_in_turns(index, now_s, turns)
                next_prune_s = time.monotonic() + PRUNE_EVERY_S
            self.turns_given += turns.given
