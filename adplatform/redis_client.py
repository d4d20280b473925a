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

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from adplatform import names
from adplatform.errors import service_of

#: Either topology; both run the budget and frequency-cap scripts.
RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

CLUSTER_SCHEME: Final = "redis+cluster"

#: The Redis failures an ``except`` clause can name: redis-py's errors (its ``RedisClusterException`` family,
#: "no seed answered", "slot not covered", is not a ``RedisError``), socket errors and timeouts.
REDIS_FAILURES: Final = (RedisError, RedisClusterException, OSError)


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


class ClusterClient(RedisCluster):
    """A ``RedisCluster`` that reads the slot map before it routes a command, so a command is never sent to
    a random master for want of one."""

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        # redis-py 8.1 routes a command before it connects: with no slot map yet (a new client, or one that
        # closed its nodes after an error or a MOVED) a keyed command without a routing flag of its own
        # (EVALSHA, ...) is taken as keyless and sent to a random master, which answers MOVED. Every 5th
        # MOVED (``reinitialize_steps``) closes every connection of the client, those other calls are using
        # included (one still in its handshake fails with AttributeError on its dropped writer), and drops
        # the slot map again, so the calls that follow land on random masters too. Probe (200 cap checks at
        # once on 4 new clients, the tests' own cluster): 36 of 100 runs failed, 7,326 MOVED in 50 runs;
        # with this, 0 of 100 and no MOVED.
        if self.get_default_node() is None:
            await self.initialize()  # under the client's lock: one CLUSTER SLOTS for every waiting call
        return await super().execute_command(*args, **kwargs)


class FastPackConnection(aioredis.Connection):
    """redis-py's TCP connection with a faster ``pack_command`` for the usual arguments (``str``, ``bytes``,
    ``int``): the same bytes on the wire, built in one pass instead of one ``Encoder.encode`` call and one
    buffer concatenation per argument. The feedback path's debit script call carries two keys and one
    amount per request (66 arguments for a batch of 15): measured 11 µs per such call instead of 33 µs.
    Anything else (a command name with a space, a float, a ``memoryview``, a value over redis-py's
    chunking cutoff, a ``bool`` it refuses) goes to redis-py's own packer."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        first = args[0] if args else None
        # redis-py splits a name such as "CONFIG GET" into two arguments: those take its own path.
        if type(first) is not str or not first.isascii() or not first.isalnum():
            return super().pack_command(*args)
        encoding, errors = self.encoder.encoding, self.encoder.encoding_errors
        cutoff = self._buffer_cutoff
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                data = arg.encode(encoding, errors)
            elif isinstance(arg, bytes):
                data = arg
            elif type(arg) is int:  # exactly int: bool (refused by redis-py) and IntEnum take its path
                data = b"%d" % arg  # as redis-py's repr(value).encode()
            else:
                return super().pack_command(*args)
            if len(data) > cutoff:  # redis-py sends a large value as a chunk of its own (no copy)
                return super().pack_command(*args)
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        return [b"".join(parts)]


#: Keys per write of ``hmget_many``: its replies are read in ~1 ms, one turn of the event loop.
HMGET_CHUNK: Final = 250


async def hmget_many(
    client: aioredis.Redis, keys: Sequence[str], fields: Sequence[str], *, chunk: int = HMGET_CHUNK
) -> list[list[bytes | None]]:
    """``HMGET key *fields`` of every key (one node), pipelined on one connection of ``client``'s pool.

    The same bytes and replies as a redis-py pipeline of ``hmget`` calls, without its bookkeeping per
    command (the command stack, a timeout context and a response callback for every reply): the commands
    are packed here, ``chunk`` at a time, and the replies read straight from the connection's parser under
    one timeout per chunk (the client's ``socket_timeout``). ~4 µs a key against ~24 µs through the
    pipeline (BENCHMARKS.md, "Even pacing's tick", 2026-12-07). An error reply (a key of another type)
    raises ``ResponseError``; any failure leaves the connection closed, never a reply unread in the pool.
    """
    encoded = [f.encode() for f in fields]
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(encoded) + 2)
    tail = b"".join(b"$%d\r\n%b\r\n" % (len(f), f) for f in encoded)
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    replies: list[list[bytes | None]] = []
    try:
        for start in range(0, len(keys), chunk):
            part = [k.encode() for k in keys[start : start + chunk]]
            await conn.send_packed_command(
                b"".join([b"%b$%d\r\n%b\r\n%b" % (head, len(k), k, tail) for k in part])
            )
            read = conn.read_response
            try:
                async with asyncio.timeout(conn.socket_timeout):
                    for _ in part:
                        # Bytes whatever the client decodes; the chunk's timeout bounds the reads.
                        replies.append(await read(disable_decoding=True, timeout=math.inf))
            except TimeoutError:
                raise RedisTimeoutError(f"Timeout reading {len(part)} HMGET replies from Redis") from None
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies


def open_redis(url: str, **kwargs: Any) -> RedisClient:
    """A client for ``url`` (not connected yet). ``kwargs`` are redis-py connection options (timeouts,
    ``max_connections``...), passed to every node's pool on a cluster."""
    if not is_cluster_url(url):
        # A redis:// URL connects with FastPackConnection (rediss:// and unix:// keep their own classes).
        kwargs.setdefault("connection_class", FastPackConnection)
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
    return ClusterClient(startup_nodes=nodes, **kwargs)


def is_redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis or its client failing, to be treated as Redis being unavailable: one of
    ``REDIS_FAILURES``, or any other error raised inside redis-py (its cluster client, closing connections
    under concurrent calls, raises ``AttributeError`` from a connection's handshake). An error of our own
    code (no redis-py frame in its traceback) is not: the guard that asks re-raises it."""
    return isinstance(exc, REDIS_FAILURES) or service_of(exc) == "redis"


@dataclass
class ClientFailureLog:
    """Logs, with its traceback, a failure of the Redis client that is not one of ``REDIS_FAILURES`` (a bug
    of the client, treated as Redis being unavailable), at most once per ``every_s``: the guards that
    degrade on Redis failures sit on hot paths, and count every failure rather than log it."""

    logger: logging.Logger
    #: What failed, for the log line ("frequency caps", "feedback debit"...).
    what: str
    every_s: float = 60.0
    _quiet_until: float = field(default=0.0, repr=False)

    def note(self, exc: BaseException) -> None:
        if isinstance(exc, REDIS_FAILURES):
            return
        now = time.monotonic()
        if now < self._quiet_until:
            return
        self._quiet_until = now + self.every_s
        self.logger.warning(
            "%s: the Redis client failed (%s), treated as Redis unavailable", self.what, type(exc).__name__,
            exc_info=exc,
        )  # fmt: skip


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
        connection_class=FastPackConnection,  # redis:// only: rediss:// and unix:// keep their own classes
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
    )
    return aioredis.Redis.from_pool(pool)
