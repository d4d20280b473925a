"""The delivery controls' lifespan component: a Redis client of their own, with the serve path's deadline,
for frequency caps, and even pacing's tick (``adserver.throttle``) reading slot states through it.

Its own pool (not the feedback path's): a cap check must never queue behind feedback debits, and its
sockets time out at the serve deadline's scale. Building the pool opens no connection; until the first
check connects, and whenever Redis fails, ``adserver.fcap.CapGate`` skips capped campaigns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from adplatform.redis_client import RedisClient, is_redis_failure, open_bounded
from adserver.lifespan import background
from adserver.state import ServerState
from adserver.throttle import EvenThrottle
from budget.fcap_redis import FrequencyCapStore

#: Connections opened at start, so the first burst of capped requests does not pay for connecting.
WARM_CONNECTIONS: Final = 4
#: The pool's bound (per node on a cluster), and the checks in flight at once: those beyond wait for one.
MAX_CONNECTIONS: Final = 16


async def _warm(client: RedisClient) -> None:
    # Best effort: a Redis that is down now (or a client failing) is the gate's business (it skips capped
    # campaigns).
    try:
        await asyncio.wait_for(asyncio.gather(*(client.ping() for _ in range(WARM_CONNECTIONS))), 2)
    except Exception as exc:
        if not is_redis_failure(exc):
            raise


@contextlib.asynccontextmanager
async def fcap_component(state: ServerState) -> AsyncIterator[None]:
    """Connect the worker's cap gate to Redis (``ADP_FCAP_REDIS_URL``, default ``ADP_REDIS_URL``)."""
    config = state.config
    deadline_s = config.fcap_deadline_ms / 1000
    # A few connections suffice (a check is one short script) and a small pool is warm sooner: opening a
    # connection costs more round trips than the check itself.
    client = open_bounded(  # one Redis or a Redis Cluster (the URL says which)
        config.fcap_redis_url or config.redis_url,
        max_connections=MAX_CONNECTIONS,
        timeout_s=deadline_s,
        socket_timeout_s=max(deadline_s, 0.5),
        connect_timeout_s=max(deadline_s, 0.5),
    )
    state.caps.deadline_s = deadline_s
    # Checks beyond the bound wait within the deadline on either topology (a cluster's pools fail fast).
    state.caps.store = FrequencyCapStore(client, max_in_flight=MAX_CONNECTIONS)
    throttle = EvenThrottle(slot_s=config.slot_s)
    state.caps.throttle = throttle
    try:
        async with background("fcap-warm", _warm(client)), background("even-pacing", throttle.run(client)):
            yield
    finally:
        state.caps.store = None
        state.caps.throttle = None
        await client.aclose()  # and its pool
