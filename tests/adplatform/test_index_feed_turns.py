"""The index feed's long synchronous loops (a burst of changes, a prune of many ended flights) give the
event loop its turns: other tasks run between their steps, and the result is the same as in one go."""

from __future__ import annotations

import asyncio

from adplatform.index_feed import LoopTurns, prune_in_turns
from index.index import TargetingIndex
from tests.index.index_factory import NOW_S, campaign, request


async def test_a_prune_in_turns_lets_other_tasks_run_between_its_steps() -> None:
    index = TargetingIndex()
    index.warm()
    for i in range(12):
        index.apply(campaign(campaign_id=f"ended-{i}", flight_start_s=NOW_S - 20, flight_end_s=NOW_S))
    index.apply(campaign(campaign_id="live"))
    progress: list[int] = []

    async def serving() -> None:  # a request served meanwhile sees a partly pruned index, never a broken one
        while True:
            progress.append(len(index))
            await asyncio.sleep(0)

    other = asyncio.create_task(serving())
    await asyncio.sleep(0)
    turns = LoopTurns(turn_s=0.0)  # every step is due: a turn after each campaign
    assert await prune_in_turns(index, NOW_S, turns) == 12
    other.cancel()
    assert turns.given == 12 and len(index) == 1
    assert [c.campaign_id for c in index.eligible(request(), NOW_S)] == ["live"]
    assert len(set(progress)) >= 12  # the other task saw the index shrink step by step


async def test_turns_are_due_only_after_their_budget() -> None:
    turns = LoopTurns(turn_s=3600.0)
    assert not turns.due()
    await turns.give()
    assert turns.given == 1 and not turns.due()
