"""Pacing simulator: a seeded day of traffic through the real serving and budget code, in both modes.

    python -m bench.pacing [--campaigns 300] [--users 20000] [--peak-rps 10] [--hours 24] [--seed 7]

Each mode's run replays the same day (``bench.pacing_world``) through the real code: the targeting index,
the serve path's auction with frequency caps and even pacing (``adserver.fcap.capped_auction``, two
workers, each with its own ``EvenThrottle`` reading Redis), the caps' script (``budget.fcap_redis``) and the
debit script (``budget.budget_redis``: the hard cap), the slot pacer's roll at every slot boundary and the
exhaustion notices blocking campaigns in the index. Redis is real, in a sandboxed Redis database of its
own; time is a ``ManualClock`` moved ``--tick-s`` at a time, so a day runs in minutes. A served ad is
clicked with the campaign's charge rate (``bench.pacing_world``), the click charged ``auction_cpc`` at the
end of its tick (the feedback's lag); the workers' throttles tick once per tick.

Printed per mode, over the campaigns with enough eligible traffic: the pacing error (NRMSE of each
campaign's cumulative spend against its ideal line, budget x elapsed share of the flight, sampled every
tick; median and p90), delivery (spent / budget at flight end; median and p10), the share of campaigns
that spent 99% of their budget before 50% of their flight; the share of spend in the first tenth of its
slot (pooled over campaigns and slots; 0.1 when slots are spent evenly: asap's sawtooth shows here); over
all campaigns: the share of spend the top 1% took, overspend (Redis spend above budget, summed; must be 0)
and frequency-cap violations (a user served a capped campaign more often than its cap; must be 0).
Saves JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.sandbox import sandbox_environment
from adserver.fcap import CapGate, capped_auction
from adserver.throttle import EvenThrottle
from bench.http_stack import save_results
from bench.pacing_world import DAY_START_S, SLOT_S, World, build_world, rate_share
from budget.budget_redis import BudgetStore, DebitRequest
from budget.fcap_redis import FrequencyCapStore
from index.campaign import Campaign, PacingMode
from index.index import TargetingIndex
from index.pacing import ManualClock

WORKERS = 2
#: Debits per script call at the end of a tick.
DEBIT_BATCH = 500


def _poisson(rng: random.Random, lam: float) -> int:
    if lam < 30:  # Knuth: exact for small means
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Books:
    """What one run observed, per campaign id: ``series`` is the cumulative charge at each tick's end."""

    charged: Counter[str] = field(default_factory=Counter)
    series: dict[str, array[int]] = field(default_factory=dict)
    capped_serves: Counter[tuple[str, str]] = field(default_factory=Counter)
    requests: int = 0
    served: int = 0

    def record_tick(self, campaign_ids: Iterable[str]) -> None:
        for cid in campaign_ids:
            self.series.setdefault(cid, array("q")).append(self.charged[cid])


def flight_error(c: Campaign, cumulative: Sequence[int], *, tick_s: int) -> tuple[float, float | None]:
    """(NRMSE of the cumulative spend against ``budget x elapsed share of the flight``, sampled at every
    tick end inside the flight; the elapsed share of the flight at which 99% of the budget was spent)."""
    total = 0.0
    n = 0
    exhausted: float | None = None
    length = c.flight_end_s - c.flight_start_s
    for tick, spent in enumerate(cumulative):
        at = DAY_START_S + (tick + 1) * tick_s
        if not c.flight_start_s < at <= c.flight_end_s:
            continue
        share = (at - c.flight_start_s) / length
        error = (spent - c.budget_micros * share) / c.budget_micros
        total += error * error
        n += 1
        if exhausted is None and spent >= 0.99 * c.budget_micros:
            exhausted = share
    return (math.sqrt(total / n) if n else 0.0), exhausted


