"""The dashboard's numbers: the overview (scraped metrics plus campaign counts from PostgreSQL and Redis),
the campaigns table and a campaign's page (pacing series from the spend ledger, delivery from served ads).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Final

from admin import store
from admin.board_schema import (
    Bucket,
    Burn,
    CampaignBoard,
    CampaignCounts,
    CampaignRow,
    CampaignRows,
    Overview,
    PacePoint,
    TargetOut,
)
from admin.diagnosis import diagnose
from admin.error import AdminError
from admin.reads import campaign_detail
from admin.scrape import FEEDBACK_ROUTE, Snapshot, feedback_stages, latency_quantile, rate
from admin.state import AdminState
from adplatform import names
from adplatform.redis_client import RedisClient, blocked_members
from adplatform.redis_latency import StallReport
from adplatform.redis_latency import redis_stalls as stalls_in
from index.delivery import expected_spend_micros, pace_state
from index.money import format_micros, parse_micros
from index.pacing import slot_id

MICROS: Final = 1_000_000
#: The campaign page plots at most this many points; longer flights merge slots.
MAX_POINTS: Final = 300
#: Rows of the campaigns table (searched server-side, sorted in the browser).
TABLE_LIMIT: Final = 500
FEEDBACK_COUNTERS: Final = (
    "adserver_feedback_accepted_total",
    "adserver_feedback_duplicates_total",
    "adserver_feedback_rejected_tokens_total",
    "adserver_feedback_unavailable_total",
)
_BREAKDOWN: Final = (
    "SELECT {key} AS key, count(*) AS n FROM online_ads.served_ads"
    " WHERE campaign_id = $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2"
)
#: Served ads of a campaign by city, device and age bucket: whole queries, only $n values in them.
BREAKDOWNS: Final = {
    "city": _BREAKDOWN.format(key="coalesce(city, 'unknown')"),
    "device": _BREAKDOWN.format(key="coalesce(device_type, 'unknown')"),
    "age": _BREAKDOWN.format(
        key="CASE WHEN age IS NULL THEN 'unknown' WHEN age < 18 THEN '<18' WHEN age < 25 THEN '18-24'"
        " WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44' WHEN age < 55 THEN '45-54'"
        " WHEN age < 65 THEN '55-64' ELSE '65+' END"
    ),
}
#: Rows of each delivery breakdown.
BREAKDOWN_LIMIT: Final = 12


def _opt_sum(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


async def campaign_counts(state: AdminState, now_s: float) -> tuple[CampaignCounts, Burn]:
    """Live campaigns (Active, inside their flight), the blocked and exhausted among them, and their
    spend against the even plan: one query, one Redis pipeline."""
    rows = await state.pool.fetch(
        "SELECT campaign_id, budget, flight_start, flight_end FROM online_ads.ads"
        " WHERE status = 'Active' AND flight_start <= now() AND flight_end > now()"
    )
    pipe = state.redis.pipeline(transaction=False)
    for row in rows:
        pipe.hget(names.budget_key(row["campaign_id"]), "spent")
    spent_raw = await pipe.execute() if rows else []
    blocked_ids = await blocked_members(state.redis)
    blocked = exhausted = spent_sum = planned_sum = 0
    for row, raw in zip(rows, spent_raw, strict=True):
        budget = parse_micros(store.money(row["budget"]))
        spent = int(raw) if raw is not None else 0
        exhausted += spent >= budget
        blocked += row["campaign_id"] in blocked_ids or spent >= budget
        spent_sum += spent
        planned_sum += expected_spend_micros(
            budget, int(row["flight_start"].timestamp()), int(row["flight_end"].timestamp()), now_s
        )
    counts = CampaignCounts(live=len(rows), blocked=blocked, exhausted=exhausted)
    burn = Burn(
        spent=spent_sum / MICROS, planned=planned_sum / MICROS,
        ratio=spent_sum / planned_sum if planned_sum else None,
    )  # fmt: skip
    return counts, burn


#: The overview's window for Redis's stalls: the monitor keeps one sample per second with a stall.
STALLS_WINDOW_S: Final = 60


async def redis_stalls(client: RedisClient, now_s: float) -> StallReport | None:
    """Redis's own stalls over the last ``STALLS_WINDOW_S`` seconds; None when its monitor cannot say or
    Redis does not answer (the rest of the overview still shows)."""
    return await stalls_in(client, now_s - STALLS_WINDOW_S + 1, now_s)


def overview(
    new: Snapshot,
    old: Snapshot | None,
    counts: CampaignCounts,
    burn: Burn,
    refresh_ms: int,
    stalls: StallReport | None = None,
) -> Overview:
    """The overview from the newest snapshot and the one ``window_s`` before it."""
    requests = new.total("adserver_serve_requests_total")
    served = new.total("adserver_serve_requests_total", outcome="served")
    requests_rate = served_rate = feedback = spend = dlq = None
    no_fill: dict[str, float] = {}
    if old is not None:
        requests_rate = rate(new, old, "adserver_serve_requests_total")
        served_rate = rate(new, old, "adserver_serve_requests_total", outcome="served")
        feedback = _opt_sum([rate(new, old, name) for name in FEEDBACK_COUNTERS])
        charged = rate(new, old, "adserver_feedback_charged_micros_total")
        spend = None if charged is None else charged * 60 / MICROS
        dlq = rate(new, old, "manager_instructions_total", outcome="dead_lettered")
        for reason in new.by_label("adserver_no_fill_total", "reason"):
            value = rate(new, old, "adserver_no_fill_total", reason=reason)
            if value is not None:
                no_fill[reason] = value
    p50, p99 = latency_quantile(new, old, 0.5), latency_quantile(new, old, 0.99)
    fb50, fb99 = (latency_quantile(new, old, q, route=FEEDBACK_ROUTE) for q in (0.5, 0.99))
    archive = new.total("archive_commit_lag_records")
    return Overview(
        at=time.time(), window_s=None if old is None else round(new.at_s - old.at_s, 3),
        refresh_ms=refresh_ms,
        targets=[TargetOut(url=t.url, up=t.up, error=t.error) for t in new.targets],
        requests_total=requests, served_total=served, requests_per_s=requests_rate,
        fill_rate=served_rate / requests_rate if served_rate is not None and requests_rate else None,
        fill_rate_total=served / requests if served is not None and requests else None,
        serve_p50_ms=None if p50 is None else p50 * 1000, serve_p99_ms=None if p99 is None else p99 * 1000,
        feedback_per_s=feedback, feedback_p50_ms=None if fb50 is None else fb50 * 1000,
        feedback_p99_ms=None if fb99 is None else fb99 * 1000, feedback_stages_ms=feedback_stages(new, old),
        redis_stalls=stalls,
        spend_per_min=spend, dlq_per_s=dlq,
        consumer_lag=new.by_label("adplatform_consumer_lag_records", "group"),
        archive_lag=archive, no_fill_per_s=no_fill, campaigns=counts, burn=burn,
    )  # fmt: skip


async def _counts(state: AdminState, query: str, ids: list[str]) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in await state.pool.fetch(query, ids)}


async def campaign_rows(state: AdminState, q: str | None) -> CampaignRows:
    """The campaigns table: the ``/v1/campaigns`` search (same matching), with live money, pacing state,
    served and clicks."""
    page = await store.list_campaigns(
        state.pool, status=None, category=None, q=q, cursor=None, limit=TABLE_LIMIT
    )
    ids = [c.campaign_id for c in page.items]
    if not ids:
        return CampaignRows(items=[], truncated=False)
    now_s = time.time()
    extra = {
        r["campaign_id"]: r
        for r in await state.pool.fetch(
            "SELECT campaign_id, slot_budget, spent, flight_start, flight_end FROM online_ads.ads"
            " WHERE campaign_id = ANY($1::text[])",
            ids,
        )
    }
    served = await _counts(
        state,
        "SELECT campaign_id, count(*) FROM online_ads.served_ads WHERE campaign_id = ANY($1::text[])"
        " GROUP BY campaign_id",
        ids,
    )
    clicks = await _counts(
        state,
        "SELECT campaign_id, count(*) FROM online_ads.spend_events WHERE campaign_id = ANY($1::text[])"
        " AND event_id LIKE '%:click' GROUP BY campaign_id",
        ids,
    )
    pipe = state.redis.pipeline(transaction=False)
    for campaign_id in ids:
        pipe.hgetall(names.budget_key(campaign_id))
    lives = await pipe.execute()
    blocked_ids = await blocked_members(state.redis)
    current_slot = slot_id(now_s, state.config.slot_s)
    items = []
    for campaign, raw in zip(page.items, lives, strict=True):
        row = extra.get(campaign.campaign_id)
        if row is None:  # deleted between the two queries
            continue
        live = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        budget = parse_micros(campaign.budget)
        spent = live.get("spent", parse_micros(store.money(row["spent"])))
        current = live.get("slot") == current_slot
        pacing = pace_state(
            active=campaign.status == "Active", budget_micros=budget, spent_micros=spent,
            flight_start_s=int(row["flight_start"].timestamp()),
            flight_end_s=int(row["flight_end"].timestamp()), now_s=now_s,
            blocked=campaign.campaign_id in blocked_ids,
            slot_budget_micros=live.get("slot_budget") if current else None,
            slot_spent_micros=live.get("slot_spent") if current else None,
            planned_slot_micros=parse_micros(store.money(row["slot_budget"])),
        )  # fmt: skip
        n_served, n_clicks = served.get(campaign.campaign_id, 0), clicks.get(campaign.campaign_id, 0)
        items.append(
            CampaignRow(
                campaign_id=campaign.campaign_id,
                text=campaign.text,
                category=campaign.category,
                status=campaign.status,
                budget=campaign.budget,
                spent=format_micros(spent),
                remaining=format_micros(budget - spent),
                spent_value=spent / MICROS,
                remaining_value=(budget - spent) / MICROS,
                pacing=pacing,
                served=n_served,
                clicks=n_clicks,
                ctr=n_clicks / n_served if n_served else None,
            )
        )
    return CampaignRows(items=items, truncated=page.next_cursor is not None)


def pacing_series(
    budget_micros: int,
    start: datetime,
    end: datetime,
    slot_s: int,
    spend_by_slot: dict[int, int],
    now_s: float,
) -> list[PacePoint]:
    """Cumulative booked spend at the end of each slot of the flight against the even plan's line (the
    budget times the elapsed share of the flight); slots merge so that at most ``MAX_POINTS`` remain."""
    start_s, end_s = int(start.timestamp()), int(end.timestamp())
    first, last = slot_id(start_s, slot_s), slot_id(max(end_s - 1, start_s), slot_s)
    step = max(1, -(-(last - first + 1) // MAX_POINTS))
    points: list[PacePoint] = []
    cumulative = 0
    # Spend booked before the flight's first slot (none should be) still counts from the start.
    cumulative += sum(v for s, v in spend_by_slot.items() if s < first)
    for slot in range(first, last + 1):
        cumulative += spend_by_slot.get(slot, 0)
        if (slot - first + 1) % step and slot != last:
            continue
        at_s = min((slot + 1) * slot_s, end_s)
        past = slot * slot_s <= now_s
        points.append(
            PacePoint(
                t=at_s * 1000,
                spent=cumulative / MICROS if past else None,
                plan=expected_spend_micros(budget_micros, start_s, end_s, at_s) / MICROS,
            )
        )
    return points


async def campaign_board(state: AdminState, campaign_id: str) -> CampaignBoard:
    detail = await campaign_detail(state, campaign_id)  # 404 when there is no such campaign
    slot_s = state.config.slot_s
    async with state.pool.acquire() as conn:
        row = await store.campaign_row(conn, campaign_id)
        if row is None:
            raise AdminError(404, f"No campaign {campaign_id}.")
        spend = await conn.fetch(
            "SELECT floor(extract(epoch FROM occurred_at) / $2)::bigint AS slot,"
            " (sum(amount) * 1000000)::bigint AS micros"
            " FROM online_ads.spend_events WHERE campaign_id = $1 GROUP BY 1",
            campaign_id, slot_s,
        )  # fmt: skip
        buckets = {}
        for name, query in BREAKDOWNS.items():
            rows = await conn.fetch(query, campaign_id, BREAKDOWN_LIMIT)
            buckets[name] = [Bucket(key=r["key"], served=r["n"]) for r in rows]
    series = pacing_series(
        parse_micros(detail.campaign.budget), row["flight_start"], row["flight_end"], slot_s,
        {r["slot"]: r["micros"] for r in spend}, time.time(),
    )  # fmt: skip
    diagnosis, note = None, None
    if state.insight is None:
        note = "Diagnosis is not running in this admin service."
    else:
        try:
            diagnosis = await diagnose(state, state.insight, campaign_id, 15 * 60)
        except AdminError as exc:
            note = exc.detail
    return CampaignBoard(
        detail=detail, slot_s=slot_s, pacing=series, by_city=buckets["city"], by_device=buckets["device"],
        by_age=buckets["age"], diagnosis=diagnosis, diagnosis_note=note,
    )  # fmt: skip
