"""``POST /ad/{request_id}/feedback`` and the lifespan component that builds the feedback path.

The route is raw ASGI like the serve route: it reads the body (bounded by the size-limit middleware),
hands it to ``FeedbackService`` and answers with pre-encoded JSON. The component owns the clients the
feedback path needs: a Redis pool (bounded, blocking when exhausted rather than failing), the budget
scripts, and an idempotent Kafka producer for ``ad-feedback`` (acks=all, 1 ms linger; a batch of requests'
events goes in one produce request, and the requests that arrive while it is in flight go in the next, so
no request ever flushes on its own).

Degradation: Redis or Kafka down → 503 with nothing charged (``FeedbackService``); serving is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka.errors import KafkaError
from starlette.types import Receive, Scope, Send

from adplatform.kafka import make_producer
from adplatform.redis_client import open_bounded
from adserver.feedback import FeedbackError, FeedbackService
from adserver.http.respond import detail, send_json
from adserver.lifespan import background
from adserver.published import PublishedEvents
from adserver.state import FeedbackHandler, ServerState, StateRef
from budget.budget_redis import BudgetStore, dedup_ttl_s
from budget.slot_call import WaitPolicy
from index.pacing import SystemClock

logger = logging.getLogger(__name__)

NOT_READY = detail("The feedback path is starting; retry shortly.")


class FeedbackEndpoint:
    """The feedback route as an ASGI app; ``respond`` is what the fast path calls."""

    def __init__(self, ref: StateRef) -> None:
        self._ref = ref

    @property
    def service(self) -> FeedbackHandler | None:
        """The worker's feedback path once it is ready (None: answer ``NOT_READY``)."""
        state = self._ref.state
        return None if state is None else state.feedback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.respond(scope["path_params"]["request_id"], receive, send)

    async def respond(self, request_id: str, receive: Receive, send: Send) -> int:
        """Read the body, run the feedback path, answer; returns the status sent (0: client gone)."""
        state = self._ref.state
        if state is None or state.feedback is None:
            await send_json(send, 503, NOT_READY, retry_after_s=1)
            return 503
        message = await receive()
        if message["type"] == "http.disconnect":
            return 0
        raw: bytes = message.get("body", b"")
        if message.get("more_body", False):
            chunks = [raw]
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return 0
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            raw = b"".join(chunks)
        try:
            body = await state.feedback.handle(request_id, raw)
        except FeedbackError as exc:
            await send_json(send, exc.status, exc.body, retry_after_s=1 if exc.status == 503 else None)
            return exc.status
        await send_json(send, 200, body)
        return 200


@contextlib.asynccontextmanager
async def feedback_component(state: ServerState) -> AsyncIterator[None]:
    """Redis budgets and the ad-feedback producer for this worker."""
    config = state.config
    client = open_bounded(
        config.redis_url, max_connections=64, timeout_s=2, socket_timeout_s=2, connect_timeout_s=2
    )
    # A debit counts once this many replicas hold it (ADP_REDIS_WAIT_REPLICAS; see budget.budget_redis).
    wait = WaitPolicy(replicas=config.redis_wait_replicas, timeout_ms=config.redis_wait_ms)
    budgets = BudgetStore(client, slot_s=config.slot_s, wait=wait)
    # Linger 1 ms: while a produce request is in flight (one per broker) the next batch fills by itself;
    # a longer linger only adds latency (5 ms measured 0.7x the throughput of 1 ms). No linger measured
    # 1.05x the requests/s (a batch's wait for its acknowledgements 1.65 -> 1.15 ms mean) but p99 about
    # 1.3 ms longer and 1.6x the broker's CPU (more, smaller produce requests), the machine near full:
    # not worth it on a shared machine (BENCHMARKS.md, 2026-12-05).
    producer = make_producer(config, linger_ms=1, client_id="adserver-feedback")
    # Before an orphaned charge is published again: is its first event in ad-feedback already?
    published = PublishedEvents(config.kafka_bootstrap, config.topics.feedback)
    service = FeedbackService(
        signer=state.signer,
        budgets=budgets,
        producer=producer,
        topic=config.topics.feedback,
        lookup=state.index.get,
        clock=SystemClock(),
        dedup_ttl_s=dedup_ttl_s(config.token_ttl_s),
        published=published,
    )
    started = asyncio.Event()

    async def start_producer() -> None:
        # In the background, retried: a worker starts (and serves) while Kafka is down, and feedback
        # answers 503 until the producer is connected.
        delay_s = 0.2
        while True:
            try:
                await producer.start()
                break
            except (KafkaError, OSError) as exc:
                logger.warning("feedback producer not connected (%s); retrying in %.1fs", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
        started.set()
        state.feedback = service

    async with background("feedback-producer", start_producer()):
        try:
            yield
        finally:
            state.feedback = None
    await service.aclose()  # batches in flight finish (their events acknowledged or refunded) first
    await published.aclose()
    if started.is_set():
        await producer.stop()
    await budgets.aclose()
    await client.aclose()  # and its pool
