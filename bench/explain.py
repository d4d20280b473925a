"""Explain latency: ``GET /v1/explain``'s work (parse, index.explain over every campaign, the response
Structs, JSON encoding) on an index of generated campaigns, in process, without HTTP or a stack.

``python -m bench.explain [--campaigns 5000] [--requests 200]``: prints p50/p99 of the whole route body and,
as the same-run reference, of the live auction (``run_auction``) on the same requests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from types import SimpleNamespace
from typing import cast
from urllib.parse import urlencode

import msgspec

from admin.explain import explain_query
from admin.insight import Insight, build_insight
from admin.state import AdminState
from adplatform.cli.common import script_main
from adplatform.config import load_config
from bench.index_corpus import NOW_S, make_campaigns, make_requests
from index.auction import run_auction
from index.targeting import AdRequest


def _query(r: AdRequest) -> bytes:
    fields = ("device_type", "city", "state", "country", "age", "gender", "income_bucket")
    return urlencode({f: getattr(r, f) for f in fields if getattr(r, f) is not None}).encode()


def _quantiles(samples_s: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples_s, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def _run(campaigns: int, requests: int) -> None:
    config = load_config()
    insight: Insight = build_insight(config)
    # The corpus's flights are around its own "now": rebase them onto the wall clock so they are live.
    shift = int(time.time()) - NOW_S
    batch = [
        msgspec.structs.replace(
            c, flight_start_s=c.flight_start_s + shift, flight_end_s=c.flight_end_s + shift
        )
        for c in make_campaigns(campaigns)
    ]
    insight.index.apply_all(batch)
    insight.index.warm()
    insight.feed.ready.set()
    state = cast(AdminState, SimpleNamespace(config=config))  # blocked set empty, no user: no I/O
    encoder = msgspec.json.Encoder()
    reqs = make_requests(requests)
    route: list[float] = []
    auction: list[float] = []
    rng = random.Random(1)
    for r in reqs:
        started = time.perf_counter()
        encoder.encode(await explain_query(state, insight, None, _query(r)))
        route.append(time.perf_counter() - started)
        started = time.perf_counter()
        run_auction(insight.index, r, time.time(), reserve_cpm_units=config.reserve_cpm_units, rng=rng)
        auction.append(time.perf_counter() - started)
    (p50, p99), (a50, a99) = _quantiles(route), _quantiles(auction)
    print(f"explain over {campaigns:,} campaigns, {requests} requests: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"live auction on the same index (reference): p50 {a50 * 1000:.1f} µs, p99 {a99 * 1000:.1f} µs")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--campaigns", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.campaigns, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
