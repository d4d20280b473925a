"""``GET /v1/campaigns/{id}``: the stored campaign with its live money (Redis), pacing state, delivery
(PostgreSQL) and last change."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from admin import schema, store
from admin.error import AdminError
from admin.state import AdminState
from adplatform.redis_client import is_blocked
from index.delivery import pace_state
from index.money import format_micros, parse_micros
from index.pacing import slot_id


def _micros(text: str) -> int:
    return parse_micros(text)


async def campaign_detail(state: AdminState, campaign_id: str) -> schema.CampaignDetail:
    now_s = time.time()
    async with state.pool.acquire() as conn:
        row = await store.campaign_row(conn, campaign_id)
        if row is None:
            raise AdminError(404, f"No campaign {campaign_id}.")
        campaign = store.campaign_of(row)
        delivery = await store.delivery(conn, campaign_id, row["flight_start"], datetime.now(UTC))
        published = await store.last_published(conn, campaign_id)
    live = await state.budgets.get(campaign_id)
    blocked = await is_blocked(state.redis, campaign_id)
    budget = _micros(campaign.budget)
    booked = _micros(store.money(row["spent"]))
    spent = live.get("spent", booked)
    slot_budget, slot_spent = live.get("slot_budget"), live.get("slot_spent")
    # The scripts roll a slot lazily: figures of an older slot say nothing about the current one.
    current = live.get("slot") == slot_id(now_s, state.config.slot_s)
    money = schema.LiveMoney(
        budget=campaign.budget, spent=format_micros(spent), spent_booked=format_micros(booked),
        remaining=format_micros(budget - spent), slot=live.get("slot"),
        slot_budget=None if slot_budget is None else format_micros(slot_budget),
        slot_spent=None if slot_spent is None else format_micros(slot_spent), blocked=blocked,
    )  # fmt: skip
    pacing = pace_state(
        active=campaign.status == "Active", budget_micros=budget, spent_micros=spent,
        flight_start_s=int(row["flight_start"].timestamp()), flight_end_s=int(row["flight_end"].timestamp()),
        now_s=now_s, blocked=blocked, slot_budget_micros=slot_budget if current else None,
        slot_spent_micros=slot_spent if current else None,
        planned_slot_micros=_micros(store.money(row["slot_budget"])),
    )  # fmt: skip
    if published is not None and published.version >= campaign.version:
        last = schema.LastChange(
            action=published.instruction.action if published.instruction else published.action,
            author=published.author, at=store.iso(published.at), version=published.version,
            pending=published.version > campaign.version,
        )  # fmt: skip
    else:
        last = schema.LastChange(
            action=campaign.action, author=None, at=campaign.updated_at, version=campaign.version,
            pending=False,
        )  # fmt: skip
    return schema.CampaignDetail(
        campaign=campaign, money=money, pacing=pacing, delivery=delivery, last_change=last
    )
