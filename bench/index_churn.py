"""A burst of campaign changes and of ended flights in a worker's index: the longest it holds the event loop
(what a request arriving then waits), beside the same work done in one go, by the number of campaigns.

    python -m bench.index_churn [--campaigns 10000,100000] [--changes 2000] [--repeats 3]

In process, no service: an index of ``--campaigns`` generated campaigns (``bench.index_corpus``, candidate
lists warmed), then ``--changes`` new live campaigns applied one by one, as ``ad-changes``' tail applies a
burst (a bulk upload), then an edit of each that keeps its bid and location (a new budget: a bulk budget
change), then the same campaigns pruned once their flights have ended (flights that all end at midnight).
Two arms alternate, each ``--repeats`` times: ``turns``, as the tail does it (a turn of the event loop every
``adplatform.index_feed.TURN_S``, ``prune_in_turns``), and ``plain``, the reference: every change then every
prune in one go, as the tail did before. The hold is the longest a 0.5 ms sampler task waited past its time
(median over the repeats); the wall time, how long the burst took to apply (best).
Saves JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
from collections.abc import Awaitable, Callable

import msgspec

from adplatform.cli.common import script_main
from adplatform.index_feed import LoopTurns, prune_in_turns
from bench.http_stack import save_results
from bench.index_corpus import NOW_S, make_campaigns
from bench.loop_hold import held
from index.campaign import Campaign
from index.geo import DEFAULT_GEO
from index.index import TargetingIndex

#: The burst's flights: live at ``NOW_S``, all ended at ``ENDED_S``.
FLIGHT_S = 3600
ENDED_S = NOW_S + FLIGHT_S

Work = Callable[[], Awaitable[None]]


def burst(changes: int, tag: str) -> list[Campaign]:
    """``changes`` new campaigns, live at ``NOW_S``, ended at ``ENDED_S``."""
    return [
        msgspec.structs.replace(
            c, campaign_id=f"{tag}-{c.campaign_id}", flight_start_s=NOW_S - 60, flight_end_s=ENDED_S
        )
        for c in make_campaigns(changes, seed=hash(tag) & 0xFFFF)
    ]


def edited(campaigns: list[Campaign]) -> list[Campaign]:
    """Each campaign's next version with a new budget (same bid, same place)."""
    return [
        msgspec.structs.replace(c, version=c.version + 1, budget_micros=c.budget_micros * 2)
        for c in campaigns
    ]


async def apply_turns(index: TargetingIndex, campaigns: list[Campaign]) -> None:
    turns = LoopTurns()
    for campaign in campaigns:  # the tail's loop (``IndexFeed._tail``), without the decoding
        index.apply(campaign)
        if turns.due():
            await turns.give()


async def apply_plain(index: TargetingIndex, campaigns: list[Campaign]) -> None:
    for campaign in campaigns:
        index.apply(campaign)


async def prune_plain(index: TargetingIndex) -> None:
    index.prune(ENDED_S)


async def prune_turns(index: TargetingIndex) -> None:
    await prune_in_turns(index, ENDED_S)


async def run(sizes: list[int], changes: int, repeats: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in sizes:
        index = TargetingIndex(DEFAULT_GEO)
        # The corpus's live campaigns only (its ended ones would be pruned by the first prune).
        index.apply_all(c for c in make_campaigns(n) if c.flight_end_s > ENDED_S)
        index.warm()
        indexed = len(index)
        measured: dict[str, dict[str, list[tuple[float, float]]]] = {
            arm: {"apply": [], "edit": [], "prune": []} for arm in ("plain", "turns")
        }
        for r in range(repeats):
            for arm in ("plain", "turns"):  # alternating
                campaigns = burst(changes, f"{arm}{r}")
                apply, prune = (apply_plain, prune_plain) if arm == "plain" else (apply_turns, prune_turns)
                edits = edited(campaigns)
                stages: dict[str, Work] = {
                    "apply": functools.partial(apply, index, campaigns),
                    "edit": functools.partial(apply, index, edits),
                    "prune": functools.partial(prune, index),
                }
                for stage, work in stages.items():
                    run_ = await held(work)
                    measured[arm][stage].append((run_.wall_s, run_.held_s))
                assert len(index) == indexed, "the burst was not pruned whole"
        row: dict[str, object] = {"campaigns": indexed, "changes": changes}
        for arm, by_stage in measured.items():
            for stage, m in by_stage.items():
                row[f"{arm}_{stage}_held_ms"] = round(statistics.median(h for _, h in m) * 1000, 2)
                row[f"{arm}_{stage}_wall_ms"] = round(min(w for w, _ in m) * 1000, 1)
        rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.index_churn", description=__doc__)
    parser.add_argument("--campaigns", default="10000,100000", help="comma list of generated campaigns")
    parser.add_argument("--changes", type=int, default=2000, help="new campaigns in the burst")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm and size (alternating)")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.campaigns.split(",") if n]
    rows = asyncio.run(run(sizes, args.changes, args.repeats))
    for r in rows:
        for stage in ("apply", "edit", "prune"):
            print(
                f"{r['campaigns']:>7,} live, {stage} {r['changes']:,}: loop held "
                f"{r[f'turns_{stage}_held_ms']:>6.1f} ms (plain {r[f'plain_{stage}_held_ms']:>7.1f}); "
                f"done in {r[f'turns_{stage}_wall_ms']:>7.1f} ms (plain {r[f'plain_{stage}_wall_ms']:>7.1f})"
            )
    save_results("index-churn", vars(args), rows, label=args.label)
    return 0


if __name__ == "__main__":
    sys.exit(script_main(lambda: main(sys.argv[1:])))
