"""The stack's Redis on :16379 (AOF persistence, data under ``.stack/redis``) and its health check."""

from __future__ import annotations

import socket
import subprocess
from typing import Final

from devstack.paths import REDIS_PORT, Paths, wait_until
from devstack.pids import read_pid
from devstack.ports import ensure_free

#: Redis persistence, here and in docker-compose.yml (a test keeps them equal). AOF fsynced on every
#: write batch: a restart must not forget a charge (money), and Redis groups the fsyncs of one event-loop
#: turn, so throughput stays high under concurrency. No RDB snapshots: the AOF is the persistence, and
#: the default save points fork a snapshot of the whole data set every minute under load, which on a
#: small machine takes a core for seconds.
REDIS_PERSISTENCE: Final = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
#: Redis's latency monitor on, here and in docker-compose.yml: each second's longest stall of 5 ms or more
#: (an AOF fsync, a slow script) is kept, so the demo and ``bench.feedback_http`` can say how much of
#: feedback's tail was the disk (``adplatform.redis_latency``). It costs a clock read per event.
REDIS_DIAGNOSTICS: Final = ("--latency-monitor-threshold", "5")


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(paths: Paths) -> None:
    if read_pid(paths, "redis") is not None:
        return
    ensure_free(REDIS_PORT, "Redis")
    paths.redis.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(paths.redis),
        *REDIS_PERSISTENCE, *REDIS_DIAGNOSTICS,
        "--daemonize", "yes", "--pidfile", str(paths.pid_file("redis")),
        "--logfile", str(paths.logs / "redis.log"), "--protected-mode", "yes",
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    # Until its data set (the AOF) is loaded, Redis answers LOADING: wait for a real PONG.
    wait_until(lambda: _redis_pong(REDIS_PORT) and read_pid(paths, "redis") is not None, 120, "Redis", paths)


async def redis_ok(url: str) -> bool:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
