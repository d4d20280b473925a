"""The blocked-set listener on a Redis Cluster (the tests' own) stops when it is cancelled, whenever that
comes: redis-py's cluster client lost a cancellation that arrived while a session subscribed (about 1.5 s
of ``SSUBSCRIBE``s), and a worker's shutdown then waited for the listener forever."""

from __future__ import annotations

import asyncio
import time

import pytest

from adplatform.blocked import BlockedListener
from tests.adserver.serving import eventually
from tests.redis_cluster import SessionCluster


@pytest.mark.redis_cluster
async def test_the_listener_stops_when_cancelled_while_it_subscribes(
    test_cluster: SessionCluster,
) -> None:
    test_cluster.wait_healthy()
    started = time.monotonic()
    probe = BlockedListener(test_cluster.url, set())
    task = asyncio.create_task(probe.run())

    async def connected() -> bool:
        return probe.connected

    await eventually(connected, timeout_s=30, poll_s=0.01)
    subscribing_s = time.monotonic() - started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lost = []
    for step in range(1, 6):  # cancelled at points spread over the subscription
        delay_s = subscribing_s * step / 6
        listener = BlockedListener(test_cluster.url, set())
        task = asyncio.create_task(listener.run())
        await asyncio.sleep(delay_s)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:
            lost.append(round(delay_s, 2))
            task.cancel()
            await asyncio.wait([task], timeout=5)
    assert lost == [], f"cancellations lost at {lost} s into a {subscribing_s:.2f} s subscription"
