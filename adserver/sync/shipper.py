"""Best-effort shipping of queued items to one Kafka topic: what the served-ads publisher and the request
sampler share.

The serve route queues an item (a deque append and an event set). One task wakes on the first item,
lingers so items accumulate, encodes them into records (``per_record`` items each: a subclass may pack
several into one record) and hands each record to librdkafka (``confluent_kafka.Producer.produce``: a copy
into its queue, never a wait). librdkafka builds the record batches, compresses them and talks to the
broker on its own threads, outside the GIL; its delivery reports come back through ``poll``, which the same
task calls after each flush (and every linger while deliveries are outstanding), and are counted.

Why librdkafka here and aiokafka everywhere else: these two streams are the serving workers' only bulk
work besides the answers, and aiokafka builds every record batch in Python on the event loop that serves
the requests. With librdkafka the worker only encodes the records: serve answers ~1.15x the requests per
second on the same two cores, every ad still published (BENCHMARKS.md, 2026-12-06). Feedback keeps
aiokafka: its answer waits for ``acks=all``, and there the C producer changed nothing (BENCHMARKS.md,
2026-12-05).

Degradation policy: the queue is bounded, and so is librdkafka's (``QUEUED_RECORDS``); when Kafka is slow
or down and they are full, new items are dropped and counted (``dropped``) rather than slowing serving
down. A record Kafka does not take within ``DELIVERY_TIMEOUT_MS`` (or that is still waiting when the server
stops with Kafka unreachable) is counted ``failed``. One warning line per outage. Neither stream is money.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from typing import Final, Generic, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from adplatform.config import Config
from adplatform.kafka import Compression, native_producer_settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Both streams are bulk JSON whose record batches snappy shrinks 2.3x (a served ad's sealed request_id
#: does not compress) for ~0.2 us per item; the bytes it saves cost more than that to write to the broker
#: over TCP, and the broker less to take in (BENCHMARKS.md). lz4 and zstd shrink more but cost more here.
COMPRESSION: Final[Compression] = "snappy"

#: Items encoded between two yields to the requests: a served ad encodes in ~3 µs, so a flush of 512 held
#: the event loop ~2 ms, which every request arriving meanwhile waited out (its tail latency).
YIELD_EVERY: Final = 64

#: Records librdkafka holds at most, waiting for or in flight to the broker (``produce`` then refuses).
QUEUED_RECORDS: Final = 20_000
#: A record Kafka has not acknowledged this long after ``produce`` is given up and counted failed.
DELIVERY_TIMEOUT_MS: Final = 30_000
#: How long ``run`` waits at stop for the deliveries outstanding while Kafka answers.
DRAIN_S: Final = 10.0

#: librdkafka's error for "no broker can be reached": an outage, one warning line.
_OUTAGE: Final = KafkaError._ALL_BROKERS_DOWN
#: One broker's connection lost or its name not resolved: librdkafka reconnects, and the other brokers of
#: a cluster go on taking records; an outage only if every broker is down (``_OUTAGE``).
_ONE_BROKER: Final = frozenset({KafkaError._TRANSPORT, KafkaError._RESOLVE})


class BatchShipper(Generic[T]):
    """A bounded queue of items and the one task that ships them to ``topic``; subclasses say how an item
    is encoded (``_encode``) and what queues one."""

    def __init__(
        self,
        config: Config,
        *,
        topic: str,
        client_id: str,
        max_queue: int,
        linger_s: float,
        per_record: int = 1,
    ) -> None:
        self._config = config
        self._topic = topic
        self._client_id = client_id
        self._per_record = per_record
        self._items: deque[T] = deque()
        self._max_queue = max_queue
        self._linger_s = linger_s
        self._wakeup = asyncio.Event()
        self._stopping = False
        #: Whether Kafka is known unreachable (set by librdkafka's error callback, cleared by a delivery).
        self._unreachable = False
        #: A fatal error of the producer (it then takes nothing more): the next flush starts a new one.
        self._fatal: KafkaError | None = None
        #: Items handed to librdkafka whose delivery report has not come back yet.
        self._outstanding = 0
        self.dropped = 0
        self.sent = 0
        self.failed = 0

    def __len__(self) -> int:
        """Items waiting to be published: queued here, or in librdkafka's queue or in flight to Kafka."""
        return len(self._items) + self._outstanding

    def _encode(self, items: list[T]) -> bytes:
        """One record's value: ``items`` holds at most ``per_record`` of them, in queue order."""
        raise NotImplementedError

    def _has_room(self) -> bool:
        """Whether one more item fits; a full queue counts the item as dropped."""
        if len(self._items) >= self._max_queue:
            self.dropped += 1
            return False
        return True

    def offer(self, item: T) -> None:
        """Queue one item; never blocks. A full queue drops the item (counted). One call, as the serve path
        queues a served ad per request (a caller whose item is costly to build asks ``_has_room`` first)."""
        items = self._items
        if len(items) >= self._max_queue:
            self.dropped += 1
            return
        items.append(item)
        if len(items) == 1:  # the queue was empty: ``run`` may be waiting (else it comes back for them)
            self._wakeup.set()

    def stop(self) -> None:
        """Ask ``run`` to ship what is queued and return."""
        self._stopping = True
        self._wakeup.set()

    def producer_settings(self) -> dict[str, str | int | bool]:
        """The librdkafka settings of this stream's producer."""
        return native_producer_settings(
            self._config,
            client_id=self._client_id,
            compression_type=COMPRESSION,
            queued_records=QUEUED_RECORDS,
            delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
        )

    async def run(self) -> None:
        producer = self._new_producer()
        try:
            while not self._stopping:
                if len(producer):  # deliveries outstanding: come back for their reports
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._linger_s)
                else:
                    await self._wakeup.wait()
                if self._items and not self._stopping:
                    await asyncio.sleep(self._linger_s)
                self._wakeup.clear()
                producer = await self._flush(producer)
                producer.poll(0)
        finally:
            await self._drain(producer)

    def _new_producer(self) -> Producer:
        # librdkafka's own log lines go to Python logging (served by ``poll``) and only when critical:
        # an outage is reported once, by ``_on_error``, not once per reconnection attempt.
        return Producer(
            {**self.producer_settings(), "error_cb": self._on_error, "logger": logger, "log_level": 2}
        )

    async def _flush(self, producer: Producer) -> Producer:
        """Hand everything queued to librdkafka, one record per ``per_record`` items, yielding to the
        requests every ``YIELD_EVERY`` items so a large flush does not show up in their tail latency.
        Returns the producer to go on with (a new one when librdkafka's failed for good)."""
        if self._fatal is not None:
            producer = self._renew(producer, self._fatal)
        items, per_record, topic = self._items, self._per_record, self._topic
        encoded = 0  # items encoded since the last yield
        while items:
            group = [items.popleft() for _ in range(min(per_record, len(items)))]
            report = functools.partial(self._report, len(group))
            try:
                producer.produce(topic, self._encode(group), on_delivery=report)
                self._outstanding += len(group)
            except BufferError:  # librdkafka's queue is full: Kafka is slow or down
                self.dropped += len(group)
            except KafkaException as exc:  # refused locally (a fatal state, a record over the size limit)
                self.failed += len(group)
                logger.debug("%s record of %d refused: %s", self._topic, len(group), exc)
                producer.poll(0)  # a fatal state is reported to ``_on_error`` here
                if self._fatal is not None:
                    producer = self._renew(producer, self._fatal)
            encoded += len(group)
            if encoded >= YIELD_EVERY:
                encoded = 0
                producer.poll(0)
                await asyncio.sleep(0)
        return producer

    def _report(self, count: int, error: KafkaError | None, _message: Message) -> None:
        """librdkafka's delivery report of one record of ``count`` items (called from ``poll``)."""
        self._outstanding -= count
        if error is None:
            self.sent += count
            if self._unreachable:
                self._unreachable = False
                logger.info("%s producer: Kafka reachable again", self._topic)
        else:
            self.failed += count
            logger.debug("%s record of %d not delivered: %s", self._topic, count, error)

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (called from ``poll``): one warning line per outage."""
        if error.fatal():
            self._fatal = error
            return
        code = error.code()
        if code in _ONE_BROKER:
            logger.debug("%s producer: %s", self._topic, error.str())
        elif code == _OUTAGE:
            if not self._unreachable:
                self._unreachable = True
                logger.warning(
                    "%s producer: Kafka unreachable (%s); items wait, then count as failed or dropped",
                    self._topic,
                    error.str(),
                )
        else:
            logger.warning("%s producer: %s", self._topic, error.str())

    def _renew(self, producer: Producer, error: KafkaError) -> Producer:
        """A producer librdkafka failed for good (an idempotence fatal error): what it held is counted
        failed, and a new one takes over."""
        logger.error("%s producer failed (%s); starting a new one", self._topic, error.str())
        self._fatal = None
        producer.purge()
        producer.poll(0)  # the purged records' reports: counted failed
        return self._new_producer()

    async def _drain(self, producer: Producer) -> None:
        """Wait (up to ``DRAIN_S``) for the deliveries outstanding while Kafka answers; what is left is
        given up, counted failed."""
        deadline = time.monotonic() + DRAIN_S
        while len(producer) and not self._unreachable and time.monotonic() < deadline:
            producer.poll(0)
            await asyncio.sleep(0.01)
        if len(producer):
            producer.purge()
        producer.poll(0)  # the last reports, purged ones included
