"""The Ad Manager: campaign instructions → validated, enriched campaign states in PostgreSQL, Redis, Kafka.

Per batch (``getmany``): decode and enrich each instruction (a pure ``process_message``), send the bad ones
to the DLQ with the reason, fold the good ones to the newest state per campaign, upsert them into
``online_ads.ads``, set budgets in Redis, publish the states to ``ad-changes``, and only then commit the
offsets. ``version`` is the instruction's offset + 1 (instructions are keyed by campaign id, so one
campaign's instructions share a partition and their offsets grow), which makes every step idempotent:
a manager killed at any moment reprocesses from the last commit and reaches the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from adplatform.config import Config
from adplatform.consumer import commit, make_consumer, next_batch, retry
from adplatform.errors import is_retriable
from adplatform.kafka import make_producer
from adplatform.metrics import MANAGER_INSTRUCTIONS, lag_tracking
from adplatform.names import GROUP_AD_MANAGER
from adplatform.postgres import create_pool
from adplatform.process import run_until_signalled
from adplatform.redis_client import open_redis
from budget.budget_redis import BudgetStore
from index.campaign import Campaign
from index.pacing import Clock, SystemClock
from ingest.ads_postgres import AdsSink
from ingest.instruction import NEW, InstructionError, decode_instruction, enrich

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


@dataclass
class ManagerStats:
    """Counters of one manager run."""

    messages: int = 0
    applied: int = 0
    rejected: int = 0
    batches: int = 0
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    record: ConsumerRecord[bytes, bytes]
    reason: str


class Folded(NamedTuple):
    """A batch decoded and folded: the newest state per campaign, the partition each came from, the ids
    whose pacing mode is the stored campaign's (``inherits_pacing``), and the rejected records."""

    campaigns: list[Campaign]
    partitions: list[int]
    inherits_pacing: set[str]
    rejected: list[Rejected]


