"""The archive's side of the books, for the demo and the fault scenarios: what the JSON archive holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from adplatform.config import Config
from archive.layout import ArchiveLayout
from archive.reader import iter_lines, read_lock, snapshot


@dataclass(frozen=True)
class ArchiveBooks:
    events: int
    #: Records whose event_id was already seen: a duplicate in the archive.
    duplicates: int
    spend_micros: int
    #: Committed files that are gone: lost outside the platform's control.
    missing_files: int


def archive_books(archive_dir: Path) -> ArchiveBooks:
    """Count the committed archive (compacted and not), each event once by ``event_id``."""
    layout = ArchiveLayout(archive_dir)
    counts: dict[str, int] = {}
    spend: dict[str, int] = {}
    with read_lock(layout):
        snap = snapshot(layout)
        for line in iter_lines(snap.files):
            event = orjson.loads(line)
            event_id = event["event_id"]
            counts[event_id] = counts.get(event_id, 0) + 1
            spend[event_id] = int(event["expenditure_micros"])
    return ArchiveBooks(
        events=len(counts),
        duplicates=sum(n - 1 for n in counts.values()),
        spend_micros=sum(spend.values()),
        missing_files=len(snap.missing),
    )


async def reset_books(config: Config) -> None:
    """Empty the platform's tables and Redis: a demo or a fault scenario starts from its own data only."""
    conn = await asyncpg.connect(config.pg_dsn)
    try:
        await conn.execute(
            'TRUNCATE online_ads.ads, online_ads.served_ads, online_ads."user", online_ads.spend_events,'
            " online_ads.consumer_offsets"
        )
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(config.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
