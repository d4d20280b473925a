"""Batched, idempotent insert of served ads into ``online_ads.served_ads``: COPY into a staging table,
then ``INSERT ... ON CONFLICT (request_id) DO NOTHING``, in one transaction.

The request_id is unique per served ad, so a batch replayed after a crash (at-least-once delivery from
Kafka) inserts nothing twice: exactly-once rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import asyncpg

from adplatform.wire import ServedAd

COLUMNS: Final = (
    "request_id", "campaign_id", "user_id", "served_at", "auction_cpm", "auction_cpc", "auction_cpa",
    "bidders", "device_type", "city", "state", "country", "age", "gender", "income_bucket",
)  # fmt: skip

_STAGE: Final = "served_ads_stage"
_CREATE_STAGE: Final = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "  # sql: constant identifiers
    "(LIKE online_ads.served_ads) ON COMMIT DELETE ROWS"
)
_COLS = ", ".join(COLUMNS)
# Identifiers only, from the constants above; the values travel by COPY, never in the text.
_INSERT: Final = (
    f"INSERT INTO online_ads.served_ads ({_COLS}) SELECT {_COLS} FROM {_STAGE} "  # noqa: S608
    "ON CONFLICT (request_id) DO NOTHING"
)


def served_record(ad: ServedAd) -> tuple[object, ...]:
    return (
        ad.request_id, ad.campaign_id, ad.user_id, datetime.fromtimestamp(ad.served_at_ms / 1000, tz=UTC),
        ad.auction_cpm, ad.auction_cpc, ad.auction_cpa, ad.bidders, ad.device_type, ad.city, ad.state,
        ad.country, ad.age, ad.gender, ad.income_bucket,
    )  # fmt: skip


class ServedAdsSink:
    """Writes batches of served ads in one transaction each; returns how many rows were new."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def write(self, ads: Sequence[ServedAd]) -> int:
        if not ads:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CREATE_STAGE)
            await conn.copy_records_to_table(_STAGE, records=map(served_record, ads), columns=COLUMNS)
            status = await conn.execute(_INSERT)
        # "INSERT 0 <rows>"
        return int(status.rsplit(" ", 1)[-1])
