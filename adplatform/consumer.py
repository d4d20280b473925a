"""The batch loop every consumer process shares (manager, served-writer, ledger): poll a batch, write it
with retries while a dependency is down, commit, repeat; a bounded mode ends when the topic is drained."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CommitFailedError, ConsumerStoppedError

from adplatform.config import Config
from adplatform.errors import is_retriable
from adplatform.kafka import drained

logger = logging.getLogger(__name__)

T = TypeVar("T")

Records = list[ConsumerRecord[bytes, bytes]]


#: Settings for a consumer that writes each batch in one transaction and is not on a user's path (the
#: ledger, the served-writer): the broker holds a fetch until 256 KiB or 250 ms have come. Without them a
#: fetch returns as soon as one record is there, so at a few hundred events/s every batch held a handful of
#: records and cost a PostgreSQL transaction and a Kafka round trip each (the demo: ~3 records a batch,
#: a tenth of a core for the ledger alone). The price is up to 250 ms more lag on those writes.
BATCHING_FETCH: dict[str, int] = {"fetch_min_bytes": 256 * 1024, "fetch_max_wait_ms": 250}


def make_consumer(config: Config, group: str, *topics: str, **settings: int) -> AIOKafkaConsumer:
    """A consumer in ``group`` (prefixed per config) with the house settings: manual commits (each loop
    commits after its write), from the earliest offset, and a short session so a killed process's
    partitions move within seconds. ``settings`` add to or override aiokafka's."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=config.kafka_bootstrap,
        group_id=config.group(group),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        **settings,
    )


async def next_batch(
    consumer: AIOKafkaConsumer, *, max_records: int, stopping: asyncio.Event, until_idle: bool
) -> Records | None:
    """The next non-empty batch; ``None`` once stopping, closed, or (``until_idle``) drained."""
    while not stopping.is_set():
        try:
            batch = await consumer.getmany(timeout_ms=300, max_records=max_records)
        except ConsumerStoppedError:
            return None  # closed under us (shutdown): nothing uncommitted was written
        records = [r for part in batch.values() for r in part]
        if records:
            return records
        if until_idle and await drained(consumer):
            return None
    return None


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``operation`` until it succeeds, backing off (0.2 s doubling to 5 s) while it fails with an
    error that may clear by itself (``is_retriable``); any other error is raised at once."""
    backoff_s = 0.2
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_retriable(exc):
                raise
            if on_retry is not None:
                on_retry()
            logger.warning("%s failed (%s); retrying in %.1fs", what, exc, backoff_s)
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)


async def commit(consumer: AIOKafkaConsumer) -> None:
    """Commit the consumed offsets; after a rebalance the new owner replays the batch (idempotent)."""
    try:
        await consumer.commit()
    except CommitFailedError as exc:
        logger.warning("commit failed after a rebalance (%s); the batch will be replayed", exc)
