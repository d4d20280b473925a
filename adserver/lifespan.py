"""Startup and shutdown of a worker: builds the ``ServerState`` and runs its background components.

Nothing connects before the lifespan starts. Each component is an async context manager over the state:
it starts what it owns (usually a background task) on entry and stops it on exit, in reverse order.
The index bootstrap runs in the background, so the worker answers ``/healthz`` (and ``/readyz`` with
503) while it loads. To add a component (as the feedback path adds Redis budgets and its producer),
append it to ``adserver.app.COMPONENTS`` (not here: component modules import ``background`` from this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from adplatform.config import Config, load_config
from adserver.params import RequestParser
from adserver.state import ServerState, StateRef
from adserver.sync.blocked import BlockedListener
from adserver.sync.counts import RequestCountReporter
from adserver.sync.profiles import ProfileLoader, ProfileTable
from adserver.sync.publisher import ServedAdPublisher
from adserver.sync.refresher import IndexRefresher
from adserver.sync.sampler import RequestSampler
from adserver.token import TokenSigner
from index.geo import GeoTable
from index.index import TargetingIndex

logger = logging.getLogger(__name__)

Component = Callable[[ServerState], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def background(name: str, coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``coro`` as a task for the duration of the block; a crash is logged, never silent."""
    task = asyncio.create_task(coro, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            logger.error("background task %s died", name, exc_info=done.exception())

    task.add_done_callback(report)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def build_state(config: Config) -> ServerState:
    """A fresh state for one worker: no connection is opened here."""
    geo = GeoTable(default_country=config.default_country)
    index = TargetingIndex(geo)
    return ServerState(
        config=config,
        geo=geo,
        parser=RequestParser(geo),
        index=index,
        signer=TokenSigner(config.token_keys, ttl_s=config.token_ttl_s),
        rng=random.Random(),
        profiles=ProfileTable(),
        refresher=IndexRefresher(config, index),
        blocked=BlockedListener(config.redis_url, index.blocked),
        publisher=ServedAdPublisher(config),
        sampler=RequestSampler(config),
    )


@contextlib.asynccontextmanager
async def refresher(state: ServerState) -> AsyncIterator[None]:
    async with background("index-refresher", state.refresher.run()):
        yield


@contextlib.asynccontextmanager
async def blocked_listener(state: ServerState) -> AsyncIterator[None]:
    async with background("blocked-listener", state.blocked.run()):
        yield


@contextlib.asynccontextmanager
async def profiles(state: ServerState) -> AsyncIterator[None]:
    async with background("profile-loader", ProfileLoader(state.config.pg_dsn, state.profiles).run()):
        yield


@contextlib.asynccontextmanager
async def publisher(state: ServerState) -> AsyncIterator[None]:
    async with background("served-publisher", state.publisher.run()) as task:
        try:
            yield
        finally:
            # Ship what is queued before the task is cancelled; bounded so shutdown cannot hang on Kafka.
            state.publisher.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=10)


@contextlib.asynccontextmanager
async def sampler(state: ServerState) -> AsyncIterator[None]:
    async with background("request-sampler", state.sampler.run()) as task:
        try:
            yield
        finally:
            state.sampler.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=5)


@contextlib.asynccontextmanager
async def request_counts(state: ServerState) -> AsyncIterator[None]:
    """Exact serve counts per window to ``ad-request-counts``; on stop, the partial window too."""
    reporter = RequestCountReporter(state.config, state.stats)
    state.counts = reporter
    async with background("request-counts", reporter.run()) as task:
        try:
            yield
        finally:
            reporter.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=10)


async def _freeze_when_ready(state: ServerState) -> None:
    await state.refresher.ready.wait()
    # The index is long-lived: move it (and everything loaded so far) out of the cyclic GC's reach, so a
    # full collection stops walking ~10 objects per campaign (100k campaigns: ~100 ms pauses otherwise).
    gc.freeze()


@contextlib.asynccontextmanager
async def gc_freeze(state: ServerState) -> AsyncIterator[None]:
    async with background("gc-freeze", _freeze_when_ready(state)):
        yield


#: The serving components, started in this order and stopped in reverse (the publisher last, so it ships
#: what serving queued). ``adserver.app.COMPONENTS`` adds the feedback path's.
CORE_COMPONENTS: tuple[Component, ...] = (
    publisher,
    request_counts,
    sampler,
    profiles,
    blocked_listener,
    refresher,
    gc_freeze,
)


@contextlib.asynccontextmanager
async def lifespan(
    ref: StateRef, config: Config | None, components: Sequence[Component] = CORE_COMPONENTS
) -> AsyncIterator[None]:
    """Build the state (config from the environment unless given), start every component, and publish
    the state on ``ref`` for the routes; undo it all on shutdown."""
    state = build_state(config if config is not None else load_config())
    async with contextlib.AsyncExitStack() as stack:
        for component in components:
            await stack.enter_async_context(component(state))
        ref.state = state
        try:
            yield
        finally:
            ref.state = None
