"""Invariant 7: the demo, chaos, and the test suite's own set-up and tear-down never touch the user's data.

A database and a Redis logical database play the user's default (made for this test, then unmarked so
they look like a user's: no sandbox comment, no claim). A marker campaign goes in through producer →
manager, a charge through a Redis debit and its ``ad-feedback`` event booked by the ledger. Then, with
the environment's default pointing there, every run's set-up and tear-down runs; the marker, its spend,
its Redis budget are unchanged, ``reconcile --check`` is clean, and an unconfirmed ``reset`` is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from adplatform.config import Config, load_config
from adplatform.kafka import ensure_topics, make_producer, wait_for_topics
from adplatform.sandbox import (
    CLAIM_KEY,
    MARKER,
    Sandbox,
    SandboxError,
    close_sandbox,
    new_suffix,
    open_sandbox,
    truncate_sandbox,
    wipe_claimed,
)
from adplatform.wire import encoder
from budget.budget_redis import BudgetStore
from budget.ledger import run_ledger
from index.money import micros_to_decimal
from ingest.generator import generate_campaigns, write_campaigns_csv
from ingest.instruction import NEW
from ingest.manager import run_manager
from ingest.producer import produce_file
from loadtest.chaos import FAST, Rig
from loadtest.demo import close_demo_stores, open_demo_stores
from tests.archive.events import make_event
from tests.fresh import (
    clean_test_redis,
    clean_test_tables,
    close_session_sandbox,
    fresh_config,
    open_session_sandbox,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.single_node(
        reason="plays the user's stores as a Redis logical database and runs the demo's and chaos's "
        "sandboxes inside the session (namespaces on a cluster: tests/adplatform/test_sandbox_cluster.py)"
    ),
    # The user's Redis database is unclaimed and empty for a while: any other run's sandbox could claim it.
    pytest.mark.exclusive,
]

MARK = "isolation-marker"
CHARGE_MICROS = 4_321


@pytest.fixture
async def users_default(base_config: Config) -> AsyncIterator[Sandbox]:
    """A database and Redis database that look like a user's: made here, then stripped of the marks."""
    made = await open_sandbox(base_config, new_suffix("user"))
    admin = await asyncpg.connect(made.base.pg_dsn.rsplit("/", 1)[0] + "/postgres")
    client = aioredis.Redis.from_url(made.config.redis_url)
    try:
        await admin.execute(f'COMMENT ON DATABASE "{made.database}" IS NULL')
        await client.delete(CLAIM_KEY)
        yield made
    finally:
        await admin.execute(f"COMMENT ON DATABASE \"{made.database}\" IS '{MARKER}'")
        await admin.close()
        await client.set(CLAIM_KEY, made.owner)
        await client.aclose()
        await close_sandbox(made)


async def _books(config: Config) -> dict[str, Any]:
    conn = await asyncpg.connect(config.pg_dsn)
    try:
        ad = await conn.fetchrow(
            "SELECT status, budget, spent FROM online_ads.ads WHERE campaign_id = $1", MARK
        )
        events = await conn.fetch(
            "SELECT event_id, amount FROM online_ads.spend_events WHERE campaign_id = $1", MARK
        )
        offsets = await conn.fetchval("SELECT count(*) FROM online_ads.consumer_offsets")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(config.redis_url)
    try:
        budget = await BudgetStore(client, slot_s=config.slot_s).get(MARK)
        keys = await client.dbsize()
    finally:
        await client.aclose()
    return {
        "ad": dict(ad) if ad else None,
        "events": sorted(map(tuple, events)),
        "offsets": offsets,
        "budget": budget,
        "redis_keys": keys,
    }


