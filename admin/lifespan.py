"""Startup and shutdown of the admin service: every client is created here and closed in reverse."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from admin.insight import insight_running
from admin.publish import InstructionPublisher
from admin.settings import AdminConfig, load_admin_config
from admin.state import AdminState, StateRef
from adplatform.config import Config, load_config
from adplatform.postgres import create_pool
from adplatform.redis_client import open_redis
from budget.budget_redis import BudgetStore


@contextlib.asynccontextmanager
async def lifespan(ref: StateRef, config: Config | None, settings: AdminConfig | None) -> AsyncIterator[None]:
    """Build the state (config from the environment unless given), publish it on ``ref``, undo it all."""
    cfg = config if config is not None else load_config()
    admin_cfg = settings if settings is not None else load_admin_config()
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(cfg, max_size=8)
        stack.push_async_callback(pool.close)
        redis_client = open_redis(cfg.redis_url, socket_timeout=5)  # one Redis or a Redis Cluster
        stack.push_async_callback(redis_client.aclose)
        publisher = InstructionPublisher(cfg)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        adservers = httpx.AsyncClient(
            timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0, max_connections=64)
        )
        stack.push_async_callback(adservers.aclose)
        insight = await stack.enter_async_context(insight_running(cfg))
        ref.state = AdminState(
            config=cfg, settings=admin_cfg, pool=pool, redis=redis_client,
            budgets=BudgetStore(redis_client, slot_s=cfg.slot_s), publisher=publisher, adservers=adservers,
            insight=insight,
        )  # fmt: skip
        try:
            yield
        finally:
            ref.state = None
