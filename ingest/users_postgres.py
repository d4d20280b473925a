"""Writes user profiles into ``online_ads."user"`` in one COPY + upsert (idempotent for a seed)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ingest.generator import User

COLUMNS = ("user_id", "name", "age", "gender", "income_bucket", "device_type", "city", "state", "country",
           "email", "created_at")  # fmt: skip

_COLS = ", ".join(COLUMNS)
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "user_id")
# Identifiers from the constant COLUMNS only; the values travel by COPY.
_UPSERT = (
    f'INSERT INTO online_ads."user" ({_COLS}) SELECT {_COLS} FROM users_stage '  # noqa: S608
    f"ON CONFLICT (user_id) DO UPDATE SET {_UPDATES}"
)


async def write_users(dsn: str, users: Sequence[User]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                'CREATE TEMP TABLE users_stage (LIKE online_ads."user" INCLUDING DEFAULTS) ON COMMIT DROP'
            )
            await conn.copy_records_to_table(
                "users_stage", records=[tuple(getattr(u, c) for c in COLUMNS) for u in users], columns=COLUMNS
            )
            await conn.execute(_UPSERT)
    finally:
        await conn.close()
    return len(users)
