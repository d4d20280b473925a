"""The index feed on the real Kafka: a burst of ``ad-changes`` records that arrives while the feed tails is
applied whole, with turns of the event loop between the changes (a turn after each at ``turn_s=0``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import msgspec
import pytest

from adplatform.config import Config
from adplatform.index_feed import IndexFeed
from adplatform.kafka import make_producer
from index.index import TargetingIndex
from tests.adserver.serving import eventually
from tests.index.index_factory import campaign

pytestmark = pytest.mark.kafka


async def test_a_burst_is_applied_with_a_turn_of_the_loop_between_changes(topics: Config) -> None:
    index = TargetingIndex()
    feed = IndexFeed(topics, index, client_id="test-index-feed", turn_s=0.0)
    task = asyncio.create_task(feed.run())
    producer = make_producer(topics)
    await producer.start()
    try:
        await asyncio.wait_for(feed.ready.wait(), timeout=30)
        burst = [campaign(campaign_id=f"burst-{i:03d}") for i in range(120)]
        sends = [
            await producer.send(topics.topics.ad_changes, msgspec.json.encode(c), key=c.campaign_id.encode())
            for c in burst
        ]
        await asyncio.gather(*sends)

        async def applied() -> bool:
            return all(c.campaign_id in index for c in burst)

        await eventually(applied, timeout_s=30, poll_s=0.01)
        assert feed.applied == len(burst) and len(index) == len(burst)
        # Every change applied by the tail was followed by its turn (the bootstrap read none of them).
        await eventually(_at_least(feed, len(burst)), timeout_s=5, poll_s=0.01)
    finally:
        await producer.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _at_least(feed: IndexFeed, turns: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return feed.turns_given >= turns

    return check
