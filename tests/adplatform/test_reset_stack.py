"""``adplatform reset`` empties the campaign data but keeps the admin service's API keys (run on the test
session's own database: only the PostgreSQL part, since a FLUSHDB would drop the session's Redis claim)."""

from __future__ import annotations

import asyncpg
import pytest

from admin.keys import authenticate, create_key
from admin.store import insert_audit
from adplatform.reset import empty_tables

pytestmark = [pytest.mark.postgres]


async def test_reset_keeps_api_keys_and_empties_the_rest(pg: asyncpg.Pool) -> None:
    key = await create_key(pg, "ops", "write")
    await insert_audit(
        pg, author="ops", action="create", campaign_id="c1", partition=0, offset=0, instruction=b"{}"
    )
    await pg.execute(
        'INSERT INTO online_ads.dlq_replays (dlq_partition, dlq_offset, partition, "offset", author)'
        " VALUES (0, 0, 0, 1, 'ops')"
    )
    stamp = "SELECT version FROM online_ads.table_versions WHERE name = 'user'"
    before = await pg.fetchval(stamp)
    emptied = await empty_tables(pg)
    # The users' stamp is kept and moved on, so every ad server reloads the emptied profiles.
    assert "table_versions" not in emptied and await pg.fetchval(stamp) not in (None, before)
    assert "api_keys" not in emptied and {"ads", "audit", "dlq_replays", "spend_events"} <= set(emptied)
    for table in emptied:
        assert await pg.fetchval(f'SELECT count(*) FROM online_ads."{table}"') == 0  # noqa: S608  # catalog names
    principal = await authenticate(pg, key)
    assert principal is not None and principal.name == "ops" and principal.role == "write"
