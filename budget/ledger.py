"""The spend ledger: ``ad-feedback`` → per-campaign spend in PostgreSQL, exactly once.

Each batch is one transaction: the charged events go into ``online_ads.spend_events`` (primary key
``event_id``, so an event delivered twice is booked once), the campaigns' ``spent`` grows by what was
newly booked, and the consumed offsets are stored in ``online_ads.consumer_offsets`` in the same
transaction. On (re)assignment the consumer seeks to the stored offsets, so a crash at any point neither
loses nor double-books an event. Kafka's own group offsets are not used for correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from adplatform.config import Config
from adplatform.consumer import BATCHING_FETCH, make_consumer, next_batch, retry
from adplatform.metrics import LEDGER_CHARGES, LEDGER_UNDECODABLE, lag_tracking
from adplatform.names import GROUP_LEDGER
from adplatform.postgres import create_pool
from adplatform.process import run_until_signalled
from adplatform.wire import FeedbackEvent, feedback_decoder
from index.money import micros_to_decimal

logger = logging.getLogger(__name__)

_BOOK = """
WITH booked AS (
    INSERT INTO online_ads.spend_events (event_id, campaign_id, amount, occurred_at)
    SELECT event_id, campaign_id, amount, occurred_at FROM ledger_stage
    ON CONFLICT (event_id) DO NOTHING
    RETURNING campaign_id, amount
), per_campaign AS (
    SELECT campaign_id, sum(amount) AS amount FROM booked GROUP BY campaign_id
)
UPDATE online_ads.ads AS a SET spent = a.spent + p.amount, updated_at = now()
FROM per_campaign AS p WHERE a.campaign_id = p.campaign_id
"""

_SAVE_OFFSETS = """
INSERT INTO online_ads.consumer_offsets (consumer_group, topic, partition, next_offset)
SELECT $1, $2, p, o FROM unnest($3::int[], $4::bigint[]) AS t(p, o)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset
"""


@dataclass
class LedgerStats:
    messages: int = 0
    charged_events: int = 0
    undecodable: int = 0
    batches: int = 0


async def stored_offsets(conn: asyncpg.Connection | asyncpg.Pool, group: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM online_ads.consumer_offsets"
        " WHERE consumer_group = $1 AND topic = $2",
        group,
        topic,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, ledger: SpendLedger) -> None:
        self._ledger = ledger

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._ledger.seek_stored(assigned)


class SpendLedger:
    """One member of the ``spend-ledger`` group."""

    def __init__(self, config: Config, consumer: AIOKafkaConsumer, pool: asyncpg.Pool) -> None:
        self._config = config
        self._consumer = consumer
        self._pool = pool
        self._group = config.group(GROUP_LEDGER)
        self._stopping = asyncio.Event()
        self.stats = LedgerStats()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def seek_stored(self, assigned: set[TopicPartition]) -> None:
        """Seek each partition with a stored offset there; the others start at the beginning by the
        consumer's own reset (``auto_offset_reset`` earliest: the group commits nothing to Kafka).

        No ``seek_to_beginning`` here: aiokafka hands out records while this listener runs, and such a
        seek waits a round trip per partition, then rewinds whatever was read meanwhile to offset 0: on
        the cluster stack a partition already booked was rewound and read again (booked once, but its
        position and lag went back; a paused consumer's lag stayed one too high)."""
        offsets = await stored_offsets(self._pool, self._group, self._config.topics.feedback)
        for tp in assigned:
            if tp.partition in offsets:
                self._consumer.seek(tp, offsets[tp.partition])

    async def book(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Book one batch and its offsets in one transaction."""
        rows: dict[str, tuple[str, str, object, datetime]] = {}
        next_offsets: dict[int, int] = {}
        for r in records:
            next_offsets[r.partition] = max(next_offsets.get(r.partition, 0), r.offset + 1)
            try:
                event: FeedbackEvent = feedback_decoder.decode(r.value or b"")
            except (ValueError, TypeError):
                # Only the ad server writes this topic; an undecodable record is counted and skipped
                # (the archive keeps its raw value in its _corrupt area).
                self.stats.undecodable += 1
                LEDGER_UNDECODABLE.inc()
                logger.warning("undecodable ad-feedback record at %s/%d/%d", r.topic, r.partition, r.offset)
                continue
            if event.expenditure_micros > 0:
                occurred = datetime.fromtimestamp(event.timestamp_ms / 1000, tz=UTC)
                amount = micros_to_decimal(event.expenditure_micros)
                rows[event.event_id] = (event.event_id, event.campaign_id, amount, occurred)
        async with self._pool.acquire() as conn, conn.transaction():
            if rows:
                await conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS ledger_stage (event_id text, campaign_id text, "
                    "amount numeric(20, 6), occurred_at timestamptz) ON COMMIT DELETE ROWS"
                )
                await conn.copy_records_to_table(
                    "ledger_stage",
                    records=list(rows.values()),
                    columns=("event_id", "campaign_id", "amount", "occurred_at"),
                )
                await conn.execute(_BOOK)
            parts = sorted(next_offsets)
            await conn.execute(
                _SAVE_OFFSETS,
                self._group,
                self._config.topics.feedback,
                parts,
                [next_offsets[p] for p in parts],
            )
        self.stats.charged_events += len(rows)
        LEDGER_CHARGES.inc(len(rows))

    async def run(self, *, until_idle: bool = False) -> LedgerStats:
        """Book until stopped (or, with ``until_idle``, until drained). Offsets live in PostgreSQL."""
        while True:
            records = await next_batch(
                self._consumer, max_records=5000, stopping=self._stopping, until_idle=until_idle
            )
            if records is None:
                return self.stats
            await retry(
                lambda: self.book(records),  # noqa: B023  # awaited before the next batch
                what=f"ledger batch of {len(records)}",
            )
            self.stats.messages += len(records)
            self.stats.batches += 1


@contextlib.asynccontextmanager
async def open_ledger(config: Config) -> AsyncIterator[SpendLedger]:
    # Subscribed below with a listener; its offsets live in PostgreSQL, with the spend.
    consumer = make_consumer(config, GROUP_LEDGER, **BATCHING_FETCH)
    pool = await create_pool(config)
    ledger = SpendLedger(config, consumer, pool)
    try:
        consumer.subscribe([config.topics.feedback], listener=_SeekToStored(ledger))
        await consumer.start()
        yield ledger
    finally:
        await consumer.stop()
        await pool.close()


async def run_ledger(
    config: Config, *, until_idle: bool = False, timeout_s: float | None = None
) -> LedgerStats:
    """Entry point of ``adplatform ledger``."""
    async with open_ledger(config) as ledger, lag_tracking(ledger.consumer, config.group(GROUP_LEDGER)):
        return await run_until_signalled(ledger.run(until_idle=until_idle), ledger.stop, timeout_s=timeout_s)
