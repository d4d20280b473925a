"""A campaign's budget notices (block/unblock), heard on either topology: the plain pub/sub channel of the
session's logical database on one node, the campaign's shard channel (``SSUBSCRIBE`` on its slot's
master) on Redis Cluster. For tests that assert what a script publishes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from adplatform.redis_client import RedisClient, RedisLayout


@contextlib.asynccontextmanager
async def budget_notices(client: RedisClient, campaign_id: str) -> AsyncIterator[PubSub]:
    """A subscription to ``campaign_id``'s notices, confirmed; ``get_message`` returns them."""
    layout = RedisLayout.of(client)
    channel = layout.channel(campaign_id)
    owned: aioredis.Redis | None = None
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(channel)
        assert node is not None, f"no master holds the slot of {channel}"
        owned = aioredis.Redis(host=node.host, port=int(node.port))
        pubsub = owned.pubsub()
        await pubsub.ssubscribe(channel)
    else:
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
    try:
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        yield pubsub
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated
        if owned is not None:
            await owned.aclose()


async def set_blocked(client: RedisClient, campaign_id: str, blocked: bool) -> None:
    """Put ``campaign_id`` in (or take it out of) its blocked set, as the budget scripts do."""
    key = RedisLayout.of(client).blocked_key(campaign_id)
    if blocked:
        await client.sadd(key, campaign_id)
    else:
        await client.srem(key, campaign_id)


async def announce(client: RedisClient, campaign_id: str, message: str) -> None:
    """Publish ``message`` on ``campaign_id``'s notice channel (``PUBLISH``, or ``SPUBLISH`` on its slot's
    master), as the budget scripts do."""
    layout = RedisLayout.of(client)
    channel = layout.channel(campaign_id)
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(channel)
        await client.execute_command(layout.publish_command, channel, message, target_nodes=node)
    else:
        await client.execute_command(layout.publish_command, channel, message)  # type: ignore[no-untyped-call]  # unannotated in redis-py
