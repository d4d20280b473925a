"""Each consumer service's lag gauge on its metrics port: it grows while the consumer stops consuming and
returns to 0 once it consumes again (the Ad Manager, the spend ledger and the served-writer, each through
the same ``lag_tracking`` its entry uses, on its own consumer). The archive's commit lag is checked in
``tests/archive/test_report_stack.py``, where a Spark session already runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from adplatform.config import Config
from adplatform.kafka import make_producer
from adplatform.metrics import lag_tracking
from adplatform.names import GROUP_AD_MANAGER, GROUP_LEDGER, GROUP_SERVED_WRITER
from adplatform.wire import ServedAd, encoder
from budget.ledger import open_ledger, stored_offsets
from ingest.manager import open_manager
from ingest.served_writer import open_served_writer
from tests.adserver.serving import InstructionSender, campaign_row, eventually
from tests.archive.events import make_events
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def metrics_url() -> Iterator[str]:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _value(text: str, name: str, **labels: str) -> tuple[int, float]:
    """How many series of ``name`` carry ``labels``, and their sum."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return len(found), sum(found)


Send = Callable[[int, int], Awaitable[None]]


async def _lag_moves_and_returns(
    topics: Config,
    metrics_url: str,
    group: str,
    consumer: AIOKafkaConsumer,
    send: Send,
    consumed: Callable[[], Awaitable[float]],
) -> None:
    """With the service running: 3 records are consumed (lag 0); paused, 5 more make the lag 5 and are
    not consumed; resumed, the lag returns to 0 and all 8 are consumed. ``send(first, n)`` publishes
    records ``first … first+n-1``; ``consumed()`` counts what the service handled since it started."""
    async with httpx.AsyncClient() as client:

        async def lag_is(expected: float) -> bool:
            series, total = _value(
                (await client.get(metrics_url)).text, "adplatform_consumer_lag_records", group=group
            )
            return series == topics.topics.partitions and total == expected

        async def consumed_is(expected: float) -> bool:
            return await consumed() == expected

        await send(0, 3)
        await eventually(lambda: lag_is(0), timeout_s=30, poll_s=0.1)
        await eventually(lambda: consumed_is(3), timeout_s=30, poll_s=0.1)
        # The consumer stops consuming (paused: it fetches nothing), the topic grows: lag = what came.
        consumer.pause(*consumer.assignment())
        await send(3, 5)
        await eventually(lambda: lag_is(5), timeout_s=30, poll_s=0.1)
        assert await consumed() == 3
        consumer.resume(*consumer.assignment())
        await eventually(lambda: lag_is(0), timeout_s=30, poll_s=0.1)
        await eventually(lambda: consumed_is(8), timeout_s=30, poll_s=0.1)


async def _publish(config: Config, topic: str, values: list[bytes]) -> None:
    producer = make_producer(config, linger_ms=0, client_id="test-lag")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def test_manager_lag_moves_when_its_consumer_stops_and_returns_to_zero(
    topics: Config, metrics_url: str
) -> None:
    group = topics.group(GROUP_AD_MANAGER)
    async with (
        httpx.AsyncClient() as client,
        InstructionSender(topics) as sender,
        open_manager(topics) as manager,
        lag_tracking(manager.consumer, group, interval_s=0.1),
    ):

        async def accepted() -> float:
            text = (await client.get(metrics_url)).text
            return _value(text, "manager_instructions_total", outcome="accepted")[1]

        before = await accepted()

        async def since_start() -> float:
            return await accepted() - before

        async def send(first: int, n: int) -> None:
            for i in range(first, first + n):
                await sender.send(campaign_row(f"lag{i}"))

        task = asyncio.create_task(manager.run())
        try:
            await _lag_moves_and_returns(topics, metrics_url, group, manager.consumer, send, since_start)
        finally:
            manager.stop()
            await task


async def test_ledger_lag_moves_when_its_consumer_stops_and_returns_to_zero(
    topics: Config, metrics_url: str, pg_pool: asyncpg.Pool
) -> None:
    group = topics.group(GROUP_LEDGER)
    events = [encoder.encode(e) for e in make_events(8, seed=5, start_ms=1_760_000_000_000, step_ms=1000)]
    async with (
        open_ledger(topics) as ledger,
        lag_tracking(ledger.consumer, group, interval_s=0.1),
    ):

        async def send(first: int, n: int) -> None:
            await _publish(topics, topics.topics.feedback, events[first : first + n])

        async def consumed() -> float:
            # Its committed position (stored with the spend, in PostgreSQL): a record re-read after a
            # rebalance is counted again in ``stats.messages``, never here.
            offsets = await stored_offsets(pg_pool, group, topics.topics.feedback)
            return sum(offsets.values())

        task = asyncio.create_task(ledger.run())
        try:
            await _lag_moves_and_returns(topics, metrics_url, group, ledger.consumer, send, consumed)
        finally:
            ledger.stop()
            await task


def _served(i: int) -> bytes:
    return encoder.encode(
        ServedAd(
            request_id=f"lag-{i}",
            campaign_id="lag-campaign",
            user_id="lag-user",
            served_at_ms=1_760_000_000_000 + i,
            auction_cpm=Decimal("0.0000441980"),
            auction_cpc=Decimal("0.001799"),
            auction_cpa=Decimal("0.061411"),
            bidders=2,
        )
    )


async def test_served_writer_lag_moves_when_its_consumer_stops_and_returns_to_zero(
    topics: Config, metrics_url: str
) -> None:
    group = topics.group(GROUP_SERVED_WRITER)
    async with (
        open_served_writer(topics) as writer,
        lag_tracking(writer.consumer, group, interval_s=0.1),
    ):

        async def send(first: int, n: int) -> None:
            await _publish(topics, topics.topics.served_ads, [_served(i) for i in range(first, first + n)])

        async def consumed() -> float:
            return writer.stats.inserted

        task = asyncio.create_task(writer.run())
        try:
            await _lag_moves_and_returns(topics, metrics_url, group, writer.consumer, send, consumed)
        finally:
            writer.stop()
            await task
