"""``bench.profiles_reload`` measures the reload, the unchanged check and the plain reference on the real
PostgreSQL, for every size asked, and the tables' memory."""

from __future__ import annotations

import asyncpg
import pytest

from bench import profiles_reload
from tests.fresh import clean_test_tables

pytestmark = pytest.mark.postgres


async def test_every_arm_is_measured_at_every_size(pg: asyncpg.Pool) -> None:
    try:
        rows = await profiles_reload.run([300, 700], repeats=1)
    finally:
        async with pg.acquire() as conn:
            await clean_test_tables(conn)

    assert [r["users"] for r in rows] == [300, 700]
    for r in rows:
        for arm in ("plain", "reload", "check"):
            assert float(str(r[f"{arm}_cpu_ms"])) >= 0 and float(str(r[f"{arm}_held_ms"])) >= 0
        # The reload shares repeated values; the plain load keeps a copy of each per row.
        assert 0 < int(str(r["reload_bytes"])) < int(str(r["plain_bytes"]))
        assert "check_bytes" not in r  # an unchanged check reads no rows
