"""The blocked-campaign set of one process (an ad-server worker, the admin service's explain): Redis
``BLOCKED_SET`` at (re)connect, then pub/sub updates.

The budget scripts add a campaign to the set and publish ``block:<id>`` on ``budget_channel`` in one
atomic step (``unblock:<id>`` when a budget is replenished). The listener subscribes *before* reading the
set, so no message falls between the snapshot and the subscription; messages that arrive after the
snapshot are applied on top of it in publication order, which ends in the right state.

Degradation policy: Redis down keeps the last known set (serving goes on from the index), and the listener
reconnects with backoff, reloading the whole set so nothing missed meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from adplatform import names
from adplatform.errors import is_retriable

logger = logging.getLogger(__name__)


class BlockedListener:
    """Mirrors the Redis blocked set into ``blocked`` (the index's set, mutated in place)."""

    def __init__(self, redis_url: str, blocked: set[str]) -> None:
        self._redis_url = redis_url
        self.blocked = blocked
        self.connected = False
        self.messages = 0
        self.bad_messages = 0
        self.reconnects = 0
        self._failing = False

    def apply(self, message: bytes | str) -> bool:
        """Apply one ``block:<id>`` / ``unblock:<id>`` message; False (and counted) if malformed."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        verb, _, campaign_id = text.partition(":")
        if not campaign_id or verb not in ("block", "unblock"):
            self.bad_messages += 1
            return False
        if verb == "block":
            self.blocked.add(campaign_id)
        else:
            self.blocked.discard(campaign_id)
        self.messages += 1
        return True

    def reload(self, members: set[bytes | str]) -> None:
        """Replace the set's contents (no await in between: requests see either the old or the new set)."""
        fresh = {m.decode("utf-8", "replace") if isinstance(m, bytes) else m for m in members}
        self.blocked.intersection_update(fresh)
        self.blocked.update(fresh)

    async def run(self) -> None:
        backoff_s = 0.5
        while True:
            # No socket timeout: a subscribed connection is idle until a budget runs out. A dead peer is
            # found by the health check pings.
            client = aioredis.Redis.from_url(
                self._redis_url, socket_connect_timeout=5, health_check_interval=15
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(names.budget_channel_of(client))
                self.reload(await client.smembers(names.BLOCKED_SET))
                self.connected = True
                if self._failing:
                    logger.info("blocked-set listener reconnected: %d blocked", len(self.blocked))
                self._failing = False
                backoff_s = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.apply(message["data"])
            except Exception as exc:
                if not is_retriable(exc):  # never clears by reconnecting: the task dies, logged
                    raise
                if not self._failing:  # one line per outage
                    logger.warning(
                        "blocked-set listener: Redis failed (%s); keeping %d", exc, len(self.blocked)
                    )
                self._failing = True
                self.reconnects += 1
            finally:
                self.connected = False
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                await client.aclose()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)
