"""Even pacing's tick: a worker's CPU per tick, and the longest it holds the worker's event loop, by the
number of watched campaigns, beside the same tick written the plain way.

    python -m bench.throttle_tick [--watched 100,1000,10000] [--repeats 4]

Every ad-server worker reads the budget hashes of the even campaigns it watches once a second
(``adserver.throttle.EvenThrottle.tick``: up to ``MAX_WATCHED``) and updates their probabilities. Here the
real tick runs against the stack's Redis (hashes of the bench's own campaigns, in its own Redis database,
deleted afterwards) beside a reference in the same run: the same reads through a redis-py pipeline of
``hmget`` calls, then the same updates, with no turn of the event loop between them (the tick as it was
written first). Each arm's CPU is the best of ``--repeats`` ticks (``time.process_time``); its hold on the
loop, the median over them of the longest a 0.5 ms sampler task waited past its time during the tick: what
a request arriving then would wait. Saves JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from adplatform import names
from adplatform.cli.common import script_main
from adplatform.config import load_config
from adplatform.sandbox import sandbox_environment
from adserver.throttle import FIELDS, EvenThrottle, SlotState
from bench.http_stack import save_results
from bench.loop_hold import held

Tick = Callable[[EvenThrottle, aioredis.Redis], Awaitable[None]]


async def plain_tick(throttle: EvenThrottle, client: aioredis.Redis) -> None:
    """The reference: the watched hashes through a redis-py pipeline, then every update in one go."""
    ids = throttle.watched
    async with client.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hmget(names.budget_key(cid), *FIELDS)
        replies: list[list[bytes | None]] = list(await pipe.execute())
    now_s = throttle.clock.now()
    for cid, reply in zip(ids, replies, strict=True):
        throttle.update(cid, SlotState.parse(reply), now_s)


async def real_tick(throttle: EvenThrottle, client: aioredis.Redis) -> None:
    await throttle.tick(client)


async def run(watched: list[int], repeats: int) -> list[dict[str, object]]:
    config = load_config()
    client = aioredis.from_url(config.redis_url)
    now = int(time.time())
    tag = uuid.uuid4().hex[:8]
    ids = [f"bench-tick-{tag}-{i}" for i in range(max(watched))]
    state = {
        "slot": now // config.slot_s, "slot_budget": 10**9, "slot_spent": 10**6, "budget": 10**12,
        "spent": 10**7, "flight_start": now - 3600, "flight_end": now + 86_400,
    }  # fmt: skip
    rows: list[dict[str, object]] = []
    try:
        async with client.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hset(names.budget_key(cid), mapping=state)  # type: ignore[arg-type]
            await pipe.execute()
        for n in watched:
            measured: dict[str, list[tuple[float, float]]] = {"tick": [], "plain": []}
            for _ in range(repeats):
                for arm, tick in (("plain", plain_tick), ("tick", real_tick)):  # alternating
                    throttle = EvenThrottle(slot_s=config.slot_s)
                    for cid in ids[:n]:
                        throttle.watch(cid)
                    await throttle.tick(client)  # every campaign has a state: the steady tick
                    run_ = await held(functools.partial(tick, throttle, client))
                    measured[arm].append((run_.cpu_s, run_.held_s))
            cpu = {arm: min(c for c, _ in m) for arm, m in measured.items()}
            holds = {arm: statistics.median(h for _, h in m) for arm, m in measured.items()}
            rows.append({
                "watched": n,
                "tick_cpu_ms": round(cpu["tick"] * 1000, 2),
                "plain_cpu_ms": round(cpu["plain"] * 1000, 2),
                "cpu_ratio": round(cpu["tick"] / cpu["plain"], 3) if cpu["plain"] else None,
                "tick_held_ms": round(holds["tick"] * 1000, 2),
                "plain_held_ms": round(holds["plain"] * 1000, 2),
            })  # fmt: skip
    finally:
        for start in range(0, len(ids), 1000):
            await client.delete(*[names.budget_key(cid) for cid in ids[start : start + 1000]])
        await client.aclose()
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throttle_tick", description=__doc__)
    parser.add_argument("--watched", default="100,1000,10000", help="comma list of watched campaigns")
    parser.add_argument("--repeats", type=int, default=4, help="ticks per arm and size (alternating)")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    watched = [int(n) for n in args.watched.split(",") if n]
    with sandbox_environment("bench"):  # its own Redis database, never the user's
        rows = asyncio.run(run(watched, args.repeats))
    for r in rows:
        print(
            f"watched {r['watched']:>6}: tick CPU {r['tick_cpu_ms']:>7.1f} ms "
            f"(plain {r['plain_cpu_ms']:>7.1f}, ratio {r['cpu_ratio']}); "
            f"loop held {r['tick_held_ms']:>6.1f} ms (plain {r['plain_held_ms']:>6.1f})"
        )
    save_results("throttle-tick", vars(args), rows, label=args.label)
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
