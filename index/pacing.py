"""Pacing math: time slots and the budget each slot may spend, plus the injectable clock.

Slots are aligned to the epoch (slot ``n`` covers ``[n·slot_s, (n+1)·slot_s)``), so every worker and the
pacer agree on the current slot id without talking to each other; a flight's slots are the aligned slots
it overlaps. Unspent budget is not lost: the next slot's budget is recomputed from what remains.
"""

from __future__ import annotations

import time
from typing import Protocol

from index.campaign import SLOT_S


class Clock(Protocol):
    """Source of the current time, UTC epoch seconds; injected so tests control time."""

    def now(self) -> float: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests, simulations)."""

    def __init__(self, now_s: float = 0.0) -> None:
        self._now_s = now_s

    def now(self) -> float:
        return self._now_s

    def set(self, now_s: float) -> None:
        self._now_s = now_s

    def advance(self, delta_s: float) -> None:
        self._now_s += delta_s


def slot_id(now_s: float, slot_s: int = SLOT_S) -> int:
    """The epoch-aligned slot containing ``now_s``."""
    return int(now_s // slot_s)


def slot_bounds(slot: int, slot_s: int = SLOT_S) -> tuple[int, int]:
    """Start (inclusive) and end (exclusive) of a slot, epoch seconds."""
    return slot * slot_s, (slot + 1) * slot_s


def remaining_slots(now_s: float, flight_start_s: int, flight_end_s: int, slot_s: int = SLOT_S) -> int:
    """Slots of the flight from the current one (included) to the last; 0 once the flight has ended.

    Before the flight starts, that is all of its slots.
    """
    if now_s >= flight_end_s or flight_end_s <= flight_start_s:
        return 0
    first = slot_id(max(now_s, flight_start_s), slot_s)
    last = slot_id(flight_end_s - 1, slot_s)  # end is exclusive
    return last - first + 1


def slot_budget(
    remaining_budget_micros: int,
    now_s: float,
    flight_start_s: int,
    flight_end_s: int,
    slot_s: int = SLOT_S,
) -> int:
    """What the current slot may spend: remaining budget spread evenly over the remaining slots.

    Rounded down to the micro; the remainder rolls into later slots (the last slot gets all that is left).
    The budget scripts (``budget.script``) fix a slot's budget when the slot starts: they apply this rule
    with ``now_s`` = the slot's start (``slot_bounds(slot, slot_s)[0]``).
    """
    slots = remaining_slots(now_s, flight_start_s, flight_end_s, slot_s)
    if slots == 0 or remaining_budget_micros <= 0:
        return 0
    return remaining_budget_micros // slots


def planned_slot_budget(budget_micros: int, flight_start_s: int, flight_end_s: int, *, slot_s: int) -> int:
    """The even plan of a flight: ``slot_budget`` at the flight's start with nothing spent, i.e. the
    budget over every epoch-aligned slot the flight overlaps.

    What the budget scripts give the flight's first slot when the campaign's budget is created before its
    flight; later slots get what remains over what is left (``slot_budget``), so this is the plan, not the
    live value (that one is in Redis). ``slot_s`` has no default: it must be the configured slot length.
    """
    return slot_budget(budget_micros, flight_start_s, flight_start_s, flight_end_s, slot_s)
