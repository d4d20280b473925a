"""``adplatform run`` on the real stack: a SIGKILLed service comes back and works; SIGTERM stops them all
in order."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from adplatform.config import Config
from loadtest.workers import each_worker, wait_workers_ready
from tests.adserver.serving import InstructionSender, campaign_row, eventually
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

WORKERS = 2
STARTED = re.compile(r"^run\s+\| (\S+) started \(pid (\d+)(?:, restart (\d+))?\)", re.M)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Running:
    """A running ``adplatform run``: its process, its log (the one stream) and the ad server's URL."""

    proc: asyncio.subprocess.Process
    log: Path
    url: str
    admin_url: str

    def started(self) -> list[tuple[str, int, int]]:
        """(service, pid, restart) of every start so far."""
        text = self.log.read_text(errors="replace")
        return [(m[1], int(m[2]), int(m[3] or 0)) for m in STARTED.finditer(text)]

    def pid(self, service: str, restart: int = 0) -> int | None:
        return next((p for s, p, r in self.started() if s == service and r == restart), None)


@pytest.fixture
async def running(topics: Config, tmp_path: Path) -> AsyncIterator[Running]:
    port, admin_port = free_port(), free_port()
    env = {**os.environ, "ADP_TOPIC_PREFIX": topics.topics.prefix, "ADP_GROUP_PREFIX": topics.group_prefix}
    cmd = [sys.executable, "-m", "adplatform.cli", "run", "manager", "ledger", "adserver", "admin"]
    cmd += ["--workers", str(WORKERS), "--port", str(port), "--admin-port", str(admin_port)]
    log = tmp_path / "run.log"  # kept for a failing test's reader
    out = await asyncio.to_thread(open, log, "wb")
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Running(proc, log, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 90)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        out.close()


async def _in_postgres(pg: asyncpg.Pool, campaign_id: str) -> bool:
    async with pg.acquire() as conn:
        return bool(
            await conn.fetchval("SELECT count(*) FROM online_ads.ads WHERE campaign_id = $1", campaign_id)
        )


async def test_a_killed_service_restarts_and_works_and_sigterm_stops_all(
    running: Running, topics: Config, pg: asyncpg.Pool
) -> None:
    first, second = f"run-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    async with InstructionSender(topics) as sender:
        await sender.send(campaign_row(first))
        await eventually(lambda: _in_postgres(pg, first), timeout_s=60, poll_s=0.2)
        await wait_workers_ready(running.url, WORKERS, index_size=1)
        before = await each_worker(running.url, WORKERS)
        assert before is not None
        manager = running.pid("manager")
        assert manager is not None
        assert {s for s, _, _ in running.started()} == {"manager", "ledger", "adserver", "admin"}

        # The manager, SIGKILLed, comes back (restart 1) and processes an instruction sent after the kill.
        os.kill(manager, signal.SIGKILL)
        await eventually(lambda: _true(running.pid("manager", 1) is not None), timeout_s=20, poll_s=0.1)
        await sender.send(campaign_row(second))
        await eventually(lambda: _in_postgres(pg, second), timeout_s=60, poll_s=0.2)

    # The ad server's main process, SIGKILLed: its workers go with it, a new one serves both campaigns.
    adserver = running.pid("adserver")
    assert adserver is not None
    os.kill(adserver, signal.SIGKILL)
    await eventually(lambda: _true(running.pid("adserver", 1) is not None), timeout_s=20, poll_s=0.1)
    await wait_workers_ready(running.url, WORKERS, index_size=2, timeout_s=120)
    after = await each_worker(running.url, WORKERS)
    assert after is not None and not set(after) & set(before)  # new workers
    log = running.log.read_text()
    assert re.search(r"manager killed by SIGKILL after \S+s; restart 1 in 1s", log), log[-3000:]
    assert re.search(r"adserver killed by SIGKILL after \S+s; restart 1 in 1s", log), log[-3000:]
    assert running.pid("ledger", 1) is None  # the others never restarted

    # Every line of a service carries its name: the lines of both ad-server workers among them.
    assert (
        len(
            set(
                re.findall(
                    r"^adserver +\| \S+ \S+ (\d+) INFO (?:adserver.sync|adplatform.index_feed)", log, re.M
                )
            )
        )
        >= 2 * WORKERS
    )

    # The admin API runs beside them (its own process, off the serving path).
    await eventually(lambda: _healthy(f"{running.admin_url}/healthz"), timeout_s=60, poll_s=0.2)

    # SIGTERM: all stopped in order (the ad server first), exit 0, no process left.
    running.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.proc.wait(), 90) == 0
    log = running.log.read_text()
    stops = re.findall(r"^run\s+\| stopping (\S+)", log, re.M)
    assert stops == ["adserver", "admin", "manager", "ledger"], log[-3000:]
    pids = [pid for _, pid, _ in running.started()] + list(before) + list(after)
    assert not [pid for pid in pids if _alive(pid)]


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code == 200
    except httpx.TransportError:
        return False  # not listening yet


async def _true(value: bool) -> bool:
    return value
