"""Even pacing: the probability with which a worker serves an even-paced campaign within a slot.

A slot's budget is spent evenly over the slot when spend follows the line ``target(f) = f · slot_budget``
(``f``: the elapsed fraction of the slot). Every worker reads the campaign's live ``slot_spent`` from Redis
(the budget hash, which the debit script keeps) every tick and moves its serve probability toward what
keeps spend on that line: up when behind, down when ahead, multiplicatively, within ``[MIN_P, 1]``. The
workers need no coordination beyond what Redis already holds: each sees the same spend and applies the
same rule, so together they serve at the rate the line asks. The hard cap stays in the debit script.

``LEAD`` aims a little ahead of the line, so that a slot's budget is used up by its end rather than
undershot by the lag between a serve and its charge (feedback arrives after the ad).
"""

from __future__ import annotations

from typing import Final

#: Lowest serve probability: a throttled campaign still wins now and then, so its spend stays observable.
MIN_P: Final = 0.01
#: Target lead, as a fraction of the slot.
LEAD: Final = 0.02


def target_spent(slot_budget_micros: int, elapsed_fraction: float) -> int:
    """Spend the even line asks for at ``elapsed_fraction`` of the slot (with the lead), micros."""
    f = min(max(elapsed_fraction + LEAD, 0.0), 1.0)
    return int(slot_budget_micros * f)


def next_probability(
    p: float,
    *,
    slot_budget_micros: int,
    slot_spent_micros: int,
    spent_last_tick_micros: int,
    elapsed_fraction: float,
    tick_fraction: float,
) -> float:
    """The serve probability for the next tick: what brings spend back onto the line by the end of the
    next tick, assuming the traffic of the last one (``p`` earned ``spent_last_tick_micros``), so
    ``p · wanted / earned``; without an observation, double (or halve when ahead). Clamped to [MIN_P, 1].

    A slot with no budget serves at 1: the budget filter blocks it anyway."""
    if slot_budget_micros <= 0:
        return 1.0
    wanted = target_spent(slot_budget_micros, elapsed_fraction + tick_fraction) - slot_spent_micros
    if spent_last_tick_micros <= 0:
        scaled = p * 2 if wanted > 0 else p / 2
    else:
        scaled = p * max(wanted, 0) / spent_last_tick_micros
    return min(1.0, max(MIN_P, scaled))
