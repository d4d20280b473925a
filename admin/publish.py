"""Publishing instructions to ``campaign-instructions``: Kafka stays the one write path.

The producer connects in the background (the service starts, and reads work, while Kafka is down) and a
write answers 503 until it has. A publish returns only once Kafka acknowledged it (acks=all), so the
caller records the audit row after a real offset; when Kafka refuses or times out, the producer fails the
record (its own delivery timeout, never a shorter one of ours that would let it go out later) and the
caller rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from admin.error import AdminError
from adplatform.config import Config
from adplatform.kafka import make_producer

logger = logging.getLogger(__name__)

RECONNECT_S = 2.0


class InstructionPublisher:
    """One idempotent producer for the service, (re)connected in the background."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="admin-producer-connect")

    async def _connect(self) -> None:
        while True:
            producer = make_producer(self._config, linger_ms=0, client_id="admin")
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                logger.warning("Kafka not reachable (%s); writes answer 503 until it is", type(exc).__name__)
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
                await asyncio.sleep(RECONNECT_S)
                continue
            self._producer = producer
            self.connected.set()
            return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()

    async def publish(
        self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        """Send one record and wait for its acknowledgement; ``(partition, offset)``, or 503."""
        producer = self._producer
        if producer is None:
            raise AdminError(503, "Kafka is unavailable: nothing was published.")
        try:
            meta = await producer.send_and_wait(topic, value, key=key, headers=headers)
        except (KafkaError, OSError) as exc:
            logger.warning("publish to %s failed: %s", topic, type(exc).__name__)
            raise AdminError(503, "Kafka is unavailable: nothing was published.") from None
        return meta.partition, meta.offset