def slot_tenths(campaigns: Iterable[Campaign], series: dict[str, array[int]], *, tick_s: int) -> list[float]:
    """The share of all spend that fell in each tenth of its slot, pooled over campaigns and slots: 0.1
    each when slots are spent evenly, front-loaded for asap's sawtooth. (Pooled, since one campaign's
    slot sees a few charges, too few to show a shape on its own.)"""
    per_tenth = SLOT_S // tick_s // 10
    tenths = [0] * 10
    for c in campaigns:
        cumulative = series[c.campaign_id]
        for end in range(per_tenth, len(cumulative) + 1, per_tenth):
            start = end - per_tenth
            tenths[start // per_tenth % 10] += cumulative[end - 1] - (cumulative[start - 1] if start else 0)
    total = sum(tenths)
    return [round(t / total, 4) if total else 0.0 for t in tenths]


async def simulate(
    world: World, mode: PacingMode, client: aioredis.Redis, *, tick_s: int, seed: int
) -> Books:
    """One day in ``mode``; returns its books (Redis keys under a prefix of their own)."""
    campaigns = world.with_mode(mode, f"pace-{mode}-{uuid.uuid4().hex[:6]}-")
    by_id = {c.campaign_id: c for c in campaigns}
    rates = {c.campaign_id: world.click_rate[c.campaign_id.rsplit("-", 1)[1]] for c in campaigns}
    clock = ManualClock(DAY_START_S)
    store = BudgetStore(client, slot_s=SLOT_S)
    await store.init_campaigns(campaigns, clock.now(), new={c.campaign_id for c in campaigns})
    index = TargetingIndex()
    index.apply_all(campaigns)
    caps = FrequencyCapStore(client)
    gates = [
        CapGate(deadline_s=2.0, store=caps, throttle=EvenThrottle(slot_s=SLOT_S, clock=clock, tick_s=tick_s))
        for _ in range(WORKERS)
    ]
    rng = random.Random(seed)
    books = Books()
    for tick in range(world.day_s // tick_s):
        now = DAY_START_S + tick * tick_s
        clock.set(now)
        if now % SLOT_S == 0 and tick:  # the slot pacer: roll every budget, (un)block as it says
            for cid, blocked in (await store.pace(by_id, now)).items():
                (index.block if blocked else index.unblock)(cid)
        for gate in gates:
            assert gate.throttle is not None
            await gate.throttle.tick(client)
        n = _poisson(rng, world.peak_rps * rate_share(now - DAY_START_S) * tick_s)
        pending: list[DebitRequest] = []
        for i in range(n):
            user = rng.randrange(len(world.users))
            request = world.users[user]
            at = now + tick_s * i / n
            result = await capped_auction(
                gates[i % WORKERS], index, request, at, reserve_cpm_units=1, rng=rng
            )
            if result is None:
                continue
            cid = result.campaign.campaign_id
            books.served += 1
            if result.campaign.frequency_cap is not None:
                books.capped_serves[(request.user_id, cid)] += 1
            if rng.random() < rates[cid]:
                pending.append(DebitRequest(cid, f"{tick}-{i}", result.auction_cpc_micros))
        books.requests += n
        for start in range(0, len(pending), DEBIT_BATCH):  # the feedback of the tick, at its end
            part = pending[start : start + DEBIT_BATCH]
            debits = await store.debit_many(part, now_s=now + tick_s - 0.001, dedup_ttl_s=3600)
            for r, d in zip(part, debits, strict=True):
                books.charged[r.campaign_id] += d.charged_micros
                if d.exhausted:
                    index.block(r.campaign_id)
        books.record_tick(by_id)
    spent = {c.campaign_id: (await store.get(c.campaign_id)).get("spent", 0) for c in campaigns}
    if spent != {cid: books.charged[cid] for cid in spent}:
        raise SystemExit(f"{mode}: Redis spend differs from the charges the run booked")
    return books


def report(world: World, mode: str, books: Books, *, tick_s: int) -> dict[str, object]:
    """The figures of one mode's run (see the module docstring)."""
    base = {c.campaign_id: c for c in world.campaigns}

    def original(cid: str) -> Campaign:
        return base[cid.rsplit("-", 1)[1]]

    ids = list(books.series)
    enough = [cid for cid in ids if world.enough(original(cid).campaign_id)]
    errors = {cid: flight_error(original(cid), books.series[cid], tick_s=tick_s) for cid in ids}
    nrmse = [errors[cid][0] for cid in enough]
    tenths = slot_tenths(
        (original(cid) for cid in enough),
        {original(cid).campaign_id: books.series[cid] for cid in enough},
        tick_s=tick_s,
    )
    delivery = [books.charged[cid] / original(cid).budget_micros for cid in enough]

    def early(cid: str) -> bool:
        at = errors[cid][1]
        return at is not None and at < 0.5

    total = sum(books.charged.values())
    top = sorted(books.charged.values(), reverse=True)[: max(1, math.ceil(len(world.campaigns) / 100))]
    overspend = sum(max(0, books.charged[cid] - original(cid).budget_micros) for cid in ids)
    violations = 0
    for (_user, cid), count in books.capped_serves.items():
        cap = original(cid).frequency_cap
        assert cap is not None
        violations += count > cap.count  # 1d and flight windows span the whole simulated day
    return {
        "mode": mode,
        "campaigns": len(world.campaigns),
        "enough_traffic": len(enough),
        "requests": books.requests,
        "fill": round(books.served / max(1, books.requests), 3),
        "nrmse_median": round(statistics.median(nrmse), 4) if nrmse else None,
        "nrmse_p90": round(_quantile(nrmse, 0.9), 4),
        "slot_first_tenth_share": tenths[0],
        "slot_tenths": tenths,
        "delivery_median": round(statistics.median(delivery), 4) if delivery else None,
        "delivery_p10": round(_quantile(delivery, 0.1), 4),
        "exhausted_before_half": round(sum(map(early, enough)) / max(1, len(enough)), 4),
        "exhausted_before_half_all": round(sum(map(early, ids)) / max(1, len(ids)), 4),
        "top1pct_spend_share": round(sum(top) / total, 4) if total else None,
        "overspend_micros": overspend,
        "cap_violations": violations,
    }


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    world = build_world(
        seed=args.seed, campaigns=args.campaigns, users=args.users, peak_rps=args.peak_rps,
        day_s=int(args.hours * 3600) // SLOT_S * SLOT_S,
    )  # fmt: skip
    client = aioredis.from_url(load_config().redis_url)
    rows = []
    try:
        for mode in args.modes.split(","):
            started = time.perf_counter()
            books = await simulate(world, mode, client, tick_s=args.tick_s, seed=args.seed)
            row = report(world, mode, books, tick_s=args.tick_s)
            row["wall_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(_line(row), flush=True)
    finally:
        await client.aclose()
    return rows


def _line(r: dict[str, object]) -> str:
    return (
        f"{r['mode']:<5} pacing error NRMSE median {r['nrmse_median']} p90 {r['nrmse_p90']} "
        f"| first tenth of a slot's spend {r['slot_first_tenth_share']} (even: 0.1) "
        f"| delivery median {r['delivery_median']} p10 {r['delivery_p10']} "
        f"| exhausted before 50% of flight {r['exhausted_before_half']} "
        f"(all {r['exhausted_before_half_all']}) "
        f"| top-1% spend share {r['top1pct_spend_share']} | overspend {r['overspend_micros']} "
        f"| cap violations {r['cap_violations']} | {r['enough_traffic']}/{r['campaigns']} campaigns with "
        f"enough traffic, {r['requests']:,} requests, fill {r['fill']}, {r['wall_s']} s"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pacing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--campaigns", type=int, default=300)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--peak-rps", type=float, default=10.0, help="simulated requests per second at peak")
    parser.add_argument("--hours", type=float, default=24.0, help="length of the simulated day")
    parser.add_argument("--tick-s", type=int, default=10, choices=(1, 2, 5, 10, 20, 30, 60))
    parser.add_argument("--modes", default="asap,even")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    if not set(args.modes.split(",")) <= {"asap", "even"}:
        parser.error("--modes: asap and/or even")
    with sandbox_environment("bench"):  # its own Redis database, never the user's
        rows = asyncio.run(run(args))
    failed = [r["mode"] for r in rows if r["overspend_micros"] or r["cap_violations"]]
    save_results("pacing", vars(args), rows, label=args.label)
    if failed:
        print(f"FAILED: overspend or cap violations in {', '.join(map(str, failed))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
