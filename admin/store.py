"""What the admin service reads from PostgreSQL: stored campaigns (in the CSV's spelling), delivery counts,
the audit trail and DLQ replays. Every query is parameterised; ``q`` is matched as a literal substring."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from admin import schema
from adplatform.instruction import COLUMNS, CampaignInstruction, format_flight

#: Anything to run a query on: a pool, a connection, or a pool's connection.
Conn = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
_instruction = msgspec.json.Decoder(CampaignInstruction)

_CAMPAIGN_COLUMNS = (
    "campaign_id, version, status, action, text, category, keywords, target_gender, target_age_start, "
    "target_age_end, target_city, target_state, target_country, target_income_bucket, target_device, "
    "cpc, cpa, cpm, budget, slot_budget, spent, flight_start, flight_end, updated_at, frequency_cap, "
    "pacing_mode"
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def money(value: Decimal) -> str:
    """NUMERIC(20, 6) as the API spells money: the exact decimal, trailing zeros kept (``"0.001000"``)."""
    return format(value, "f")


def age_literal(lo: int, hi: int) -> str:
    return f"{{'start': '{lo}', 'end': '{hi}'}}"


def campaign_of(row: asyncpg.Record) -> schema.Campaign:
    date_range, time_range = format_flight(row["flight_start"], row["flight_end"])
    return schema.Campaign(
        campaign_id=row["campaign_id"], status=row["status"], version=row["version"], action=row["action"],
        text=row["text"], category=row["category"], keywords=row["keywords"],
        target_gender=row["target_gender"],
        target_age_range=age_literal(row["target_age_start"], row["target_age_end"]),
        target_city=row["target_city"], target_state=row["target_state"],
        target_country=row["target_country"], target_income_bucket=row["target_income_bucket"],
        target_device=row["target_device"], cpc=money(row["cpc"]), cpa=money(row["cpa"]),
        cpm=money(row["cpm"]), budget=money(row["budget"]), date_range=date_range, time_range=time_range,
        flight_start=iso(row["flight_start"]), flight_end=iso(row["flight_end"]),
        updated_at=iso(row["updated_at"]), frequency_cap=row["frequency_cap"],
        pacing_mode=row["pacing_mode"],
    )  # fmt: skip


def instruction_of(campaign: schema.Campaign, action: str) -> CampaignInstruction:
    """The instruction that would store ``campaign`` again, with ``action``: what a PATCH merges onto."""
    values = {name: getattr(campaign, name) for name in COLUMNS if name != "action"}
    # The optional columns too (a CSV-created capped campaign keeps its cap through a PATCH or a stop, and
    # a campaign stored before pacing modes existed stays asap: its mode is always spelled out).
    return CampaignInstruction(
        action=action, frequency_cap=campaign.frequency_cap or "", pacing_mode=campaign.pacing_mode, **values
    )


async def campaign_row(conn: Conn, campaign_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM online_ads.ads WHERE campaign_id = $1",  # noqa: S608  # a constant column list
        campaign_id,
    )
    return row


async def list_campaigns(
    conn: Conn, *, status: str | None, category: str | None, q: str | None, cursor: str | None, limit: int
) -> schema.CampaignPage:
    pattern = None
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await conn.fetch(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM online_ads.ads"  # noqa: S608  # a constant column list
        " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR category = $2)"
        " AND ($3::text IS NULL OR campaign_id ILIKE $3 OR text ILIKE $3 OR keywords ILIKE $3"
        "      OR category ILIKE $3)"
        " AND ($4::text IS NULL OR campaign_id > $4)"
        " ORDER BY campaign_id LIMIT $5",
        status, category, pattern, cursor, limit + 1,
    )  # fmt: skip
    items = [campaign_of(r) for r in rows[:limit]]
    return schema.CampaignPage(items=items, next_cursor=items[-1].campaign_id if len(rows) > limit else None)


@dataclass(frozen=True)
class Published:
    """The newest instruction the API published for a campaign (from the audit trail)."""

    author: str
    action: str
    at: datetime
    version: int
    instruction: CampaignInstruction | None


async def last_published(conn: Conn, campaign_id: str) -> Published | None:
    row = await conn.fetchrow(
        'SELECT author, action, at, "offset", instruction::text AS instruction FROM online_ads.audit'
        " WHERE campaign_id = $1 AND action <> 'replay' ORDER BY id DESC LIMIT 1",
        campaign_id,
    )
    if row is None:
        return None
    try:
        instruction: CampaignInstruction | None = _instruction.decode(row["instruction"])
    except msgspec.DecodeError:
        instruction = None
    return Published(row["author"], row["action"], row["at"], row["offset"] + 1, instruction)


async def insert_audit(
    conn: Conn, *, author: str, action: str, campaign_id: str, partition: int, offset: int, instruction: bytes
) -> None:
    await conn.execute(
        'INSERT INTO online_ads.audit (author, action, campaign_id, partition, "offset", instruction)'
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        author, action, campaign_id, partition, offset, instruction.decode("utf-8"),
    )  # fmt: skip


async def list_audit(
    conn: Conn, *, campaign_id: str | None, cursor: int | None, limit: int
) -> schema.AuditPage:
    rows = await conn.fetch(
        'SELECT id, at, author, action, campaign_id, partition, "offset" FROM online_ads.audit'
        " WHERE ($1::text IS NULL OR campaign_id = $1) AND ($2::bigint IS NULL OR id < $2)"
        " ORDER BY id DESC LIMIT $3",
        campaign_id, cursor, limit + 1,
    )  # fmt: skip
    items = [
        schema.AuditEntry(
            id=r["id"],
            at=iso(r["at"]),
            author=r["author"],
            action=r["action"],
            campaign_id=r["campaign_id"],
            partition=r["partition"],
            offset=r["offset"],
        )
        for r in rows[:limit]
    ]
    return schema.AuditPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


def _counts(served: int, clicks: int, acquisitions: int) -> schema.Counts:
    return schema.Counts(
        served=served, views=None, clicks=clicks, acquisitions=acquisitions,
        ctr=(clicks + acquisitions) / served if served else None,
    )  # fmt: skip


async def delivery(conn: Conn, campaign_id: str, flight_start: datetime, now: datetime) -> schema.Delivery:
    """Served, charged clicks and acquisitions over the flight and since midnight UTC today. A charge's
    ``event_id`` ends with its action (``<request digest>:click``), which is how they are told apart."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    served: Any = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE served_at >= $2) AS flight,"
        " count(*) FILTER (WHERE served_at >= $3) AS today"
        " FROM online_ads.served_ads WHERE campaign_id = $1",
        campaign_id, flight_start, today,
    )  # fmt: skip
    charged: Any = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE event_id LIKE '%:click' AND occurred_at >= $2) AS fc,"
        " count(*) FILTER (WHERE event_id LIKE '%:acquisition' AND occurred_at >= $2) AS fa,"
        " count(*) FILTER (WHERE event_id LIKE '%:click' AND occurred_at >= $3) AS tc,"
        " count(*) FILTER (WHERE event_id LIKE '%:acquisition' AND occurred_at >= $3) AS ta"
        " FROM online_ads.spend_events WHERE campaign_id = $1",
        campaign_id, flight_start, today,
    )  # fmt: skip
    return schema.Delivery(
        flight=_counts(served["flight"], charged["fc"], charged["fa"]),
        today=_counts(served["today"], charged["tc"], charged["ta"]),
    )


async def replays(conn: Conn) -> dict[tuple[int, int], schema.Replay]:
    rows = await conn.fetch(
        'SELECT dlq_partition, dlq_offset, partition, "offset", author, at FROM online_ads.dlq_replays'
    )
    return {
        (r["dlq_partition"], r["dlq_offset"]): schema.Replay(
            partition=r["partition"], offset=r["offset"], author=r["author"], at=iso(r["at"])
        )
        for r in rows
    }
