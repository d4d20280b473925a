"""Fresh per-test (or per-module) names on the shared local stack, the session's own stores, and the list
of topics to delete.

A test session never works in the user's database or Redis database: ``open_session_sandbox`` creates
``<database>_test_<tag>`` and claims a Redis logical database, the conftest points ``ADP_PG_DSN`` and
``ADP_REDIS_URL`` there for the whole session (every child process inherits them), the ``pg`` and
``redis_client`` fixtures empty only that database and that Redis database, and the session drops both.
"""

from __future__ import annotations

import os
import uuid

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from adplatform import names
from adplatform.config import Config
from adplatform.sandbox import (
    Sandbox,
    close_sandbox,
    flush_redis_db,
    new_suffix,
    open_sandbox,
    truncate_sandbox,
)

#: Every topic name a fresh config could have created on Kafka; the session deletes them when it ends.
CREATED_TOPICS: set[str] = set()

#: Where a session without its own stores points: nowhere (a service test fails; nothing reaches the
#: user's data, not even through a child process that reads the environment).
NOWHERE = {
    "ADP_PG_DSN": "postgresql://postgres@no-test-sandbox.invalid:1/none",
    "ADP_REDIS_URL": "redis://no-test-sandbox.invalid:1/0",
}


def fresh_config(base: Config, *, kafka: bool) -> Config:
    """``base`` with a fresh topic and consumer-group prefix and its own archive directory; with
    ``kafka``, its topics are deleted when the session ends."""
    tag = f"t{uuid.uuid4().hex[:10]}-"
    config = base.namespaced(tag, archive_dir=base.stack_dir / "test-archive" / tag.rstrip("-"))
    if kafka:
        CREATED_TOPICS.update(config.topics.all())
    return config


async def open_session_sandbox(base: Config) -> Sandbox:
    """The session's set-up: its own database (migrated) and Redis logical database beside ``base``'s."""
    return await open_sandbox(base, new_suffix("test"))


async def clean_test_tables(conn: asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy) -> None:
    """A test's fresh start in PostgreSQL: every table of the session's database emptied (refused on a
    database the session did not create)."""
    await truncate_sandbox(conn)


async def clean_test_redis(sandbox: Sandbox) -> None:
    """A test's fresh start in Redis: the session's claimed database flushed, the claim kept."""
    if not await flush_redis_db(sandbox.config.redis_url, sandbox.owner, keep_claim=True):
        raise RuntimeError(f"{sandbox.redis_label} is no longer this session's")


async def close_session_sandbox(sandbox: Sandbox) -> None:
    """The session's tear-down: its database dropped, its Redis database flushed and released."""
    await close_sandbox(sandbox)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that opens a sandbox of its own (a bench, the demo): on the
    cluster stack it gets a namespace of its own beside the session's (a process has one, and the
    session's is claimed by the session)."""
    env = {**os.environ, **extra}
    namespace = env.get(names.NAMESPACE_ENV)
    if namespace:
        env[names.NAMESPACE_ENV] = f"{namespace}-{uuid.uuid4().hex[:6]}"
    return env
