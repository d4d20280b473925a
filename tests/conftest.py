"""Service fixtures and the unit/integration wall.

Tests marked ``postgres``, ``redis``, ``kafka`` or ``spark`` get the real local stack (``make test`` starts
it), in stores of their own: a session that runs any of them creates its own database and claims its own
Redis logical database (``tests.fresh``), points ``ADP_PG_DSN`` and ``ADP_REDIS_URL`` there, and drops them
at the end; a session without them (or whose stores could not be made) points those variables nowhere.
The user's database and Redis database are never emptied. Unmarked tests are blocked from connecting to
the stack's ports, so the split is mechanical. With ``ADP_REQUIRE_SERVICES=1`` (CI), a service test that
skips is reported as a failure.

``ADP_TEST_TOPOLOGY=cluster`` (``make test-cluster``) runs the same tests on the cluster stack (``adplatform
stack up --topology cluster``): Redis Cluster, the 3 Kafka brokers (topics with replication 3) and a
replica's acknowledgement per debit, with the single-node stack's PostgreSQL. The session's Redis stores are
then a key namespace (``ADP_REDIS_NAMESPACE``, chosen in ``tests/__init__.py`` before any key name is
built), emptied per test on every master; tests marked ``cluster`` run too, and tests marked
``single_node`` (they need a Redis logical database or the single-node processes) are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import pytest
from redis.exceptions import RedisError

from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, wait_for_topics
from adplatform.redis_client import RedisClient, open_redis
from adplatform.sandbox import Sandbox, SandboxError
from devstack import cluster, kafka_cluster
from devstack.stack import KAFKA_CONTROLLER_PORT, KAFKA_PORT, PG_PORT, REDIS_PORT
from tests.fresh import (
    CREATED_TOPICS,
    NOWHERE,
    clean_test_redis,
    clean_test_tables,
    close_session_sandbox,
    fresh_config,
    open_session_sandbox,
)

T = TypeVar("T")

#: The tests' own Redis Cluster (``redis_cluster`` tests).
pytest_plugins = ["tests.redis_cluster", "tests.hangdump"]

SERVICE_MARKERS = ("postgres", "redis", "kafka", "spark")
SERVICE_PORTS = {
    PG_PORT, REDIS_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT,
    *cluster.REDIS_CLUSTER_PORTS, *kafka_cluster.KAFKA_CLUSTER_PORTS,
}  # fmt: skip
#: ``ADP_TEST_TOPOLOGY=cluster``: the session runs on the cluster stack (see the module's docstring).
CLUSTER = os.environ.get("ADP_TEST_TOPOLOGY", "single") == "cluster"
REQUIRE_SERVICES = os.environ.get("ADP_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


class ServiceAccessError(RuntimeError):
    pass


def _uses_services(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) for m in SERVICE_MARKERS)


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own in another thread, leaving pytest-asyncio's loop alone."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


#: Why this session has no stores of its own (service tests then fail with it).
_NO_SANDBOX: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def session_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox | None]:
    """The session's own database and Redis database, for the whole session and every child process."""
    with pytest.MonkeyPatch.context() as mp:
        sandbox: Sandbox | None = None
        if any(_uses_services(item) for item in request.session.items):
            try:
                sandbox = _in_thread(open_session_sandbox(_session_base()))
            except (OSError, asyncpg.PostgresError, RedisError, SandboxError) as exc:
                _NO_SANDBOX.append(f"the test session's own database could not be created: {exc!r}")
        else:
            _NO_SANDBOX.append("no service test was collected")
        env = sandbox.env if sandbox is not None else NOWHERE
        if sandbox is not None and CLUSTER:
            env = {**cluster.cluster_env(), **env}
        for name, value in env.items():
            mp.setenv(name, value)
        try:
            yield sandbox
        finally:
            if sandbox is not None:
                _in_thread(close_session_sandbox(sandbox))


def _session_base() -> Config:
    """The environment's config, pointed at the cluster stack on ``ADP_TEST_TOPOLOGY=cluster``."""
    base = load_config()
    if not CLUSTER:
        return base
    from adplatform import names

    if not names.NAMESPACE:  # tests/__init__.py sets it before adplatform.names is imported
        raise SandboxError("ADP_TEST_TOPOLOGY=cluster but adplatform.names was imported without a namespace")
    return cluster.cluster_config(base)


@pytest.fixture(autouse=True)
def _service_wall(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unmarked tests may not reach PostgreSQL, Redis or Kafka; marked ones need the session's stores."""
    if _uses_services(request.node):
        if _NO_SANDBOX:
            pytest.fail(_NO_SANDBOX[0])
        return
    if request.node.get_closest_marker("cluster") is not None:
        return  # a test of the cluster stack itself talks to its nodes (and needs no session stores)
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
def base_config(session_sandbox: Sandbox | None) -> Config:
    """The environment's config: the session's own database and Redis database (or nowhere)."""
    return load_config()


@pytest.fixture
def config(base_config: Config, request: pytest.FixtureRequest) -> Config:
    """The stack's config with a fresh topic and consumer-group prefix for this test."""
    return fresh_config(base_config, kafka=request.node.get_closest_marker("kafka") is not None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``exclusive`` needs the stack to itself (it stops one of its services, or plays stores
    that another run's sandbox would claim or prune): on a pytest-xdist worker it refuses to run."""
    if item.get_closest_marker("exclusive") is not None and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail(
            "marked exclusive (it needs the stack to itself): run it without -n; `make test` runs "
            "the rest on workers (`-m 'not exclusive'`), then `pytest -m exclusive`",
            pytrace=False,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cluster`` need the cluster stack and minutes: they run only when the marker
    expression names them (``-m cluster``) or the session runs on the cluster stack (``make
    test-cluster``), where tests marked ``single_node`` are skipped. On a pytest-xdist worker the files
    marked ``slow`` come first."""
    if CLUSTER:
        for item in items:
            marker = item.get_closest_marker("single_node")
            if marker is not None:
                reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
                item.add_marker(pytest.mark.skip(reason=f"single node only: {reason}"))
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Files marked ``slow`` first: ``--dist loadfile`` hands out files in this order (the same on every
        # worker), and one of minutes handed out last would leave the other worker idle meanwhile.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if re.search(r"(?<![\w])cluster(?![\w])", str(config.getoption("markexpr") or "")):
        return
    kept = [item for item in items if item.get_closest_marker("cluster") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the session's topics: a run leaves hundreds, and a dev broker that kept every run's would
    hold tens of thousands of partitions (slower to start and to answer metadata, gigabytes of files)."""
    if not CREATED_TOPICS:
        return
    kafka = cluster.cluster_config(load_config()) if CLUSTER else load_config()
    try:
        asyncio.run(asyncio.wait_for(delete_topics(kafka, sorted(CREATED_TOPICS)), 120))
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


@pytest.fixture
async def pg(pg_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The pool, with every online_ads table of the session's database emptied before the test."""
    async with pg_pool.acquire() as conn:
        await clean_test_tables(conn)
    yield pg_pool


@pytest.fixture
async def redis_client(base_config: Config, session_sandbox: Sandbox | None) -> AsyncIterator[RedisClient]:
    """A Redis client on the session's Redis database (on the cluster stack: a cluster client, the
    session's namespace emptied on every master), flushed."""
    assert session_sandbox is not None
    await clean_test_redis(session_sandbox)
    client = open_redis(base_config.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def repo_root() -> Iterator[str]:
    yield os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
