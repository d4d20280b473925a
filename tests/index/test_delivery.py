"""The pacing-state rule shown to operators (``index.delivery``)."""

from __future__ import annotations

import pytest

from index.delivery import PACE_STATES, PaceState, expected_spend_micros, pace_state

BUDGET = 1_000_000_000  # 1,000 units
START, END = 0, 100_000


def state(spent: int, now_s: float, **kw: object) -> PaceState:
    args: dict[str, object] = dict(
        active=True, budget_micros=BUDGET, spent_micros=spent, flight_start_s=START, flight_end_s=END,
        now_s=now_s, blocked=False,
    )  # fmt: skip
    args.update(kw)
    return pace_state(**args)  # type: ignore[arg-type]  # the keyword arguments above, typed by the rule


def test_expected_spend_is_the_even_plan() -> None:
    assert expected_spend_micros(BUDGET, START, END, -5) == 0
    assert expected_spend_micros(BUDGET, START, END, 50_000) == BUDGET // 2
    assert expected_spend_micros(BUDGET, START, END, END) == BUDGET
    assert expected_spend_micros(BUDGET, 10, 10, 5) == BUDGET  # empty flight: nothing left to plan


@pytest.mark.parametrize(
    ("spent", "now_s", "extra", "want"),
    [
        (0, 50_000, {"active": False}, "stopped"),
        (0, -1, {}, "not started"),
        (0, END, {}, "flight over"),
        (BUDGET, 50_000, {}, "blocked"),
        (10, 50_000, {"blocked": True}, "blocked"),
        (10, 50_000, {"slot_budget_micros": 5, "slot_spent_micros": 5}, "blocked"),
        (BUDGET // 2, 50_000, {}, "on pace"),
        (BUDGET // 2 + BUDGET // 20 - 1, 50_000, {}, "on pace"),  # inside 10% of the plan
        (BUDGET // 2 + BUDGET // 20 + 1, 50_000, {}, "ahead"),
        (BUDGET // 2 - BUDGET // 20 - 1, 50_000, {}, "behind"),
        (0, 10, {"planned_slot_micros": BUDGET // 100}, "on pace"),  # first moments: one slot of slack
        (0, 10_000, {"planned_slot_micros": BUDGET // 100}, "behind"),
    ],
)
def test_rule(spent: int, now_s: float, extra: dict[str, object], want: PaceState) -> None:
    assert state(spent, now_s, **extra) == want
    assert want in PACE_STATES


def test_stopped_wins_over_everything() -> None:
    assert state(BUDGET, END + 1, active=False, blocked=True) == "stopped"
