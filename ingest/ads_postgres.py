"""Batched upsert of campaign states into ``online_ads.ads``: COPY into a staging table, then one upsert.

The upsert keeps the newest ``version`` per campaign, so replaying a batch after a crash changes nothing.
``write`` returns the campaigns that had no row before: only those are known to have spent nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import asyncpg

from index.campaign import Campaign, PacingMode
from index.fcap import format_cap
from index.money import cpm_units_to_decimal, micros_to_decimal

COLUMNS = (
    "campaign_id", "version", "status", "action", "text", "category", "keywords", "target_gender",
    "target_age_start", "target_age_end", "target_city", "target_state", "target_country",
    "target_income_bucket", "target_device", "cpc", "cpa", "cpm", "budget", "slot_budget",
    "flight_start", "flight_end", "frequency_cap", "pacing_mode",
)  # fmt: skip

_STAGE = "ads_stage"
_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "  # sql: constant identifiers
    "(LIKE online_ads.ads INCLUDING DEFAULTS EXCLUDING GENERATED) ON COMMIT DELETE ROWS"
)
_COLS = ", ".join(COLUMNS)
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "campaign_id")
# Identifiers only, all from the constants above; the values travel by COPY, never in the text.
_UPSERT = (
    f"INSERT INTO online_ads.ads ({_COLS}) SELECT {_COLS} FROM {_STAGE} "  # noqa: S608
    f"ON CONFLICT (campaign_id) DO UPDATE SET {_UPDATES}, updated_at = now() "
    "WHERE online_ads.ads.version < EXCLUDED.version"
)


# Same transaction, before the upsert: the staged campaigns PostgreSQL has never seen.
_NEW = (
    f"SELECT s.campaign_id FROM {_STAGE} s "  # noqa: S608  (constant identifiers, as above)
    "WHERE NOT EXISTS (SELECT 1 FROM online_ads.ads a WHERE a.campaign_id = s.campaign_id)"
)


def _ts(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def ad_record(c: Campaign) -> tuple[object, ...]:
    return (
        c.campaign_id, c.version, c.status, c.action, c.text, c.category, c.keywords, c.target_gender,
        c.target_age_start, c.target_age_end, c.target_city, c.target_state, c.target_country,
        c.target_income_bucket, c.target_device, micros_to_decimal(c.cpc_micros),
        micros_to_decimal(c.cpa_micros), cpm_units_to_decimal(c.cpm_units),
        micros_to_decimal(c.budget_micros), micros_to_decimal(c.slot_budget_micros),
        _ts(c.flight_start_s), _ts(c.flight_end_s), format_cap(c.frequency_cap) or None,
        c.pacing_mode,
    )  # fmt: skip


class AdsSink:
    """Writes batches of campaign states to PostgreSQL in one transaction each."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def pacing_modes(self, campaign_ids: Collection[str]) -> dict[str, PacingMode]:
        """The stored pacing mode of those of ``campaign_ids`` PostgreSQL holds."""
        rows = await self._pool.fetch(
            "SELECT campaign_id, pacing_mode FROM online_ads.ads WHERE campaign_id = ANY($1::text[])",
            list(campaign_ids),
        )
        return {r["campaign_id"]: r["pacing_mode"] for r in rows}

    async def write(self, campaigns: Sequence[Campaign]) -> set[str]:
        """Upsert the states; returns the ids of the campaigns that had no row before this write."""
        if not campaigns:
            return set()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CREATE_STAGE)
            await conn.copy_records_to_table(
                _STAGE, records=[ad_record(c) for c in campaigns], columns=COLUMNS
            )
            new = {r["campaign_id"] for r in await conn.fetch(_NEW)}
            await conn.execute(_UPSERT)
        return new
