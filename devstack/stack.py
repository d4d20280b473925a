"""The local stack: PostgreSQL, Redis and Kafka (KRaft) as local processes under ``.stack/``, no Docker.

``up`` installs what is missing (Debian/Ubuntu as root), fetches the Kafka broker and Spark connector jars
with Maven once, starts each service on its private port, waits until each answers a real request, then
creates the database, applies migrations and creates the topics. Every step is idempotent. ``down`` stops
the services by the PIDs it recorded, checked against /proc first (``pids``). Logs go to ``.stack/logs/``.

This module orchestrates (up, down, status, health, logs); each concern has its own module: ``paths``
(folders, ports), ``install`` (apt-get, Maven jars), ``pids``, ``postgres``, ``redis``, ``kafka``. The
names callers use (``stack.Paths``, ``stack.PG_PORT``, ``stack.start_redis``…) are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from adplatform.config import Config
from adplatform.postgres import quote_ident
from devstack.install import ensure_installed, fetch_jars, fetch_nginx
from devstack.kafka import new_cluster_id, start_kafka
from devstack.paths import KAFKA_CONTROLLER_PORT, KAFKA_PORT, PG_PORT, REDIS_PORT, Paths, StackError, say
from devstack.pids import read_pid, running, stop_pid
from devstack.postgres import admin_dsn, pg_ok, prepare_database, start_postgres, stop_postgres
from devstack.prometheus import PROMETHEUS_PORT, start_prometheus, stop_prometheus
from devstack.prometheus import ready as prometheus_ready
from devstack.prometheus import running as running_prometheus
from devstack.redis import REDIS_DIAGNOSTICS, REDIS_PERSISTENCE, redis_ok, start_redis

__all__ = [
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_PORT",
    "PG_PORT",
    "REDIS_DIAGNOSTICS",
    "REDIS_PERSISTENCE",
    "REDIS_PORT",
    "SERVICES",
    "Paths",
    "StackError",
    "down",
    "ensure_installed",
    "fetch_jars",
    "fetch_nginx",
    "health",
    "log_files",
    "new_cluster_id",
    "quote_ident",
    "read_pid",
    "start_kafka",
    "start_postgres",
    "start_redis",
    "status",
    "stop_service",
    "up",
]

SERVICES = ("kafka", "redis", "postgres")


async def _health(config: Config) -> dict[str, bool]:
    from adplatform.kafka import kafka_alive

    # While a broker starts, aiokafka logs every refused connection; the health answer says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    pg, rd, kf = await asyncio.gather(
        pg_ok(admin_dsn(config)), redis_ok(config.redis_url), kafka_alive(config.kafka_bootstrap)
    )
    return {"postgres": pg, "redis": rd, "kafka": kf}


def health(config: Config) -> dict[str, bool]:
    return asyncio.run(_health(config))


async def _prepare(config: Config) -> None:
    """Create the database, apply migrations, create topics."""
    from adplatform.kafka import ensure_topics

    await prepare_database(config)
    created = await ensure_topics(config)
    if created:
        say(f"created topics: {', '.join(created)}")


def up(config: Config, *, with_prometheus: bool = False) -> None:
    """Install, fetch, start, wait, prepare; with ``with_prometheus``, also Debian's Prometheus scraping
    every service (``devstack.prometheus``, :19090). Idempotent."""
    paths = Paths(config.stack_dir)
    for d in (paths.logs, paths.run):
        d.mkdir(parents=True, exist_ok=True)
    ensure_installed()
    fetch_jars(paths)
    fetch_nginx(paths)
    start_postgres(paths)
    start_redis(paths)
    start_kafka(paths)
    deadline = time.monotonic() + 120
    state = health(config)
    while not all(state.values()):
        if time.monotonic() > deadline:
            down_ = [k for k, ok in state.items() if not ok]
            raise StackError(f"not answering after 120s: {', '.join(down_)}; see {paths.logs}")
        if read_pid(paths, "kafka") is None:
            raise StackError(f"Kafka exited during start; see {paths.logs / 'kafka.log'}")
        time.sleep(0.5)
        state = health(config)
    asyncio.run(_prepare(config))
    say(f"up: postgres :{PG_PORT}, redis :{REDIS_PORT}, kafka :{KAFKA_PORT}")
    if with_prometheus:
        start_prometheus(paths, config)


def stop_service(config: Config, service: str) -> None:
    """Stop one service by the PID the stack recorded, once /proc confirms it is still that process
    (postgres via pg_ctl for a clean shutdown); a stale PID file is reported and nothing is signalled."""
    paths = Paths(config.stack_dir)
    record = running(paths, service)
    if record is None:
        return
    if service == "postgres":
        stop_postgres(paths)
        return
    stop_pid(paths, record, service)
    paths.pid_file(service).unlink(missing_ok=True)


def down(config: Config) -> None:
    if stop_prometheus(Paths(config.stack_dir)):
        say("stopped prometheus")
    for service in SERVICES:
        stop_service(config, service)
        say(f"stopped {service}")


def status(config: Config) -> list[tuple[str, int, int | None, bool]]:
    """(service, port, pid, healthy) for each service."""
    paths = Paths(config.stack_dir)
    state = health(config)
    ports = {"postgres": PG_PORT, "redis": REDIS_PORT, "kafka": KAFKA_PORT}
    rows = [(s, ports[s], read_pid(paths, s), state[s]) for s in ("postgres", "redis", "kafka")]
    prometheus = running_prometheus(paths)
    if prometheus is not None:  # only when started (--with-prometheus): it is optional
        rows.append(("prometheus", PROMETHEUS_PORT, prometheus.pid, prometheus_ready(PROMETHEUS_PORT)))
    return rows


def log_files(config: Config) -> dict[str, Path]:
    logs = Paths(config.stack_dir).logs
    return {
        "postgres": Paths(config.stack_dir).pg_log,
        "redis": logs / "redis.log",
        "kafka": logs / "kafka.log",
    }
