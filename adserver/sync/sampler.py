"""Request sampling: a share of serve requests, with their loss reasons, published to ``ad-requests-sample``.

The serve route asks ``pick()`` (one random draw) only after it has answered; for a picked request it calls
``record``, which walks the request's matching campaigns once (``index.explain.auction_losses``) and queues
the sample. Unsampled requests pay the draw and nothing else. One task ships queued samples as record
batches like ``ServedAdPublisher`` (linger, round robin over partitions, deliveries counted by callback).

Degradation policy: best effort. Kafka slow or down fills the bounded queue, after which samples are
dropped and counted (``dropped``); a diagnosis then sees fewer samples, serving is never slowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adplatform.config import Config
from adplatform.errors import is_retriable
from adplatform.kafka import make_producer
from adplatform.params import ANONYMOUS_USER_ID
from adplatform.sample import RequestSample, sample_encoder, user_digest
from index.auction import AuctionResult
from index.explain import auction_losses
from index.index import TargetingIndex
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.targeting import AdRequest

logger = logging.getLogger(__name__)

#: Samples per record batch (a sample is ~0.3–3 KiB with its losses).
CHUNK: Final = 256


class RequestSampler:
    """Decides which requests are sampled, builds their samples, and ships them in the background."""

    def __init__(
        self,
        config: Config,
        *,
        rng: random.Random | None = None,
        max_queue: int = 10_000,
        linger_s: float = 0.2,
    ) -> None:
        self._config = config
        self.rate = config.request_sample_rate
        self._topic = config.topics.requests_sample
        self._key = config.token_keys[0].secret
        self._random = (rng or random.Random()).random
        self._items: deque[RequestSample] = deque()
        self._max_queue = max_queue
        self._linger_s = linger_s
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._partition = 0
        self.producer: AIOKafkaProducer | None = None
        self.sampled = 0
        self.dropped = 0
        self.sent = 0
        self.failed = 0

    def pick(self) -> bool:
        """Whether to sample this request: one draw (no draw at all when sampling is off)."""
        return self.rate > 0.0 and self._random() < self.rate

    def record(
        self, index: TargetingIndex, request: AdRequest, now_s: float, result: AuctionResult | None
    ) -> None:
        """Build the sample of a decided auction (after its response) and queue it; never blocks."""
        self.sampled += 1
        if len(self._items) >= self._max_queue:
            self.dropped += 1
            return
        reserve = self._config.reserve_cpm_units
        served = None if result is None else result.campaign
        losses = auction_losses(index, request, now_s, served=served, reserve_cpm_units=reserve)
        self._items.append(
            RequestSample(
                at_ms=int(now_s * 1000),
                user=user_digest(request.user_id, self._key, anonymous_id=ANONYMOUS_USER_ID),
                device_type=request.device_type,
                city=request.city,
                state=request.state,
                country=request.country,
                age=request.age,
                gender=request.gender,
                income_bucket=request.income_bucket,
                outcome="no_fill" if result is None else "served",
                winner=None if served is None else served.campaign_id,
                tie=any(loss.reason == "tie" for loss in losses.losses),
                runner_up=losses.runner_up,
                auction_cpm=None if result is None else cpm_units_to_decimal(result.clearing_cpm_units),
                auction_cpc=None if result is None else micros_to_decimal(result.auction_cpc_micros),
                auction_cpa=None if result is None else micros_to_decimal(result.auction_cpa_micros),
                clearing_cpm_units=None if result is None else result.clearing_cpm_units,
                reserve_cpm_units=reserve,
                losses=losses.losses,
                floor_cpm_units=losses.floor_cpm_units,
            )
        )
        self._wakeup.set()

    def stop(self) -> None:
        """Ask ``run`` to ship what is queued and return."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        if self.rate <= 0.0:
            return  # sampling off: no producer, no task work
        producer = await self._connect()
        if producer is None:
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
            await producer.stop()

    async def _connect(self) -> AIOKafkaProducer | None:
        backoff_s = 0.5
        while not self._stopping:
            producer = make_producer(self._config, linger_ms=0, client_id="adserver-sample")
            try:
                await producer.start()
                await producer.partitions_for(self._topic)
            except Exception as exc:
                await producer.stop()
                if not is_retriable(exc):  # never clears by reconnecting: the task dies, logged
                    raise
                if backoff_s == 0.5:
                    logger.warning("request-sample producer not connected (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), backoff_s)
                self._wakeup.clear()
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            self.producer = producer
            return producer
        return None

    async def _flush(self, producer: AIOKafkaProducer) -> None:
        partitions = sorted(await producer.partitions_for(self._topic))
        items = self._items
        while items:
            batch, count = producer.create_batch(), 0
            while items and count < CHUNK:
                value = sample_encoder.encode(items.popleft())
                if batch.append(key=None, value=value, timestamp=None) is None:  # full
                    await self._send(producer, batch, partitions, count)
                    batch, count = producer.create_batch(), 0
                    batch.append(key=None, value=value, timestamp=None)
                count += 1
            await self._send(producer, batch, partitions, count)
            await asyncio.sleep(0)

    async def _send(
        self, producer: AIOKafkaProducer, batch: object, partitions: list[int], count: int
    ) -> None:
        self._partition = (self._partition + 1) % len(partitions)
        try:
            future = await producer.send_batch(batch, self._topic, partition=partitions[self._partition])
        except (KafkaError, OSError) as exc:
            # Best effort, as served ads: a batch that cannot be queued is dropped and counted.
            self.failed += count
            logger.debug("request-sample batch of %d not queued: %s", count, exc)
            return

        def delivered(done: asyncio.Future[object]) -> None:
            if done.cancelled() or done.exception() is not None:
                self.failed += count
            else:
                self.sent += count

        future.add_done_callback(delivered)