def fold(records: Sequence[ConsumerRecord[bytes, bytes]], *, slot_s: int) -> Folded:
    """Decode and enrich a batch: the newest state per campaign with the partition it came from, and every
    rejected record with its reason.

    ``updated_at_s`` is the instruction's Kafka timestamp, not the wall clock, so a replay is identical.
    An Update or Stop without ``pacing_mode`` keeps the campaign's mode: the one of an earlier instruction
    in the batch, else (``inherits_pacing``) the stored one, so a file written before pacing modes existed
    never turns an asap campaign even; only a New one without the field is even.
    """
    latest: dict[str, tuple[Campaign, int, bool]] = {}
    rejected: list[Rejected] = []
    for record in records:
        try:
            instr = decode_instruction(record.value or b"")
            campaign = enrich(instr, version=record.offset + 1, now_s=record.timestamp // 1000, slot_s=slot_s)
        except InstructionError as exc:
            rejected.append(Rejected(record, exc.reason))
            continue
        inherits = instr.pacing_mode == "" and instr.action != NEW
        current = latest.get(campaign.campaign_id)
        if current is None or current[0].version < campaign.version:
            if inherits and current is not None:
                campaign = msgspec.structs.replace(campaign, pacing_mode=current[0].pacing_mode)
                inherits = current[2]
            latest[campaign.campaign_id] = (campaign, record.partition, inherits)
    return Folded(
        [c for c, _, _ in latest.values()],
        [p for _, p, _ in latest.values()],
        {c.campaign_id for c, _, inherits in latest.values() if inherits},
        rejected,
    )


def _dlq_headers(rejected: Rejected, now_s: float) -> list[tuple[str, bytes]]:
    r = rejected.record
    return [
        ("reason", rejected.reason.encode("utf-8", "replace")[:1000]),
        ("source", f"{r.topic}/{r.partition}/{r.offset}".encode()),
        ("rejected-at", str(int(now_s)).encode()),
    ]


class AdManager:
    """One member of the ``ad-manager`` consumer group."""

    def __init__(
        self,
        config: Config,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        sink: AdsSink,
        budgets: BudgetStore,
        clock: Clock | None = None,
        max_batch: int = 5000,
    ) -> None:
        self._config = config
        self._consumer = consumer
        self._producer = producer
        self._sink = sink
        self._budgets = budgets
        self._clock = clock or SystemClock()
        self._max_batch = max_batch
        self._layout_checked: bool | None = None
        self._stopping = asyncio.Event()
        self.stats = ManagerStats()

    def stop(self) -> None:
        """Finish the current batch, commit, and return from ``run``."""
        self._stopping.set()

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Write one batch everywhere it goes; raises on a dependency failure (nothing is committed)."""
        now = self._clock.now()
        campaigns, partitions, inherits, rejected = fold(records, slot_s=self._config.slot_s)
        if inherits:
            stored = await self._sink.pacing_modes(inherits)
            campaigns = [
                msgspec.structs.replace(c, pacing_mode=stored[c.campaign_id])
                if c.campaign_id in stored
                else c
                for c in campaigns
            ]
        # PostgreSQL first: it says which campaigns are new (have spent nothing), and only their missing
        # budgets may be created in Redis; then Redis, then publish.
        new = await self._sink.write(campaigns)
        await self._budgets.init_campaigns(campaigns, now, new=new)
        futures: list[Any] = []
        # Same key, same partition count: a campaign's change goes to the partition its instruction came
        # from (what the default partitioner would pick), without hashing every key again in Python.
        same_layout = await self._same_layout()
        topic = self._config.topics.ad_changes
        for c, partition in zip(campaigns, partitions, strict=True):
            futures.append(
                await self._producer.send(
                    topic,
                    _encoder.encode(c),
                    key=c.campaign_id.encode(),
                    partition=partition if same_layout else None,
                )
            )
        for bad in rejected:
            futures.append(
                await self._producer.send(
                    self._config.topics.instructions_dlq,
                    bad.record.value,
                    key=bad.record.key,
                    headers=_dlq_headers(bad, now),
                )
            )
        if futures:
            await asyncio.gather(*futures)  # acknowledged by Kafka (acks=all) before the commit
        self.stats.applied += len(campaigns)
        self.stats.rejected += len(rejected)
        MANAGER_INSTRUCTIONS.labels("accepted").inc(len(records) - len(rejected))
        MANAGER_INSTRUCTIONS.labels("dead_lettered").inc(len(rejected))
        for bad in rejected:
            kind = bad.reason.split(":", 1)[0]
            self.stats.reasons[kind] = self.stats.reasons.get(kind, 0) + 1

    async def _same_layout(self) -> bool:
        if self._layout_checked is None:
            topics = self._config.topics
            source = await self._producer.partitions_for(topics.instructions)
            target = await self._producer.partitions_for(topics.ad_changes)
            self._layout_checked = source == target
        return self._layout_checked

    async def _handle_or_isolate(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """``handle``; if PostgreSQL refuses the batch's data (not the connection), find the records it
        refuses one by one and dead-letter them with the reason, so one poisoned record never stops the
        manager nor holds back the others."""
        try:
            await self.handle(records)
            return
        except asyncpg.PostgresError as exc:
            if is_retriable(exc):  # the connection, not the data: retry() runs the batch again
                raise
            logger.error(
                "PostgreSQL refused a batch (%s: %s); isolating the records", type(exc).__name__, exc
            )
        for record in records:
            try:
                await self.handle([record])
            except asyncpg.PostgresError as exc:
                if is_retriable(exc):
                    raise
                reason = f"rejected by storage: {type(exc).__name__}: {exc}"[:500]
                await self._dead_letter([Rejected(record, reason)], self._clock.now())
                self.stats.rejected += 1
                MANAGER_INSTRUCTIONS.labels("dead_lettered").inc()
                self.stats.reasons["rejected by storage"] = (
                    self.stats.reasons.get("rejected by storage", 0) + 1
                )

    async def _dead_letter(self, rejected: Sequence[Rejected], now: float) -> None:
        futures = [
            await self._producer.send(
                self._config.topics.instructions_dlq, bad.record.value, key=bad.record.key,
                headers=_dlq_headers(bad, now),
            )
            for bad in rejected
        ]  # fmt: skip
        await asyncio.gather(*futures)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def run(self, *, until_idle: bool = False) -> ManagerStats:
        """Consume until stopped (or, with ``until_idle``, until every assigned partition is drained)."""
        while True:
            records = await next_batch(
                self._consumer, max_records=self._max_batch, stopping=self._stopping, until_idle=until_idle
            )
            if records is None:
                return self.stats
            await retry(
                lambda: self._handle_or_isolate(records),  # noqa: B023  # awaited before the next batch
                what=f"batch of {len(records)}",
                on_retry=self._count_retry,
            )
            await commit(self._consumer)
            self.stats.messages += len(records)
            self.stats.batches += 1

    def _count_retry(self) -> None:
        self.stats.retries += 1


@contextlib.asynccontextmanager
async def open_manager(config: Config, *, max_batch: int = 5000) -> AsyncIterator[AdManager]:
    """Create every client of one manager, yield it (not yet running), close everything after."""
    consumer = make_consumer(
        config, GROUP_AD_MANAGER, config.topics.instructions, max_poll_records=max_batch,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )  # fmt: skip
    producer = make_producer(config, linger_ms=10, client_id="ad-manager")
    pool = await create_pool(config)
    redis_client = open_redis(config.redis_url, socket_timeout=5)  # one Redis or a Redis Cluster
    try:
        await producer.start()
        await consumer.start()
        yield AdManager(
            config,
            consumer=consumer,
            producer=producer,
            sink=AdsSink(pool),
            budgets=BudgetStore(redis_client, slot_s=config.slot_s),
            max_batch=max_batch,
        )
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
        await redis_client.aclose()


async def run_manager(
    config: Config, *, until_idle: bool = False, idle_timeout_s: float | None = None, max_batch: int = 5000
) -> ManagerStats:
    """Entry point: one manager until SIGTERM/SIGINT (or idle, or the timeout)."""
    started = time.monotonic()
    async with (
        open_manager(config, max_batch=max_batch) as manager,
        lag_tracking(manager.consumer, config.group(GROUP_AD_MANAGER)),
    ):
        stats = await run_until_signalled(
            manager.run(until_idle=until_idle), manager.stop, timeout_s=idle_timeout_s
        )
    logger.info("manager stopped after %.1fs: %s", time.monotonic() - started, stats)
    return stats
