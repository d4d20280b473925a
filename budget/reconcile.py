"""Reconciliation: Redis spend against the books, and repair of drift.

The truth for a campaign's spend is the ledger in PostgreSQL (``online_ads.spend_events``) plus the
charged ``ad-feedback`` events after the ledger's stored offsets that it has not booked yet. Redis should
hold exactly that. Differences come from a Redis restart or wipe, or from a refund whose event Kafka kept
after all. Repair is a compare-and-set per campaign (``BudgetStore.repair``): a campaign whose Redis spend
moved between two readings is in flight and left for the next round. A campaign missing from Redis (data
wiped) is rebuilt from ``online_ads.ads`` with the true spend; until then feedback for it answers 503.
Before its budget is rebuilt, the de-duplication keys of its charges still inside the de-duplication
window are restored (from the ledger and the events it has not booked yet), so a retry of a feedback
charged before the loss is answered as the duplicate it is instead of being charged again. Events that
charged nothing (views, clicks capped to 0 by a spent budget) are not in the books, so a retry of one
counts as new: a view costs 0 again, and a capped click may be charged if budget has freed up since (a
new slot, a raised budget), which leaves two events with that id in the archive (a known limit: closing
it would mean booking every uncharged event too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from adplatform.config import Config
from adplatform.kafka import read_to_end
from adplatform.metrics import RECONCILE_DIFFERING, RECONCILE_DRIFT, RECONCILE_REPAIRS, RECONCILE_ROUNDS
from adplatform.names import GROUP_LEDGER
from adplatform.postgres import create_pool
from adplatform.process import run_until_signalled
from adplatform.redis_client import RedisClient, open_redis
from adplatform.wire import feedback_decoder
from budget.budget_redis import BudgetStore, DedupEntry, dedup_ttl_s
from budget.ledger import stored_offsets
from index.campaign import Campaign
from index.money import MICROS_PER_UNIT

logger = logging.getLogger(__name__)


def _micros(value: Decimal) -> int:
    return int(value * MICROS_PER_UNIT)


@dataclass(frozen=True)
class SpendDiff:
    campaign_id: str
    redis_micros: int | None
    postgres_micros: int
    pending_micros: int

    @property
    def truth_micros(self) -> int:
        return self.postgres_micros + self.pending_micros

    @property
    def diff_micros(self) -> int:
        return (self.redis_micros or 0) - self.truth_micros


def campaign_from_row(row: asyncpg.Record) -> Campaign:
    return Campaign(
        campaign_id=row["campaign_id"], version=row["version"], status=row["status"], action=row["action"],
        text=row["text"], category=row["category"], keywords=row["keywords"],
        target_gender=row["target_gender"], target_age_start=row["target_age_start"],
        target_age_end=row["target_age_end"], target_city=row["target_city"],
        target_state=row["target_state"], target_country=row["target_country"],
        target_income_bucket=row["target_income_bucket"],
        target_device=row["target_device"], cpc_micros=_micros(row["cpc"]), cpa_micros=_micros(row["cpa"]),
        cpm_units=int(row["cpm"] * 10**10), budget_micros=_micros(row["budget"]),
        flight_start_s=int(row["flight_start"].timestamp()), flight_end_s=int(row["flight_end"].timestamp()),
        slot_budget_micros=_micros(row["slot_budget"]),
    )  # fmt: skip


class Reconciler:
    """Compares and repairs; one instance per process."""

    def __init__(self, config: Config, pool: asyncpg.Pool, store: BudgetStore) -> None:
        self._config = config
        self._pool = pool
        self._store = store

    async def postgres_spend(self) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT campaign_id, sum(amount) AS spent FROM online_ads.spend_events GROUP BY campaign_id"
        )
        return {r["campaign_id"]: _micros(r["spent"]) for r in rows}

    async def pending_events(self) -> dict[str, tuple[str, int, int]]:
        """Charged events in ad-feedback after the ledger's offsets that the ledger has not booked:
        event id → (campaign id, micros, timestamp ms)."""
        topic = self._config.topics.feedback
        start = await stored_offsets(self._pool, self._config.group(GROUP_LEDGER), topic)
        events: dict[str, tuple[str, int, int]] = {}
        for record in await read_to_end(self._config.kafka_bootstrap, topic, start=start):
            try:
                event = feedback_decoder.decode(record.value or b"")
            except (ValueError, TypeError):
                continue
            if event.expenditure_micros > 0:
                events[event.event_id] = (event.campaign_id, event.expenditure_micros, event.timestamp_ms)
        if not events:
            return {}
        booked = await self._pool.fetch(
            "SELECT event_id FROM online_ads.spend_events WHERE event_id = ANY($1::text[])", list(events)
        )
        for row in booked:
            events.pop(row["event_id"], None)
        return events

    async def restore_dedup(
        self, campaign_ids: list[str], now_s: float, pending: dict[str, tuple[str, int, int]]
    ) -> int:
        """The de-duplication keys of these campaigns' charges inside the window (see the module doc):
        booked ones from the ledger, ``pending`` ones (``pending_events``) from Kafka."""
        ttl_ms = dedup_ttl_s(self._config.token_ttl_s) * 1000
        since = datetime.fromtimestamp(now_s - ttl_ms / 1000, tz=UTC)
        rows = await self._pool.fetch(
            "SELECT event_id, campaign_id, amount, occurred_at FROM online_ads.spend_events "
            "WHERE campaign_id = ANY($1::text[]) AND occurred_at > $2",
            campaign_ids,
            since,
        )
        entries = [
            DedupEntry(r["campaign_id"], r["event_id"], _micros(r["amount"]),
                       int(r["occurred_at"].timestamp() * 1000) + ttl_ms)
            for r in rows
        ]  # fmt: skip
        wanted = set(campaign_ids)
        entries += [
            DedupEntry(cid, event_id, micros, ts_ms + ttl_ms)
            for event_id, (cid, micros, ts_ms) in pending.items()
            if cid in wanted
        ]
        return await self._store.restore_dedup(entries, now_s)

    async def diffs(self) -> list[SpendDiff]:
        """Every campaign known to PostgreSQL or Redis whose Redis spend differs from the truth."""
        return (await self._diffs_and_pending())[0]

    async def _diffs_and_pending(self) -> tuple[list[SpendDiff], dict[str, tuple[str, int, int]]]:
        """``diffs``, and the pending events its truth counted (one read of the topic's tail)."""
        redis_spent = await self._store.spent_all()
        pg = await self.postgres_spend()
        events = await self.pending_events()
        pending: dict[str, int] = {}
        for campaign_id, micros, _ in events.values():
            pending[campaign_id] = pending.get(campaign_id, 0) + micros
        known = {r["campaign_id"] for r in await self._pool.fetch("SELECT campaign_id FROM online_ads.ads")}
        out: list[SpendDiff] = []
        for cid in sorted(known | set(redis_spent) | set(pg) | set(pending)):
            diff = SpendDiff(cid, redis_spent.get(cid), pg.get(cid, 0), pending.get(cid, 0))
            if (diff.redis_micros is None and cid in known) or diff.diff_micros != 0:
                out.append(diff)
        return out, events

    async def repair(self, *, settle_s: float = 0.5) -> list[SpendDiff]:
        """Repair campaigns whose difference is stable across two readings; returns those repaired."""
        first = {d.campaign_id: d for d in await self.diffs()}
        _record_drift(first.values())
        if not first:
            RECONCILE_ROUNDS.inc()
            return []
        await asyncio.sleep(settle_s)
        second, pending = await self._diffs_and_pending()
        rows = await self._pool.fetch(
            "SELECT * FROM online_ads.ads WHERE campaign_id = ANY($1::text[])",
            [d.campaign_id for d in second],
        )
        campaigns = {r["campaign_id"]: campaign_from_row(r) for r in rows}
        repaired: list[SpendDiff] = []
        now = time.time()
        lost = [d.campaign_id for d in second if d.redis_micros is None and d.campaign_id in campaigns]
        if lost:
            restored = await self.restore_dedup(lost, now, pending)
            logger.info("restored %d de-duplication keys of %d campaigns to rebuild", restored, len(lost))
        for diff in second:
            before = first.get(diff.campaign_id)
            campaign = campaigns.get(diff.campaign_id)
            if before is None or before.redis_micros != diff.redis_micros or campaign is None:
                continue  # moving (in flight) or unknown to PostgreSQL: next round
            if await self._store.repair(
                campaign, expected_spent=diff.redis_micros, spent=diff.truth_micros, now_s=now
            ):
                repaired.append(diff)
        for diff in repaired:
            logger.info(
                "repaired %s: redis %s → %d micros", diff.campaign_id, diff.redis_micros, diff.truth_micros
            )
        RECONCILE_REPAIRS.inc(len(repaired))
        RECONCILE_ROUNDS.inc()
        return repaired


def _record_drift(diffs: Iterable[SpendDiff]) -> None:
    """The round's drift: what Redis would have to move, summed over campaigns (a missing key counts its
    whole truth)."""
    listed = list(diffs)
    RECONCILE_DRIFT.set(sum(abs(d.diff_micros) for d in listed))
    RECONCILE_DIFFERING.set(len(listed))


async def open_reconciler(config: Config) -> tuple[Reconciler, asyncpg.Pool, RedisClient]:
    pool = await create_pool(config)
    client = open_redis(config.redis_url, socket_timeout=5)
    return Reconciler(config, pool, BudgetStore(client, slot_s=config.slot_s)), pool, client


def format_diffs(diffs: list[SpendDiff]) -> list[str]:
    """The lines ``adplatform reconcile --check`` prints: a table of the differing campaigns and a count."""
    lines = [f"{'campaign':<40} {'redis':>14} {'postgres':>14} {'unbooked':>12} {'diff':>12}"]
    for d in diffs:
        redis_text = "missing" if d.redis_micros is None else str(d.redis_micros)
        lines.append(
            f"{d.campaign_id:<40} {redis_text:>14} {d.postgres_micros:>14} "
            f"{d.pending_micros:>12} {d.diff_micros:>12}"
        )
    lines.append(f"{len(diffs)} campaign(s) differ (amounts in micro-units)")
    return lines


async def run_reconcile(
    config: Config, *, check: bool, interval_s: float | None, echo: Callable[[str], None]
) -> int:
    """Entry point of ``adplatform reconcile``; returns its exit status. ``check`` only compares (1 when any
    campaign differs); otherwise repair once, or every ``interval_s`` seconds until the process is stopped.
    ``echo`` prints one line of the command's output."""
    reconciler, pool, client = await open_reconciler(config)
    stopping = asyncio.Event()

    async def rounds() -> int:
        # A round in progress finishes on SIGTERM; only the wait between rounds is cut short.
        while True:
            repaired = await reconciler.repair()
            echo(f"reconcile: repaired {len(repaired)} campaign(s)")
            if interval_s is None:
                return 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
            if stopping.is_set():
                return 0

    try:
        if check:
            diffs = await reconciler.diffs()
            for line in format_diffs(diffs):
                echo(line)
            return 1 if diffs else 0
        return await run_until_signalled(rounds(), stopping.set)
    finally:
        await pool.close()
        await client.aclose()
