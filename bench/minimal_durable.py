"""A reference for the feedback bench: the minimal Starlette app's feedback POST plus the two durable
writes every feedback must make, written the plain way, and nothing else.

Per worker, in the ad server's order (``adserver.feedback``): requests that arrive while the worker's
Redis call is in flight wait and go together in the next one (one Lua script call per batch: a
de-duplication ``SET NX EX`` per request and a counter's ``INCRBY``, under the stack's ``appendfsync
always``); then each request's event (a fixed ~600-byte JSON with its id) goes to the sandbox's
``ad-feedback`` topic through the house producer (``adplatform.kafka.make_producer``: idempotent,
``acks=all``, the feedback path's 1 ms linger), and the request is answered once Kafka acknowledged it.
No token, no body parsing, no budget rules, no metrics, no failure handling beyond failing the batch:
what those two writes cost a plain Starlette app on this machine, under the same wrk script as the
feedback server (which answers from its own protocol, without Starlette).

Run only by ``bench.feedback_http --durable``, in its sandbox: the keys live in the sandbox's Redis
database (on the cluster stack: its key namespace, ``names.REDIS_PREFIX``, all in one hash slot as one
campaign's are) and the events in its topics, dropped with it. A failed Redis call fails its batch's
requests (wrk counts the 500s) instead of leaving them waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.commands.core import AsyncScript
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adplatform import names
from adplatform.config import load_config
from adplatform.kafka import make_producer
from adplatform.redis_client import open_bounded
from bench.minimal_app import FEEDBACK_BODY

#: KEYS[1] the counter, KEYS[2..] the requests' de-duplication keys; ARGV[1] their time to live.
SCRIPT = """
local n = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then n = n + 1 end
end
return redis.call('INCRBY', KEYS[1], n)
"""

#: The requests' counter; each de-duplication key shares its hash slot (one script call, also on a cluster).
COUNT_KEY = f"{names.REDIS_PREFIX}bench-durable:{{ref}}:count"


def dedup_key(request_id: str) -> str:
    """One request's de-duplication key."""
    return f"{names.REDIS_PREFIX}bench-durable:{{ref}}:dedup:{request_id}"


#: An event of the size of the ad server's (``adserver.feedback.build_event``), the request id spliced in.
EVENT = b'{"request_id": "%s", "pad": "' + b"x" * 520 + b'"}'


class GroupCommit:
    """One Redis call in flight per worker; each batch's events published while the next batch's call runs."""

    def __init__(self, script: AsyncScript, producer: AIOKafkaProducer, topic: str) -> None:
        self._script = script
        self._producer = producer
        self._topic = topic
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def commit(self, request_id: str) -> None:
        done = asyncio.get_running_loop().create_future()
        self._pending.append((request_id, done))
        if not self._busy:
            self._spawn(self._drain())
        await done

    def _spawn(self, run: Any) -> None:
        task = asyncio.ensure_future(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        self._busy = True
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                keys = [COUNT_KEY, *(dedup_key(rid) for rid, _ in batch)]
                try:
                    await self._script(keys=keys, args=[600])
                except Exception as exc:  # the batch fails with it, the next one tries again
                    _fail(batch, exc)
                    continue
                self._spawn(self._publish(batch))
        finally:
            self._busy = False

    async def _publish(self, batch: list[tuple[str, asyncio.Future[None]]]) -> None:
        try:
            acks = [
                await self._producer.send(self._topic, EVENT % rid.encode(), key=rid.encode())
                for rid, _ in batch
            ]
            await asyncio.wait(acks)
        except Exception as exc:  # every request of the batch fails with it (wrk counts a 500)
            _fail(batch, exc)
            return
        for (_, done), ack in zip(batch, acks, strict=True):
            if not done.done():
                failed = ack.exception()
                done.set_exception(failed) if failed else done.set_result(None)


def _fail(batch: list[tuple[str, asyncio.Future[None]]], exc: Exception) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    config = load_config()
    client = open_bounded(
        config.redis_url, max_connections=64, timeout_s=2, socket_timeout_s=2, connect_timeout_s=2
    )
    producer = make_producer(config, linger_ms=1, client_id="bench-durable")
    await producer.start()
    app.state.commit = GroupCommit(client.register_script(SCRIPT), producer, config.topics.feedback)
    try:
        yield
    finally:
        await producer.stop()
        await client.aclose()


async def serve(request: Request) -> Response:  # the wait for readiness asks this route
    return JSONResponse(FEEDBACK_BODY)


async def feedback(request: Request) -> Response:
    await request.body()
    await request.app.state.commit.commit(request.path_params["request_id"])
    return JSONResponse(FEEDBACK_BODY)


app = Starlette(
    routes=[
        Route("/ad/user/{user_id}/serve", serve, methods=["GET"]),
        Route("/ad/{request_id}/feedback", feedback, methods=["POST"]),
    ],
    lifespan=lifespan,
)
