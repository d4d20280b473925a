"""The original platform's clients read ``online_ads.user`` by its own column names, unchanged."""

from __future__ import annotations

import asyncpg
import pytest

from adplatform.config import Config
from ingest.generator import generate_users
from ingest.users_postgres import write_users

pytestmark = pytest.mark.postgres

#: The original platform's table, column by column (``income_bukcet`` is their spelling).
ORIGINAL_COLUMNS = (
    "id", "age", "gender", "internet_usage", "income_bukcet", "user_agent_string", "device_type",
    "websites", "movies", "music", "program", "books", "negatives", "positives",
)  # fmt: skip


async def test_the_original_query_reads_our_users(pg: asyncpg.Pool, base_config: Config) -> None:
    users = generate_users(50, 3)
    await write_users(base_config.pg_dsn, users)
    rows = await pg.fetch("SELECT id, device_type, age FROM online_ads.user")
    assert {(r["id"], r["device_type"], r["age"]) for r in rows} == {
        (u.user_id, u.device_type, u.age) for u in users
    }
    one = users[0]
    row = await pg.fetchrow("SELECT * FROM online_ads.user WHERE id = $1", one.user_id)
    assert row is not None and row["income_bukcet"] == one.income_bucket


async def test_the_table_has_every_original_column(pg: asyncpg.Pool) -> None:
    columns = {
        r["column_name"]
        for r in await pg.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'online_ads' AND table_name = 'user'"
        )
    }
    assert set(ORIGINAL_COLUMNS) <= columns
    selected = ", ".join(ORIGINAL_COLUMNS)
    await pg.fetch(f"SELECT {selected} FROM online_ads.user")  # noqa: S608  (constant column names)


async def test_our_upsert_still_writes_and_rewrites(pg: asyncpg.Pool, base_config: Config) -> None:
    users = generate_users(5, 4)
    await write_users(base_config.pg_dsn, users)
    await write_users(base_config.pg_dsn, users)  # the upsert path: generated columns are never written
    assert await pg.fetchval("SELECT count(*) FROM online_ads.user WHERE id = user_id") == 5
