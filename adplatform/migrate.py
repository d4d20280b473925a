"""Schema migrations: numbered SQL files in ``adplatform/sql``, applied once each, in order, under a lock."""

from __future__ import annotations

import logging
import re
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every process that migrates.
_LOCK_ID = 0x0AD_91A7F


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration file, sorted."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("adplatform").joinpath("sql").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; returns the names applied. Safe to run concurrently."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.adplatform_migrations ("
            " number integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["number"] for row in await conn.fetch("SELECT number FROM public.adplatform_migrations")}
        for number, name, sql in migrations():
            if number in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO public.adplatform_migrations (number, name) VALUES ($1, $2)", number, name
            )
            applied_now.append(name)
            logger.info("applied migration %s", name)
    return applied_now


async def migrate_dsn(dsn: str) -> list[str]:
    """Connect to ``dsn``, apply the migrations it lacks, close; the names applied (the CLI's)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
