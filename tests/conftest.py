"""Service fixtures and the unit/integration wall.

Tests marked ``postgres``, ``redis``, ``kafka`` or ``spark`` get the real local stack (``make test`` starts
it). Unmarked tests are blocked from connecting to the stack's ports, so the split is mechanical. With
``ADP_REQUIRE_SERVICES=1`` (CI), a service test that skips is reported as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, wait_for_topics
from devstack.stack import KAFKA_CONTROLLER_PORT, KAFKA_PORT, PG_PORT, REDIS_PORT
from tests.fresh import CREATED_TOPICS, fresh_config

SERVICE_MARKERS = ("postgres", "redis", "kafka", "spark")
SERVICE_PORTS = {PG_PORT, REDIS_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT}
REQUIRE_SERVICES = os.environ.get("ADP_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


class ServiceAccessError(RuntimeError):
    pass


def _uses_services(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) for m in SERVICE_MARKERS)


@pytest.fixture(autouse=True)
def _service_wall(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unmarked tests may not reach PostgreSQL, Redis or Kafka."""
    if _uses_services(request.node):
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in SERVICE_PORTS:
            raise ServiceAccessError(
                f"unmarked test tried to connect to {address}; mark it postgres/redis/kafka/spark"
            )

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped and _uses_services(item):
        report.outcome = "failed"
        report.longrepr = f"service test skipped in CI (ADP_REQUIRE_SERVICES=1): {report.longrepr}"


@pytest.fixture(scope="session")
def base_config() -> Config:
    return load_config()


@pytest.fixture
def config(base_config: Config, request: pytest.FixtureRequest) -> Config:
    """The stack's config with a fresh topic and consumer-group prefix for this test."""
    return fresh_config(base_config, kafka=request.node.get_closest_marker("kafka") is not None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the session's topics: a run leaves hundreds, and a dev broker that kept every run's would
    hold tens of thousands of partitions (slower to start and to answer metadata, gigabytes of files)."""
    if not CREATED_TOPICS:
        return
    try:
        asyncio.run(asyncio.wait_for(delete_topics(load_config(), sorted(CREATED_TOPICS)), 120))
    except Exception as exc:  # Kafka down or slow: the topics stay, the run's result stands
        logging.getLogger(__name__).warning("test topics not deleted: %r", exc)
    CREATED_TOPICS.clear()


@pytest.fixture
async def topics(config: Config) -> Config:
    """Create this test's fresh topics; yields the config naming them."""
    await ensure_topics(config)
    await wait_for_topics(config, config.topics.all())
    return config


@pytest.fixture(scope="session")
async def pg_pool(base_config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(base_config.pg_dsn, min_size=1, max_size=8, timeout=10)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


TABLES = ("ads", "served_ads", '"user"', "consumer_offsets", "spend_events")


@pytest.fixture
async def pg(pg_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The pool, with every online_ads table emptied before the test."""
    async with pg_pool.acquire() as conn:
        await conn.execute("TRUNCATE " + ", ".join(f"online_ads.{t}" for t in TABLES))
    yield pg_pool


@pytest.fixture
async def redis_client(base_config: Config) -> AsyncIterator[aioredis.Redis]:
    """A Redis client on a flushed database."""
    client = aioredis.Redis.from_url(base_config.redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def repo_root() -> Iterator[str]:
    yield os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
