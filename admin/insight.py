"""The admin service's own view of serving, for explain and diagnosis: a copy of the targeting index (the
ad server's feed code), the blocked set (Redis, as the ad servers mirror it), and a rolling window of
``ad-requests-sample``.

Started by the lifespan as background tasks; the admin service answers before they are ready (explain
answers 503 until the index is bootstrapped). Degradation policy: Kafka or Redis down keeps what was
loaded (the index, the blocked set, the samples seen), as the ad servers do; nothing here affects serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adplatform.blocked import BlockedListener
from adplatform.config import Config
from adplatform.errors import is_retriable
from adplatform.index_feed import IndexFeed
from adplatform.params import RequestParser
from adplatform.sample import RequestSample, sample_decoder
from index.geo import GeoTable
from index.index import TargetingIndex

logger = logging.getLogger(__name__)

#: How far back the diagnosis looks, and how many samples it keeps at most (the oldest go first).
WINDOW_S: Final = 30 * 60
MAX_SAMPLES: Final = 200_000


class SampleWindow:
    """The samples of the last ``window_s`` seconds (at most ``max_samples``), tailed from the topic.

    A consumer without a group is assigned every partition and starts ``max_samples`` records back from
    the end, so a restarted admin service sees the recent past at once.
    """

    def __init__(self, config: Config, *, window_s: int = WINDOW_S, max_samples: int = MAX_SAMPLES) -> None:
        self._config = config
        self._topic = config.topics.requests_sample
        self.window_s = window_s
        self.samples: deque[RequestSample] = deque(maxlen=max_samples)
        self._next: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self.decode_errors = 0
        self.reconnects = 0

    def recent(self, now_s: float, window_s: int) -> list[RequestSample]:
        floor_ms = int((now_s - min(window_s, self.window_s)) * 1000)
        return [s for s in self.samples if s.at_ms >= floor_ms]

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait (bounded) until every sample published before this call is in the window."""
        deadline = time.monotonic() + timeout_s
        while self._consumer is None or not self._next:  # starting, or re-created after a failure
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        ends = await self._consumer.end_offsets(list(self._next))
        while any(self._next.get(tp, 0) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def run(self) -> None:
        backoff_s = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._config.kafka_bootstrap,
                client_id="admin-samples",
                enable_auto_commit=False,
                fetch_max_wait_ms=250,
                request_timeout_ms=10_000,
            )
            try:
                await consumer.start()
                await self._assign(consumer)
                self._consumer = consumer
                backoff_s = 0.5
                while True:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                    for records in batch.values():
                        for record in records:
                            self._add(record)
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                self.reconnects += 1
                logger.warning(
                    "ad-requests-sample consumer failed (%s); reconnecting in %.1fs", exc, backoff_s
                )
            finally:
                self._consumer = None
                await consumer.stop()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)

    def _add(self, record: ConsumerRecord[Any, Any]) -> None:
        self._next[TopicPartition(record.topic, record.partition)] = record.offset + 1
        if record.value is None:
            return
        try:
            self.samples.append(sample_decoder.decode(record.value))
        except msgspec.DecodeError:
            self.decode_errors += 1

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        partitions = consumer.partitions_for_topic(self._topic)
        attempts = 0
        while not partitions:
            if attempts:  # the first miss only means the client had not fetched this topic yet
                await asyncio.sleep(0.5)
            attempts += 1
            # As IndexFeed: only this refreshes the metadata partitions_for_topic reads (aiokafka 0.14).
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._topic)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        fresh = [tp for tp in tps if tp not in self._next]
        if fresh:
            # The newest records up to the bound, per partition (the window's time filter does the rest):
            # a restart sees the recent past without reading a day of samples.
            per_partition = max(self.samples.maxlen or 0, 1) // len(tps) + 1
            begins = await consumer.beginning_offsets(fresh)
            ends = await consumer.end_offsets(fresh)
            for tp in fresh:
                self._next[tp] = max(begins[tp], ends[tp] - per_partition)
        for tp in tps:
            consumer.seek(tp, self._next[tp])


@dataclass
class Insight:
    """The admin service's copy of what serving sees; built by ``insight_running``."""

    config: Config
    index: TargetingIndex
    parser: RequestParser
    feed: IndexFeed
    blocked: BlockedListener
    window: SampleWindow
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.feed.ready.is_set()


def build_insight(config: Config) -> Insight:
    geo = GeoTable(default_country=config.default_country)
    index = TargetingIndex(geo)
    return Insight(
        config=config,
        index=index,
        parser=RequestParser(geo),
        feed=IndexFeed(config, index, client_id="admin-index"),
        blocked=BlockedListener(config.redis_url, index.blocked),
        window=SampleWindow(config),
    )


@contextlib.asynccontextmanager
async def insight_running(config: Config) -> AsyncIterator[Insight]:
    """The index feed, the blocked-set listener and the sample window, as tasks for the block's duration."""
    insight = build_insight(config)
    for name, coro in (
        ("admin-index-feed", insight.feed.run()),
        ("admin-blocked-listener", insight.blocked.run()),
        ("admin-sample-window", insight.window.run()),
    ):
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report)
        insight.tasks.append(task)
    try:
        yield insight
    finally:
        for task in insight.tasks:
            task.cancel()
        for task in insight.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _report(done: asyncio.Task[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.error("background task %s died", done.get_name(), exc_info=done.exception())
