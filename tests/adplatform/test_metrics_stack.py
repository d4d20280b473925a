"""A consumer service's lag gauge on its metrics port: it grows while the consumer stops consuming and
returns to 0 once it consumes again (the Ad Manager, through the same ``lag_tracking`` its entry uses)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from adplatform.config import Config
from adplatform.metrics import lag_tracking
from adplatform.names import GROUP_AD_MANAGER
from ingest.manager import open_manager
from tests.adserver.serving import InstructionSender, campaign_row, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def metrics_url() -> Iterator[str]:
    port = _free_port()
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

        async def lag_is(expected: float) -> bool:
            series, total = _value(
                (await client.get(metrics_url)).text, "adplatform_consumer_lag_records", group=group
            )
            return series == topics.topics.partitions and total == expected

        async def accepted() -> float:
            text = (await client.get(metrics_url)).text
            return _value(text, "manager_instructions_total", outcome="accepted")[1]

        task = asyncio.create_task(manager.run())
        try:
            before = await accepted()
            for i in range(3):
                await sender.send(campaign_row(f"lag{i}"))
            await eventually(lambda: lag_is(0), timeout_s=30, poll_s=0.1)

            async def all_accepted() -> bool:
                return await accepted() - before == 3

            await eventually(all_accepted, timeout_s=30, poll_s=0.1)
            # The consumer stops consuming (paused: it fetches nothing), the topic grows: lag = what came.
            manager.consumer.pause(*manager.consumer.assignment())
            for i in range(5):
                await sender.send(campaign_row(f"late{i}"))
            await eventually(lambda: lag_is(5), timeout_s=30, poll_s=0.1)
            assert await accepted() - before == 3
            manager.consumer.resume(*manager.consumer.assignment())
            await eventually(lambda: lag_is(0), timeout_s=30, poll_s=0.1)
            assert await accepted() - before == 8
        finally:
            manager.stop()
            await task
