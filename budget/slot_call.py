"""One budget script over a batch of single-slot calls, on one Redis or a Redis Cluster, optionally waiting
for replicas (``WAIT``) before the results count.

On one node the calls go in one pipeline (one round trip), followed by ``WAIT`` on the same connection.
On a cluster each call touches one hash slot (the caller groups by slot); the calls are sent to the
masters of their slots, one pipeline (one connection) per master, all masters at once, each master's
calls followed by its ``WAIT``: ``WAIT`` covers the writes of its own connection only. Results come back
in the order of the calls.

The cluster's masters are reached through plain per-node clients with bounded, blocking pools
(``NodeClients``); the ``RedisCluster`` client only supplies the slot map. (redis-py 8.1's cluster
pipelines, run concurrently against several nodes, hand out connections whose writer is gone: measured
100 of 300 concurrent two-node batches failing.) A reply ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN``
means the call did not run: the slot map is read again and only those calls are sent again.

Nothing here retries a call that may have run (a second debit would answer "duplicate" and its first
charge would have no event): a master that fails mid-call fails its calls (``BatchError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    TryAgainError,
)

from adplatform.redis_client import RedisClient, is_redis_failure

#: Replies that mean the call did not run (the slot is elsewhere, the cluster is reconfiguring, or the
#: node does not hold the script: a promoted or restarted node starts without scripts).
NOT_RUN: Final = (MovedError, AskError, TryAgainError, ClusterDownError, NoScriptError)
#: Attempts for calls that did not run, a topology refresh apart.
ATTEMPTS: Final = 4


class BatchError(RedisError):
    """Part of a batch failed (on a cluster the calls of other masters may have run): ``results`` holds
    each call's result, an exception where a call failed, so the caller can undo what did run."""

    def __init__(self, message: str, results: list[Any]) -> None:
        super().__init__(message)
        self.results = results


class ReplicationError(BatchError):
    """Fewer replicas than required acknowledged a batch's writes in time: the batch does not count (the
    caller undoes it; a master failover could forget it)."""


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script call: its keys (all in one hash slot on a cluster) and arguments."""

    keys: list[str]
    args: list[Any]


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """``replicas``: how many replicas must acknowledge a batch's writes (0: do not wait), within
    ``timeout_ms``."""

    replicas: int = 0
    timeout_ms: int = 200


class NodeClients:
    """One plain client per cluster master (``host:port``), each with a bounded pool that waits for a free
    connection; the options (timeouts, credentials) are the cluster client's."""

    def __init__(self, cluster: RedisCluster, *, max_connections: int = 64, wait_s: float = 2.0) -> None:
        self.cluster = cluster
        self._max_connections = max_connections
        self._wait_s = wait_s
        self._clients: dict[str, aioredis.Redis] = {}

    def master_of(self, key: str) -> tuple[str, aioredis.Redis]:
        node = self.cluster.get_node_from_key(key)
        if node is None:
            raise ClusterDownError(f"no Redis Cluster master serves the slot of {key}")
        client = self._clients.get(node.name)
        if client is None:
            options = {
                k: v
                for k, v in node.connection_kwargs.items()
                if k in ("username", "password", "socket_timeout", "socket_connect_timeout")
            }
            pool = aioredis.BlockingConnectionPool(
                host=node.host, port=int(node.port), max_connections=self._max_connections,
                timeout=self._wait_s, **options,
            )  # fmt: skip
            client = self._clients[node.name] = aioredis.Redis.from_pool(pool)
        return node.name, client

    async def refresh(self) -> None:
        """Read the slot map again (after a failover or a slot move)."""
        try:
            await self.cluster.nodes_manager.initialize()
        except Exception as exc:  # best effort: the next call fails on a stale map and refreshes again
            if not is_redis_failure(exc):
                raise

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