async def _load_marker(config: Config, tmp_path: Path) -> None:
    """The marker campaign through producer → manager; one click charged as the feedback path does: the
    Redis debit, then its event on ``ad-feedback``, booked by the ledger."""
    await ensure_topics(config)
    await wait_for_topics(config, config.topics.all())
    row = next(r for r in generate_campaigns(30, 5, datetime.now(UTC)) if r["action"] == NEW)
    row.update(campaign_id=MARK, budget="1000")
    path = tmp_path / "marker.csv"
    write_campaigns_csv(path, [row])
    await produce_file(config, path)
    stats = await run_manager(config, until_idle=True, idle_timeout_s=60)
    assert stats.applied == 1 and stats.rejected == 0
    client = aioredis.Redis.from_url(config.redis_url)
    try:
        debit = await BudgetStore(client, slot_s=config.slot_s).debit(
            MARK, f"{MARK}-r1:click", CHARGE_MICROS, now_s=time.time(), dedup_ttl_s=3600
        )
    finally:
        await client.aclose()
    assert debit.charged_micros == CHARGE_MICROS
    event = msgspec.structs.replace(
        make_event(1, "click", int(time.time() * 1000)),
        event_id=f"{MARK}-r1:click",
        campaign_id=MARK,
        expenditure_micros=CHARGE_MICROS,
        expenditure_amount=micros_to_decimal(CHARGE_MICROS),
    )
    producer = make_producer(config)
    await producer.start()
    try:
        await producer.send_and_wait(config.topics.feedback, encoder.encode(event), key=MARK.encode())
    finally:
        await producer.stop()
    await run_ledger(config, until_idle=True, timeout_s=60)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adplatform.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_every_runs_set_up_and_tear_down_leave_the_users_data_alone(
    users_default: Sandbox, base_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fresh_config(users_default.config, kafka=True)
    await _load_marker(config, tmp_path)
    before = await _books(config)
    assert before["ad"]["status"] == "Active" and before["ad"]["spent"] * 1_000_000 == CHARGE_MICROS
    assert before["events"] == [(f"{MARK}-r1:click", micros_to_decimal(CHARGE_MICROS))]
    assert before["budget"]["spent"] == CHARGE_MICROS

    # The environment's default is now the user's: what every run starts from.
    for name, value in users_default.env.items():
        monkeypatch.setenv(name, value)
    default = load_config()
    assert (default.pg_dsn, default.redis_url) == (
        users_default.config.pg_dsn,
        users_default.config.redis_url,
    )

    # The test suite's session set-up, a test's fresh start (pg and redis_client fixtures), tear-down.
    session = await open_session_sandbox(default)
    conn = await asyncpg.connect(session.config.pg_dsn)
    try:
        await clean_test_tables(conn)
    finally:
        await conn.close()
    await clean_test_redis(session)
    await close_session_sandbox(session)
    # The demo's set-up, twice (a second `make demo`), and `make demo-down`.
    await open_demo_stores(default)
    demo = await open_demo_stores(default)
    assert demo.database != users_default.database and demo.redis_db != users_default.redis_db
    assert await close_demo_stores(default) == (True, demo.redis_db)
    # A chaos scenario's set-up and tear-down.
    rig = await Rig.open(default, "isolation", FAST, streaming_archive=False)
    await rig.prepare()  # its campaigns and users land in its own stores
    assert (rig.work_dir / "isolation-campaigns.csv").is_file() and rig.config.archive_dir.is_dir()
    await rig.close()
    assert not rig.work_dir.exists()  # its files too
    # The helpers that empty refuse what no sandbox created.
    conn = await asyncpg.connect(default.pg_dsn)
    client = aioredis.Redis.from_url(default.redis_url)
    try:
        with pytest.raises(SandboxError):
            await truncate_sandbox(conn)
        with pytest.raises(SandboxError):
            await wipe_claimed(client)
    finally:
        await conn.close()
        await client.aclose()

    env = {**os.environ, "ADP_TOPIC_PREFIX": config.topics.prefix, "ADP_GROUP_PREFIX": config.group_prefix}
    refused = _cli(env, "reset")  # no --yes, no terminal
    assert refused.returncode == 2 and "refusing to reset" in refused.stderr, refused.stderr

    assert await _books(config) == before
    check = _cli(env, "reconcile", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
