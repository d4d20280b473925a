"""Exact serve-request counts per window, published to ``ad-request-counts``: the fill rate's denominator.

The serve route already counts its outcomes in ``ServeStats`` (plain integer increments). At the end of
each window (``ADP_REQUEST_COUNT_INTERVAL_S``, aligned to the epoch) and when the worker stops, this
reporter takes the difference since the previous window, on the event loop's thread (so no request falls
between two windows or into both), and publishes it as one ``RequestCounts`` record keyed by the worker.
The hot path pays nothing more.

Unlike the sample and the served-ads stream, these counts are meant to be exact: a record is kept until
Kafka acknowledges it and sent again, with the same ``record_id``, at the next window (readers
de-duplicate on it). Degradation policy: Kafka down ⇒ records wait in a bounded queue (a week of
one-minute windows); past it the oldest are dropped and counted (``dropped``). A worker killed with
SIGKILL loses the counts of its open window: the one loss this design accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from adplatform.config import Config
from adplatform.errors import is_retriable
from adplatform.kafka import make_producer
from adplatform.request_counts import RequestCounts, counts_encoder
from adserver.state import NO_ELIGIBLE_AD, ServeStats

logger = logging.getLogger(__name__)

#: Records kept while Kafka does not take them: a week of one-minute windows.
MAX_PENDING: Final = 7 * 24 * 60


class CountsProducer(Protocol):
    """What the reporter needs of a Kafka producer (``AIOKafkaProducer`` in production)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> object: ...


def worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per worker process life, readable in a record."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RequestCountReporter:
    """Closes this worker's count windows and ships them, exactly, to ``ad-request-counts``."""

    def __init__(
        self,
        config: Config,
        stats: ServeStats,
        *,
        clock: Callable[[], float] = time.time,
        producer_factory: Callable[[], CountsProducer] | None = None,
        max_pending: int = MAX_PENDING,
        worker: str | None = None,
    ) -> None:
        self._topic = config.topics.request_counts
        self._interval_s = float(config.request_count_interval_s)
        self._stats = stats
        self._clock = clock
        self._factory = producer_factory or (
            lambda: make_producer(config, linger_ms=0, client_id="adserver-counts")
        )
        self._max_pending = max_pending
        self.worker = worker or worker_id()
        self._key = self.worker.encode()
        self._seq = 0
        self._window_start_ms = int(clock() * 1000)
        self._last = (stats.served, stats.unfilled, stats.rejected, stats.not_ready)
        self.pending: deque[RequestCounts] = deque()
        self._stop = asyncio.Event()
        self.sent = 0
        self.failed_sends = 0
        self.dropped = 0

    def close_window(self) -> RequestCounts | None:
        """The counts since the previous window, queued for sending; None (nothing queued) when this
        worker answered no serve request in the window."""
        now_ms = int(self._clock() * 1000)
        s = self._stats
        current = (s.served, s.unfilled, s.rejected, s.not_ready)
        served, no_fill, rejected, not_ready = (c - p for c, p in zip(current, self._last, strict=True))
        self._last = current
        start_ms, self._window_start_ms = self._window_start_ms, now_ms
        if not (served or no_fill or rejected or not_ready):
            return None
        record = RequestCounts(
            record_id=f"{self.worker}:{self._seq}",
            worker=self.worker,
            seq=self._seq,
            start_ms=start_ms,
            end_ms=now_ms,
            served=served,
            no_fill=no_fill,
            no_fill_reasons={NO_ELIGIBLE_AD: no_fill} if no_fill else {},
            rejected=rejected,
            not_ready=not_ready,
        )
        self._seq += 1
        self.pending.append(record)
        while len(self.pending) > self._max_pending:
            lost = self.pending.popleft()
            self.dropped += 1
            logger.error("request counts %s dropped: Kafka has not taken them for too long", lost.record_id)
        return record

    async def ship(self, producer: CountsProducer) -> bool:
        """Send the queued records in order, each acknowledged before the next; True when all went.
        A record that fails stays first in the queue for the next attempt."""
        while self.pending:
            record = self.pending[0]
            try:
                await producer.send_and_wait(self._topic, counts_encoder.encode(record), key=self._key)
            except UnknownTopicOrPartitionError:
                # A stack created before this topic existed: nothing reaches the reports until it does.
                logger.warning(
                    "request counts not sent: topic %s does not exist (run `adplatform topics`); %d waiting",
                    self._topic,
                    len(self.pending),
                )
                self.failed_sends += 1
                return False
            except (KafkaError, OSError) as exc:
                # Not a retry decision: whatever the error, the record waits for the next window.
                logger.warning("request counts not sent (%s); %d waiting", exc, len(self.pending))
                self.failed_sends += 1
                return False
            self.pending.popleft()
            self.sent += 1
        return True

    def stop(self) -> None:
        """Ask ``run`` to close the current (partial) window, ship what waits, and return."""
        self._stop.set()

    def _seconds_to_next_window(self) -> float:
        now = self._clock()
        return (math.floor(now / self._interval_s) + 1) * self._interval_s - now

    async def run(self) -> None:
        producer: CountsProducer | None = None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._seconds_to_next_window())
                self.close_window()
                if producer is None and self.pending:
                    producer = await self._connect()
                if producer is not None:
                    await self.ship(producer)
                if self._stop.is_set():
                    return
        finally:
            if producer is not None:
                await producer.stop()

    async def _connect(self) -> CountsProducer | None:
        producer = self._factory()
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            if not is_retriable(exc):  # never clears by reconnecting: the task dies, logged
                raise
            logger.warning("request-counts producer not connected (%s); retrying next window", exc)
            return None
        return producer
