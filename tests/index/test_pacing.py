from __future__ import annotations

from index.pacing import (
    Clock,
    ManualClock,
    SystemClock,
    planned_slot_budget,
    remaining_slots,
    slot_bounds,
    slot_budget,
    slot_id,
)

H = 3600


def test_slot_id_and_bounds() -> None:
    assert slot_id(0) == 0
    assert slot_id(599.9) == 0
    assert slot_id(600) == 1
    assert slot_id(125, slot_s=60) == 2
    assert slot_bounds(3) == (1800, 2400)


def test_remaining_slots() -> None:
    start, end = 5 * H, 18 * H  # 13 hours: 78 slots
    assert remaining_slots(0, start, end) == 78  # before the flight: all of them
    assert remaining_slots(start, start, end) == 78
    assert remaining_slots(start + 599, start, end) == 78  # the current slot counts
    assert remaining_slots(start + 600, start, end) == 77
    assert remaining_slots(end - 1, start, end) == 1
    assert remaining_slots(end, start, end) == 0
    assert remaining_slots(start, start, start) == 0
    # An unaligned flight counts every aligned slot it overlaps.
    assert remaining_slots(0, 300, 900) == 2


def test_slot_budget_spreads_and_rolls_over() -> None:
    start, end = 0, 3 * 600
    assert slot_budget(1_000, 0, start, end) == 333
    # Spent 333 in slot 0: the 1-micro remainder rolls into later slots.
    assert slot_budget(667, 600, start, end) == 333
    assert slot_budget(334, 1200, start, end) == 334  # the last slot gets all that is left
    assert slot_budget(334, 1800, start, end) == 0
    assert slot_budget(-5, 0, start, end) == 0
    assert slot_budget(100, 0, 0, 100, slot_s=10) == 10


def test_planned_slot_budget_is_the_first_slot_budget_of_the_flight() -> None:
    assert planned_slot_budget(1_000, 0, 3 * 600, slot_s=600) == 333
    assert planned_slot_budget(1_000, 300, 900, slot_s=600) == 500  # an unaligned flight: 2 aligned slots
    assert planned_slot_budget(1_000, 300, 900, slot_s=60) == 100
    assert planned_slot_budget(1_000, 900, 900, slot_s=60) == 0  # an empty flight plans nothing


def test_clocks() -> None:
    manual = ManualClock(10.0)
    clocks: list[Clock] = [manual, SystemClock()]
    manual.advance(5)
    assert clocks[0].now() == 15.0
    manual.set(1.0)
    assert manual.now() == 1.0
    assert clocks[1].now() > 1_700_000_000