class SlotCaller:
    """Runs one registered script over batches of calls (see the module doc)."""

    def __init__(
        self,
        client: RedisClient,
        source: str,
        *,
        wait: WaitPolicy | None = None,
        nodes: NodeClients | None = None,
    ) -> None:
        self._client = client
        self._source = source
        self._script: AsyncScript = client.register_script(source)
        #: Node clients (by id) known to hold the script.
        self._loaded: set[int] = set()
        self._wait = wait or WaitPolicy()
        if isinstance(client, RedisCluster) and nodes is None:
            nodes = NodeClients(client)
        self._nodes = nodes

    async def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The result of each call, in order. Raises ``ReplicationError`` when the wait fell short (the
        calls did run on their masters), ``BatchError`` when calls failed on a cluster (the others may
        have run), or, on one node, the error of the pipeline."""
        if not calls:
            return []
        if self._nodes is not None:
            return await self._run_cluster(self._nodes, calls)
        if len(calls) == 1 and not self._wait.replicas:
            return [await self._script(keys=calls[0].keys, args=calls[0].args)]
        assert isinstance(self._client, aioredis.Redis)
        results, short = await self._on(self._client, calls)
        if short:
            raise ReplicationError(short, results)
        return results

    async def _on(self, client: aioredis.Redis, calls: Sequence[ScriptCall]) -> tuple[list[Any], str | None]:
        """The calls on one node in one pipeline, then ``WAIT``: their results (exceptions in place on a
        cluster) and why the wait fell short (None when it did not)."""
        pipe = client.pipeline(transaction=False)
        if self._nodes is None:
            for call in calls:
                await self._script(keys=call.keys, args=call.args, client=pipe)  # loads it where missing
        else:
            # Loaded once per node, outside the pipeline: redis-py's pipeline loads scripts on a second
            # connection while holding its first, which deadlocks a busy bounded pool.
            if id(client) not in self._loaded:
                await client.script_load(self._source)
                self._loaded.add(id(client))
            for call in calls:
                pipe.evalsha(self._script.sha, len(call.keys), *call.keys, *call.args)
        if self._wait.replicas:
            pipe.execute_command("WAIT", self._wait.replicas, self._wait.timeout_ms)
        results = list(await pipe.execute(raise_on_error=self._nodes is None))
        if not self._wait.replicas:
            return results, None
        return results, self._short(results.pop())

    def _short(self, reply: Any) -> str | None:
        """Why a ``WAIT`` reply falls short, or None."""
        if isinstance(reply, BaseException):
            return f"WAIT failed: {reply}"
        if int(reply) < self._wait.replicas:
            return f"WAIT {self._wait.replicas} {self._wait.timeout_ms}: {int(reply)} replica(s) acknowledged"
        return None

    async def _run_cluster(self, nodes: NodeClients, calls: Sequence[ScriptCall]) -> list[Any]:
        await nodes.cluster.initialize()  # a no-op once connected
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        short: str | None = None
        for attempt in range(ATTEMPTS):
            groups: dict[str, tuple[aioredis.Redis, list[int]]] = {}
            for i in todo:
                try:
                    name, client = nodes.master_of(calls[i].keys[0])
                except ClusterDownError as exc:
                    results[i] = exc
                    continue
                groups.setdefault(name, (client, []))[1].append(i)
            outcomes = await asyncio.gather(
                *(self._on(client, [calls[i] for i in idx]) for client, idx in groups.values()),
                return_exceptions=True,
            )
            failed_node = False
            for (node_client, idx), outcome in zip(groups.values(), outcomes, strict=True):
                if isinstance(outcome, BaseException):  # the node failed: its calls may or may not have run
                    failed_node = True
                    for i in idx:
                        results[i] = outcome
                    continue
                replies, node_short = outcome
                short = short or node_short
                if any(isinstance(r, NoScriptError) for r in replies):
                    self._loaded.discard(id(node_client))
                for i, reply in zip(idx, replies, strict=True):
                    results[i] = reply
            todo = [i for i in todo if isinstance(results[i], NOT_RUN)]
            if failed_node or todo:
                await nodes.refresh()
            if not todo or attempt == ATTEMPTS - 1:
                break
            await asyncio.sleep(0.05 * (attempt + 1))
        if short:
            raise ReplicationError(short, results)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise BatchError(
                f"{len(failed)} of {len(calls)} calls failed: {failed[0]!r}", results
            ) from failed[0]
        return results

    async def aclose(self) -> None:
        if self._nodes is not None:
            await self._nodes.aclose()
