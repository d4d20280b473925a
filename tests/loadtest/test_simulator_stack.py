"""The user simulator, its legacy command line and the locust scenario against a real running server."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config
from adplatform.kafka import read_to_end
from adplatform.wire import feedback_decoder
from budget.budget_redis import BudgetStore
from budget.ledger import run_ledger
from ingest.generator import generate_users
from ingest.served_writer import run_served_writer
from ingest.users_postgres import write_users
from loadtest.simulator import Simulator, load_users
from loadtest.workers import wait_workers_ready
from tests.adserver.serving import campaign_row, ingest
from tests.adserver.test_workers_stack import WORKERS, server  # noqa: F401  # the 2-worker server fixture

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


async def test_simulator_figures_agree_with_the_books(
    server: str,  # noqa: F811
    topics: Config,
    pg: asyncpg.Pool,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    rows = [campaign_row(f"sim{i}", cpc=f"0.00{i % 9 + 1}0", budget="2") for i in range(30)]
    rows.append(campaign_row("mumbai-only", city="Mumbai", state="Maharashtra", cpc="0.0095"))
    await ingest(topics, rows, tmp_path)
    await write_users(topics.pg_dsn, generate_users(200, 5))
    users = await load_users(topics.pg_dsn)

    await wait_workers_ready(server, WORKERS, timeout_s=60, index_size=len(rows))
    sim = Simulator(users, ad_url=server, rate=150, concurrency=16, seed=3)
    summary = await sim.run(4)
    assert summary.requests > 100 and summary.errors == 0, summary.error_kinds
    assert 0 < summary.fill_rate <= 1 and summary.feedback_ok == summary.served
    assert 0 < summary.ctr < 1

    await run_served_writer(topics, until_idle=True, timeout_s=60)
    served_rows = await pg.fetchval("SELECT count(*) FROM online_ads.served_ads")
    assert served_rows == summary.served
    await run_ledger(topics, until_idle=True, timeout_s=60)
    events = {}
    for record in await read_to_end(topics.kafka_bootstrap, topics.topics.feedback):
        event = feedback_decoder.decode(record.value or b"")
        events[event.event_id] = event.expenditure_micros
    assert set(summary.acked_event_ids) == set(events)
    ledger = await pg.fetchval("SELECT coalesce(sum(amount), 0) * 1000000 FROM online_ads.spend_events")
    redis_spent = sum((await BudgetStore(redis_client, slot_s=topics.slot_s).spent_all()).values())
    assert int(ledger) == redis_spent == sum(events.values()) > 0


async def test_legacy_command_line_takes_the_original_nine_arguments(
    topics: Config,
    server: str,  # noqa: F811
    pg: asyncpg.Pool,
) -> None:
    port = server.rsplit(":", 1)[1]
    # The session's own database (never the user's `adplatform`), by the original platform's nine arguments.
    dsn = urlsplit(topics.pg_dsn)
    db_host, db_name = f"{dsn.hostname}:{dsn.port}", dsn.path.lstrip("/")
    args = [db_host, dsn.username or "postgres", "", db_name, "http", "127.0.0.1", port, "127.0.0.1", port]
    env = dict(os.environ, ADP_TOPIC_PREFIX=topics.topics.prefix, ADP_GROUP_PREFIX=topics.group_prefix)
    cmd = [sys.executable, "-m", "adplatform.cli", "simulate-legacy", *args, "--duration", "1", "--rate", "5"]
    # No users in the table yet: the simulator says so clearly instead of running.
    code, out, err = await _run(cmd, env)
    assert code == 1 and 'online_ads."user"' in err, err
    await write_users(topics.pg_dsn, generate_users(50, 9))
    code, out, err = await _run(cmd, env)
    assert code == 0, err
    assert "requests" in out and "fill rate" in out
    code, out, err = await _run([*cmd[:10], "not-a-port", *cmd[11:]], env)
    assert code == 2 and "AD_PORT" in err, err


async def _run(cmd: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_locust_scenario_runs_headless_and_bounded(
    server: str,  # noqa: F811
    topics: Config,
    pg: asyncpg.Pool,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    await ingest(topics, [campaign_row("locust", cpc="0.0010", budget="100")], tmp_path)
    await wait_workers_ready(server, WORKERS, timeout_s=60, index_size=1)
    cmd = [
        sys.executable, "-m", "locust", "--config", str(ROOT / "loadtest" / "locust.conf"), "--host", server,
        "--run-time", "3s", "--users", "4", "--spawn-rate", "4", "--csv", str(tmp_path / "run"),
    ]  # fmt: skip
    code, _, err = await _run(cmd, dict(os.environ))
    assert code == 0, err[-2000:]
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    for name in ("/ad/user/[id]/serve", "/ad/[request_id]/feedback"):
        assert int(rows[name]["Request Count"]) > 0 and int(rows[name]["Failure Count"]) == 0, rows[name]
