"""``adplatform served-writer``: copies ``served-ads`` into ``online_ads.served_ads`` in batches.

A member of the ``served-writer`` consumer group. Per ``getmany`` batch: decode (a record holds up to
``SERVED_ADS_PER_RECORD`` ads, one JSON line each; an undecodable line is logged, counted and skipped, and
costs only itself), write through ``ServedAdsSink`` (idempotent), and only then commit the
offsets. At-least-once delivery plus the idempotent insert gives exactly-once rows. PostgreSQL down: the
batch is retried with backoff and nothing is committed, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from adplatform.config import Config
from adplatform.consumer import BATCHING_FETCH, commit, make_consumer, next_batch, retry
from adplatform.metrics import SERVED_WRITER_ROWS, SERVED_WRITER_SKIPPED, lag_tracking
from adplatform.names import GROUP_SERVED_WRITER
from adplatform.postgres import create_pool
from adplatform.process import run_until_signalled
from adplatform.wire import SERVED_ADS_PER_RECORD, ServedAd, decode_served
from ingest.served_postgres import ServedAdsSink

logger = logging.getLogger(__name__)


def records_per_poll(max_ads: int) -> int:
    """Records to poll for a batch of about ``max_ads`` served ads."""
    return max(1, max_ads // SERVED_ADS_PER_RECORD)


@dataclass
class WriterStats:
    messages: int = 0
    inserted: int = 0
    skipped: int = 0
    batches: int = 0
    retries: int = 0


class ServedWriter:
    """One member of the served-writer group: consume, write, then commit."""

    def __init__(self, consumer: AIOKafkaConsumer, sink: ServedAdsSink, *, max_batch: int = 5000) -> None:
        """``max_batch``: served ads per batch, about (polled as ``records_per_poll(max_batch)`` records)."""
        self._consumer = consumer
        self._sink = sink
        self._max_records = records_per_poll(max_batch)
        self._stopping = asyncio.Event()
        self.stats = WriterStats()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    def decode(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[ServedAd]:
        ads: list[ServedAd] = []
        for r in records:
            found, reasons = decode_served(r.value or b"")
            ads += found
            if reasons:
                self.stats.skipped += len(reasons)
                SERVED_WRITER_SKIPPED.inc(len(reasons))
                more = f" (and {len(reasons) - 1} more lines)" if len(reasons) > 1 else ""
                logger.warning("served-ads %d/%d skipped: %s%s", r.partition, r.offset, reasons[0], more)
        return ads

    async def run(self, *, until_idle: bool = False) -> WriterStats:
        """Consume until stopped (or, with ``until_idle``, until every assigned partition is drained)."""
        while True:
            records = await next_batch(
                self._consumer, max_records=self._max_records, stopping=self._stopping, until_idle=until_idle
            )
            if records is None:
                return self.stats
            ads = self.decode(records)
            inserted = await retry(
                lambda: self._sink.write(ads),  # noqa: B023  # awaited before the next batch
                what=f"served-ads batch of {len(ads)}",
                on_retry=self._count_retry,
            )
            self.stats.inserted += inserted
            SERVED_WRITER_ROWS.inc(inserted)
            await commit(self._consumer)
            self.stats.messages += len(records)
            self.stats.batches += 1

    def _count_retry(self) -> None:
        self.stats.retries += 1


@contextlib.asynccontextmanager
async def open_served_writer(config: Config, *, max_batch: int = 5000) -> AsyncIterator[ServedWriter]:
    """Create the consumer and the pool, yield the writer (not yet running), close both after."""
    consumer = make_consumer(
        config,
        GROUP_SERVED_WRITER,
        config.topics.served_ads,
        max_poll_records=records_per_poll(max_batch),
        **BATCHING_FETCH,
    )
    # The house pool: no connection up front (a writer started while PostgreSQL is down waits and
    # retries), and command timeouts, so a cut network raises instead of hanging.
    pool = await create_pool(config)
    try:
        await consumer.start()
        yield ServedWriter(consumer, ServedAdsSink(pool), max_batch=max_batch)
    finally:
        await consumer.stop()
        await pool.close()


async def run_served_writer(
    config: Config, *, until_idle: bool = False, timeout_s: float | None = None, max_batch: int = 5000
) -> WriterStats:
    """Entry point: one writer until SIGTERM/SIGINT (or idle, or the timeout)."""
    async with (
        open_served_writer(config, max_batch=max_batch) as writer,
        lag_tracking(writer.consumer, config.group(GROUP_SERVED_WRITER)),
    ):
        stats = await run_until_signalled(writer.run(until_idle=until_idle), writer.stop, timeout_s=timeout_s)
    logger.info("served-writer stopped: %s", stats)
    return stats
