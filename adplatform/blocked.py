"""The blocked-campaign set of one process (an ad-server worker, the admin service's explain): Redis
``BLOCKED_SET`` at (re)connect, then pub/sub updates.

The budget scripts add a campaign to the set and publish ``block:<id>`` on ``budget_channel`` in one
atomic step (``unblock:<id>`` when a budget is replenished). The listener subscribes *before* reading the
set, so no message falls between the snapshot and the subscription; messages that arrive after the
snapshot are applied on top of it in publication order, which ends in the right state.

Degradation policy: Redis down keeps the last known set (serving goes on from the index), and the listener
reconnects with backoff, reloading the whole set so nothing missed meanwhile is lost.

On Redis Cluster (a ``redis+cluster://`` URL) the set and the channel are per hash slot
(``adplatform.redis_client.RedisLayout``): the listener opens one connection per master, subscribes
(``SSUBSCRIBE``) to the shard channels of the slots it serves, then reads the union of the per-slot sets.
A failed master, or a slot that moves (the server unsubscribes us: ``sunsubscribe``), ends the session:
the listener finds the new masters, subscribes again and reloads, so a failover loses no notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from adplatform import names
from adplatform.errors import is_retriable
from adplatform.redis_client import blocked_members, is_cluster_url, is_redis_failure, open_redis

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

    def reload(self, members: Iterable[bytes | str]) -> None:
        """Replace the set's contents (no await in between: requests see either the old or the new set)."""
        fresh = {m.decode("utf-8", "replace") if isinstance(m, bytes) else m for m in members}
        self.blocked.intersection_update(fresh)
        self.blocked.update(fresh)

    def _connected(self) -> None:
        self.connected = True
        if self._failing:
            logger.info("blocked-set listener reconnected: %d blocked", len(self.blocked))
        self._failing = False

    async def _single(self) -> None:
        """One session on one Redis: subscribe, load the set, apply messages until the connection fails."""
        # No socket timeout: a subscribed connection is idle until a budget runs out. A dead peer is
        # found by the health check pings.
        client = aioredis.Redis.from_url(self._redis_url, socket_connect_timeout=5, health_check_interval=15)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(names.budget_channel_of(client))
            self.reload(await client.smembers(names.BLOCKED_SET))
            self._connected()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.apply(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            await client.aclose()

    async def _cluster(self) -> None:
        """One session on a Redis Cluster (see the module doc); ends with the first failure of any master."""
        cluster = open_redis(self._redis_url, socket_connect_timeout=5)
        assert isinstance(cluster, RedisCluster)
        subscribers: list[tuple[aioredis.Redis, PubSub]] = []
        try:
            try:
                await cluster.initialize()
            except RedisClusterException as exc:  # no seed answered: retried like a refused connection
                raise RedisConnectionError(f"Redis Cluster unreachable: {exc}") from exc
            slots: dict[tuple[str, int], list[int]] = {}
            for slot, nodes in cluster.nodes_manager.slots_cache.items():
                slots.setdefault((nodes[0].host, int(nodes[0].port)), []).append(slot)
            for (host, port), owned in slots.items():
                # No retries inside redis-py: a silent reconnect would skip the reload below.
                node = aioredis.Redis(
                    host=host, port=port, socket_connect_timeout=5, health_check_interval=15,
                    retry=Retry(NoBackoff(), 0),
                )  # fmt: skip
                pubsub = node.pubsub(ignore_subscribe_messages=False)
                subscribers.append((node, pubsub))
                for slot in owned:  # SSUBSCRIBE takes the channels of one slot per call
                    await pubsub.ssubscribe(names.budget_channel_of_slot(slot))
                _stop_if_cancelled()
            self.reload(await blocked_members(cluster))
            _stop_if_cancelled()
            self._connected()
            listeners = [asyncio.ensure_future(self._drain(pubsub)) for _, pubsub in subscribers]
            try:
                done, _ = await asyncio.wait(listeners, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raises what ended it
            finally:
                for task in listeners:
                    task.cancel()
                await asyncio.gather(*listeners, return_exceptions=True)
        finally:
            for node, pubsub in subscribers:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                await node.aclose()
            await cluster.aclose()

    async def _drain(self, pubsub: PubSub) -> None:
        async for message in _listen(pubsub):
            kind = message.get("type")
            data = message.get("data")
            if kind == "smessage" and isinstance(data, bytes | str):
                self.apply(data)
            elif kind == "sunsubscribe":  # the server dropped us: the slot moved (failover, resharding)
                raise RedisConnectionError(f"unsubscribed from {message.get('channel')!r}: the slot moved")
        raise RedisConnectionError("shard subscription ended")

    async def run(self) -> None:
        backoff_s = 0.5
        session = self._cluster if is_cluster_url(self._redis_url) else self._single
        while True:
            _stop_if_cancelled()
            try:
                await session()
            except Exception as exc:
                # A permanent Redis error never clears by reconnecting: the task dies, logged. An error raised
                # inside the client that is no Redis error (redis-py's cluster client closing connections
                # under a session) is retried like a dropped connection.
                client_bug = is_redis_failure(exc) and not isinstance(exc, RedisError | RedisClusterException)
                if not (is_retriable(exc) or client_bug):
                    raise
                if not self._failing:  # one line per outage
                    logger.warning(
                        "blocked-set listener: Redis failed (%s); keeping %d", exc, len(self.blocked)
                    )
                self._failing = True
                self.reconnects += 1
            finally:
                if self.connected:
                    backoff_s = 0.5  # the session worked: the next attempt starts quick again
                self.connected = False
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)


def _stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop. redis-py's cluster client can lose a
    cancellation that arrives while a session subscribes (16,384 ``SSUBSCRIBE``s and the blocked sets'
    pipeline: ~1.5 s on the cluster stack); the session then went on to listen, and a worker's shutdown
    waited for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _listen(pubsub: PubSub) -> AsyncIterator[dict[str, object]]:
    """``pubsub.listen()``, typed."""
    async for message in pubsub.listen():
        yield message
