"""Redis cost of the feedback debit script, per debit, beside the floor of one write per debit.

    python -m bench.debit_redis [--batch 30] [--calls 300] [--campaigns 1]

Calls the real ``BudgetStore.debit_many`` one batch at a time (every debit a new de-duplication id, so
each one charges) against the stack's Redis (AOF, fsync on every write), then a reference script that
does one ``SET ... EX`` per debit key and nothing else: what any idempotent debit must at least write.
Reports Redis CPU per debit (``INFO cpu``, the server's own user+sys time, so client noise stays out) and
wall time per debit for both, and their ratio. Redis runs every script on its one thread, so its CPU per
debit is what bounds a campaign's debits per second and what the feedback path's fsyncs queue behind.
Saves JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from adplatform import names
from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.sandbox import sandbox_environment
from bench.http_stack import delete_campaign_keys, save_results
from budget.budget_redis import BudgetStore, DebitRequest
from index.campaign import Campaign

_FLOOR = "for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', 60) end return #KEYS"


def bench_campaign(cid: str, now_s: float) -> Campaign:
    """A live campaign whose budget no run can spend."""
    start = int(now_s) - 3600
    return Campaign(
        campaign_id=cid, version=1, status="Active", action="New Campaign", text="bench", category="Bench",
        keywords="bench", target_gender="All", target_age_start=0, target_age_end=0, target_city="All",
        target_state="All", target_country="India", target_income_bucket="All", target_device="All",
        cpc_micros=100, cpa_micros=1000, cpm_units=12_500, budget_micros=10**15, flight_start_s=start,
        flight_end_s=start + 86_400, slot_budget_micros=10**13,
    )  # fmt: skip


async def _server_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _measure(
    client: aioredis.Redis, calls: list[Callable[[], Awaitable[object]]]
) -> tuple[float, float]:
    """Seconds of Redis CPU and of wall time for the calls, one after the other."""
    await calls[0]()  # warm: the script is loaded, the connection open
    cpu0, wall0 = await _server_cpu_s(client), time.perf_counter()
    for call in calls[1:]:
        await call()
    wall = time.perf_counter() - wall0
    return await _server_cpu_s(client) - cpu0, wall


async def run(batch: int, calls: int, campaigns: int) -> list[dict[str, object]]:
    config = load_config()
    client = aioredis.from_url(config.redis_url)
    store = BudgetStore(client, slot_s=config.slot_s)
    now_s = time.time()
    tag = uuid.uuid4().hex[:8]
    ids = [f"bench-debit-{tag}-{i}" for i in range(campaigns)]
    try:
        await store.init_campaigns([bench_campaign(cid, now_s) for cid in ids], now_s, new=ids)
        batches = [
            [DebitRequest(ids[(k * batch + j) % campaigns], f"{tag}-{k}-{j}:click", 7) for j in range(batch)]
            for k in range(calls)
        ]

        def debit(b: list[DebitRequest]) -> Callable[[], Awaitable[object]]:
            return lambda: store.debit_many(b, now_s=now_s, dedup_ttl_s=60)

        floor_script = client.register_script(_FLOOR)

        def floor(b: list[DebitRequest]) -> Callable[[], Awaitable[object]]:
            keys = [names.dedup_key(r.campaign_id, f"floor-{r.dedup_id}") for r in b]
            return lambda: floor_script(keys=keys, args=[7])

        debit_cpu, debit_wall = await _measure(client, [debit(b) for b in batches])
        floor_cpu, floor_wall = await _measure(client, [floor(b) for b in batches])
        spent = sum([(await store.get(cid))["spent"] for cid in ids])
        if spent != calls * batch * 7:
            raise SystemExit(f"the debits did not all charge: spent {spent}, expected {calls * batch * 7}")
    finally:
        await client.aclose()
        await delete_campaign_keys(config, ids)  # the floor's keys carry the same campaign hash tags
    n = (calls - 1) * batch
    rows: list[dict[str, object]] = [
        {"case": "debit script", "redis_cpu_us_per_debit": round(debit_cpu / n * 1e6, 2),
         "wall_us_per_debit": round(debit_wall / n * 1e6, 2)},
        {"case": "floor: one SET EX per debit", "redis_cpu_us_per_debit": round(floor_cpu / n * 1e6, 2),
         "wall_us_per_debit": round(floor_wall / n * 1e6, 2)},
    ]  # fmt: skip
    rows[0]["ratio_to_floor"] = round(debit_cpu / floor_cpu, 2) if floor_cpu else None
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.debit_redis", description=__doc__)
    parser.add_argument("--batch", type=int, default=30, help="debits per script call")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--campaigns", type=int, default=1, help="campaigns the debits are spread over")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    with sandbox_environment("bench"):  # its own Redis database, never the user's
        rows = asyncio.run(run(args.batch, args.calls, args.campaigns))
    for r in rows:
        print(
            f"{r['case']:<30} Redis CPU {r['redis_cpu_us_per_debit']:>6.2f} µs/debit  "
            f"wall {r['wall_us_per_debit']:>6.2f} µs/debit  ratio {r.get('ratio_to_floor', 1.0)}"
        )
    save_results("debit-redis", vars(args), rows, label=args.label)
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
