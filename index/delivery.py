"""A campaign's pacing state for operators: on pace, ahead, behind, blocked, flight over (and the two states
before and after a campaign's life: not started, stopped).

Pure: the stored campaign's numbers, the live money from Redis and ``now`` in, one word out. The even plan
says a campaign should have spent ``budget · elapsed / flight`` by ``now``; "ahead" and "behind" are outside
a tolerance of that plan: ``TOLERANCE_PCT`` percent of it, and never less than one slot's worth of the plan,
so a young flight with a few charges (or none in its first slot) does not flap between the two.
"""

from __future__ import annotations

from typing import Final, Literal

PaceState = Literal["stopped", "not started", "flight over", "blocked", "ahead", "behind", "on pace"]
PACE_STATES: Final[tuple[PaceState, ...]] = (
    "stopped",
    "not started",
    "flight over",
    "blocked",
    "ahead",
    "behind",
    "on pace",
)
#: Spend within this many percent of the even plan (or within one planned slot of it) is on pace.
TOLERANCE_PCT: Final = 10


def expected_spend_micros(budget_micros: int, flight_start_s: int, flight_end_s: int, now_s: float) -> int:
    """What the even plan has spent by ``now_s``: the budget times the elapsed share of the flight,
    rounded down to the micro (clamped to 0 before the flight and to the budget after it)."""
    duration_s = flight_end_s - flight_start_s
    if duration_s <= 0 or now_s >= flight_end_s:
        return budget_micros
    if now_s <= flight_start_s:
        return 0
    elapsed_ms = int((now_s - flight_start_s) * 1000)
    return budget_micros * elapsed_ms // (duration_s * 1000)


def pace_state(
    *,
    active: bool,
    budget_micros: int,
    spent_micros: int,
    flight_start_s: int,
    flight_end_s: int,
    now_s: float,
    blocked: bool,
    slot_budget_micros: int | None = None,
    slot_spent_micros: int | None = None,
    planned_slot_micros: int = 0,
) -> PaceState:
    """The rule, first match wins: stopped (Inactive) → not started → flight over → blocked (in the ad
    servers' blocked set, total budget spent, or the current slot's budget spent) → ahead / behind the even
    plan by more than the tolerance → on pace."""
    if not active:
        return "stopped"
    if now_s < flight_start_s:
        return "not started"
    if now_s >= flight_end_s:
        return "flight over"
    slot_spent_out = (
        slot_budget_micros is not None
        and slot_spent_micros is not None
        and slot_spent_micros >= slot_budget_micros
    )
    if blocked or spent_micros >= budget_micros or slot_spent_out:
        return "blocked"
    expected = expected_spend_micros(budget_micros, flight_start_s, flight_end_s, now_s)
    tolerance = max(expected * TOLERANCE_PCT // 100, planned_slot_micros)
    if spent_micros > expected + tolerance:
        return "ahead"
    if spent_micros < expected - tolerance:
        return "behind"
    return "on pace"
