"""Redis clients for either topology, chosen by the URL alone, and the key layout that goes with each.

``redis://host:port/db`` is one Redis; ``redis+cluster://host:port[,host:port...]`` is a Redis Cluster
(seed nodes; the rest is discovered, and the client follows slot moves and failovers). Every process
opens its Redis with ``open_redis``, so the same code runs on both topologies.

``RedisLayout`` says where a campaign's blocked flag and exhaustion notice go. On one node: the one
``names.BLOCKED_SET`` and the plain pub/sub channel (as before, so running services keep hearing each
other). On a cluster every script must stay in one hash slot, so both are per slot: a blocked set and a
shard channel (``SPUBLISH``) whose hash tag puts them in the campaign's slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from adplatform import names

#: Either topology; both run the budget and frequency-cap scripts.
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

CLUSTER_SCHEME: Final = "redis+cluster"


class RedisUrlError(ValueError):
    """A Redis URL this module cannot open (the message names the URL's problem, never its password)."""


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` seed nodes of a ``redis+cluster://`` URL."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    seeds: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise RedisUrlError(
                f"a redis+cluster URL lists host:port seeds separated by commas, got {part!r}"
            )
        seeds.append((host.strip("[]"), int(port)))
    return seeds


def open_redis(url: str, **kwargs: Any) -> RedisClient:
    """A client for ``url`` (not connected yet). ``kwargs`` are redis-py connection options (timeouts,
    ``max_connections``...), passed to every node's pool on a cluster."""
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **kwargs)
    parts = urlsplit(url)
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise RedisUrlError(f"Redis Cluster has only database 0, the URL names {db!r}")
    if parts.password is not None:
        kwargs.setdefault("password", unquote(parts.password))
        if parts.username:
            kwargs.setdefault("username", unquote(parts.username))
    kwargs.pop("health_check_interval", None)  # a cluster node's pool takes no such option
    nodes = [ClusterNode(host, port) for host, port in cluster_seeds(url)]
    return RedisCluster(startup_nodes=nodes, **kwargs)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


@dataclass(frozen=True, slots=True)
class RedisLayout:
    """Where blocked flags and exhaustion notices live for one topology (``cluster``) and, on one node,
    one logical database (``db``: pub/sub is server-wide, so the channel names the database)."""

    cluster: bool
    db: int = 0

    @staticmethod
    def of(client: RedisClient) -> RedisLayout:
        if isinstance(client, RedisCluster):
            return RedisLayout(cluster=True)
        return RedisLayout(cluster=False, db=int(client.connection_pool.connection_kwargs.get("db") or 0))

    @property
    def publish_command(self) -> str:
        """``SPUBLISH`` on a cluster: a shard channel stays in its slot's shard (a plain ``PUBLISH`` is sent
        to every node of the cluster)."""
        return "SPUBLISH" if self.cluster else "PUBLISH"

    def slot_of(self, campaign_id: str) -> int:
        return key_slot(names.budget_key(campaign_id).encode())

    def blocked_key(self, campaign_id: str) -> str:
        """The blocked set holding ``campaign_id`` when it is blocked."""
        return names.blocked_key_of_slot(self.slot_of(campaign_id)) if self.cluster else names.BLOCKED_SET

    def channel(self, campaign_id: str) -> str:
        """The channel on which ``campaign_id``'s block/unblock notices are published."""
        if self.cluster:
            return names.budget_channel_of_slot(self.slot_of(campaign_id))
        return names.budget_channel(self.db)


async def blocked_members(client: RedisClient) -> set[str]:
    """Every blocked campaign (the union of the per-slot sets on a cluster)."""
    layout = RedisLayout.of(client)
    keys = (
        [names.blocked_key_of_slot(s) for s in range(names.HASH_SLOTS)]
        if layout.cluster
        else [names.BLOCKED_SET]
    )
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.smembers(key)
    out: set[str] = set()
    for members in await pipe.execute():
        out.update(m.decode() if isinstance(m, bytes) else m for m in members)
    return out


async def is_blocked(client: RedisClient, campaign_id: str) -> bool:
    layout = RedisLayout.of(client)
    return bool(await client.sismember(layout.blocked_key(campaign_id), campaign_id))


def open_bounded(
    url: str, *, max_connections: int, timeout_s: float, socket_timeout_s: float, connect_timeout_s: float
) -> RedisClient:
    """A client with at most ``max_connections`` connections (per node on a cluster). On one node a caller
    beyond the bound waits up to ``timeout_s`` for a connection instead of failing at once; a cluster's
    node pools have no waiting mode, so there the bound fails fast (``MaxConnectionsError``, retriable).
    ``aclose()`` closes the pool too."""
    if is_cluster_url(url):
        return open_redis(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
    )
    return aioredis.Redis.from_pool(pool)
