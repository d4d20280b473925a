"""``bench.index_churn`` measures both arms of a burst and its prune, and leaves the index as it found it."""

from __future__ import annotations

from bench import index_churn


async def test_both_arms_are_measured_and_every_burst_is_pruned() -> None:
    rows = await index_churn.run([600], changes=40, repeats=1)  # run asserts the index's size after each
    assert len(rows) == 1 and rows[0]["changes"] == 40
    for arm in ("plain", "turns"):
        for stage in ("apply", "edit", "prune"):
            assert float(str(rows[0][f"{arm}_{stage}_held_ms"])) >= 0
            assert float(str(rows[0][f"{arm}_{stage}_wall_ms"])) > 0
