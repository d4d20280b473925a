"""Publishes every served ad to ``served-ads`` in the background: serving never waits on Kafka.

The serve route calls ``offer`` (a deque append and an event set). One task wakes on the first item,
lingers 50 ms so items accumulate, then encodes them into ``ServedAd`` records and hands them to the
producer as record batches (``send_batch``, one partition per batch, round robin), without waiting for
each delivery: a done-callback counts what Kafka acknowledged or failed. Large batches matter: the
per-batch cost of the Kafka client (and broker) is what a few-millisecond linger multiplied.

Degradation policy: the queue is bounded; when Kafka is slow or down and the queue is full, new items are
dropped and counted (``adserver_served_ads_dropped_total``) rather than slowing serving down. The served
ads are an audit trail, not money: charges come from feedback, which has its own guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Final

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adplatform.config import Config
from adplatform.errors import is_retriable
from adplatform.kafka import make_producer
from adplatform.wire import ServedAd, encoder
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.targeting import AdRequest

logger = logging.getLogger(__name__)


class ServedItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the serve route hands over for one served ad; encoded later, off the request's path.

    Built once per served ad, by keyword (four adjacent ints). A keyword-only Struct builds in ~90 ns
    where a ``NamedTuple`` called with keywords takes ~600 ns; ``gc=False`` because it never holds a
    cycle, and up to ``max_queue`` of them wait in the queue.
    """

    request_id: str
    campaign_id: str
    served_at_ms: int
    clearing_cpm_units: int
    auction_cpc_micros: int
    auction_cpa_micros: int
    #: Bids that set the price: the top group, plus the runner-up when it priced a lone winner.
    bidders: int
    request: AdRequest


#: Items per record batch (~420 bytes each; a full batch is 256 KiB, and ``append`` says when it is).
CHUNK: Final = 512


def served_ad(item: ServedItem) -> ServedAd:
    r = item.request
    return ServedAd(
        request_id=item.request_id,
        campaign_id=item.campaign_id,
        user_id=r.user_id,
        served_at_ms=item.served_at_ms,
        auction_cpm=cpm_units_to_decimal(item.clearing_cpm_units),
        auction_cpc=micros_to_decimal(item.auction_cpc_micros),
        auction_cpa=micros_to_decimal(item.auction_cpa_micros),
        bidders=item.bidders,
        device_type=r.device_type,
        city=r.city,
        state=r.state,
        country=r.country,
        age=r.age,
        gender=r.gender,
        income_bucket=r.income_bucket,
    )


class ServedAdPublisher:
    """A bounded queue of served ads and the one task that ships them to Kafka."""

    def __init__(self, config: Config, *, max_queue: int = 50_000, linger_s: float = 0.05) -> None:
        self._config = config
        self._topic = config.topics.served_ads
        self._items: deque[ServedItem] = deque()
        self._max_queue = max_queue
        self._linger_s = linger_s
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._wakeup_on_stop = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self._partition = 0
        self.dropped = 0
        self.sent = 0
        self.failed = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: ServedItem) -> None:
        """Queue one served ad; never blocks. A full queue drops the item (counted)."""
        if len(self._items) >= self._max_queue:
            self.dropped += 1
            return
        self._items.append(item)
        self._wakeup.set()

    def stop(self) -> None:
        """Ask ``run`` to ship what is queued and return."""
        self._stopping = True
        self._wakeup.set()
        self._wakeup_on_stop.set()

    async def run(self) -> None:
        producer = await self._connect()
        if producer is None:  # stopped before Kafka ever answered: what is queued is lost, and counted
            self.dropped += len(self._items)
            self._items.clear()
            return
        try:
            while not self._stopping:
                await self._wakeup.wait()
                if not self._stopping:
                    await asyncio.sleep(self._linger_s)
                self._wakeup.clear()
                await self._flush(producer)
        finally:
            self.producer = None
            await producer.stop()  # waits for the batches in flight

    async def _connect(self) -> AIOKafkaProducer | None:
        backoff_s = 0.5
        while not self._stopping:
            producer = make_producer(self._config, linger_ms=0, client_id="adserver-served")
            try:
                await producer.start()
                await producer.partitions_for(self._topic)
            except Exception as exc:
                await producer.stop()
                if not is_retriable(exc):  # never clears by reconnecting: the task dies, logged
                    raise
                if backoff_s == 0.5:  # one line per outage, not one per retry
                    logger.warning("served-ads producer not connected (%s); retrying", exc)
                # Woken early by stop(); the queue meanwhile fills up to its bound, then drops.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup_on_stop.wait(), backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            self.producer = producer
            return producer
        return None

    async def _flush(self, producer: AIOKafkaProducer) -> None:
        """Ship everything queued, in record batches of at most ``CHUNK`` items, yielding to the
        requests between chunks so a large flush does not show up in their tail latency."""
        partitions = sorted(await producer.partitions_for(self._topic))
        items = self._items
        while items:
            batch, count = producer.create_batch(), 0
            while items and count < CHUNK:
                value = encoder.encode(served_ad(items.popleft()))
                if batch.append(key=None, value=value, timestamp=None) is None:  # full (huge records)
                    await self._send(producer, batch, partitions, count)
                    batch, count = producer.create_batch(), 0
                    batch.append(key=None, value=value, timestamp=None)
                count += 1
            await self._send(producer, batch, partitions, count)
            await asyncio.sleep(0)

    async def _send(
        self, producer: AIOKafkaProducer, batch: object, partitions: list[int], count: int
    ) -> None:
        # Round robin over partitions, batch by batch (served ads need no key: the writer is idempotent).
        self._partition = (self._partition + 1) % len(partitions)
        try:
            future = await producer.send_batch(batch, self._topic, partition=partitions[self._partition])
        except (KafkaError, OSError) as exc:
            # Not a retry decision: served ads are best effort, so any failure to queue drops the batch
            # (counted in ``failed``); the next flush starts afresh.
            self.failed += count
            logger.debug("served-ads batch of %d not queued: %s", count, exc)
            return

        def delivered(done: asyncio.Future[object]) -> None:
            if done.cancelled() or done.exception() is not None:
                self.failed += count
            else:
                self.sent += count

        future.add_done_callback(delivered)
