"""Even pacing: the probability with which a worker serves an even-paced campaign within a slot.

Every tick, every worker reads the campaign's live ``slot_spent`` from Redis (the budget hash, which the
debit script keeps) and sets its serve probability so that the campaign's *expected* spend over the next
tick is what is left of the slot's budget spread evenly over what is left of the slot:
``p = wanted / rate``, ``wanted = (slot_budget - slot_spent) · tick / (time left)``, where ``rate`` is what
the campaign spends per tick when served at probability 1, estimated as (spend per tick) / (probability)
over the recent ticks (both exponentially weighted sums; ticks without a charge included, so a
campaign with a few charges per slot is estimated without bias). The workers need no coordination beyond
what Redis already holds: each sees the same spend and applies the same rule, so together they serve at the
rate the slot asks. The estimate carries over slot boundaries (traffic changes little in ten minutes), so
a new slot opens at its own budget's rate: the probability that ended the last slot, scaled by the new
slot's budget over the old one's, as far as the old one was on pace.

Why the rate of what is left, and not "back onto the line by the next tick": charges are lumpy (a click
costs a whole cpc, often a tenth of a slot's budget or more). A rule that closes the gap to the line
within one tick serves at a high probability as soon as the line is a fraction of a charge ahead, so the
slot's first charge comes almost at once, and a slot of a few charges spends half of them in its first
tenth (``bench.pacing``: 30% of all even spend in the first tenth of its slot, asap's sawtooth 28%). Aimed
at the rate of what is left, each charge is as likely at any moment of the slot, and the expected spend
follows the even line; a charge that comes early lowers the rate for the rest of the slot, one that comes
late raises it. The rate never needs to go below 0 (spend cannot pass the slot's budget: the debit script
caps it), so the probability floor does not bias spend upwards.

A campaign whose rate is not known yet (nothing earned since it was first seen) serves at ``START_P``
(1: a new campaign serves at once, as its owner expects; a soft start at 0.01 left every new even
campaign unserved for its first minute) and its first charges show its rate; below 1 it would double
every ``RAMP_DOUBLING`` of a slot. ``LEAD`` aims to spend the slot's budget a little before its end, so
that it is used up rather than undershot by the lag between a serve and its charge (feedback arrives
after the ad). The hard cap stays in the debit script.
"""

from __future__ import annotations

from typing import Final, NamedTuple

#: Lowest serve probability: a throttled campaign still wins now and then, so its spend stays observable.
MIN_P: Final = 0.001
#: The slot's budget is aimed to be spent by ``1 - LEAD`` of the slot.
LEAD: Final = 0.02
#: Memory of the rate estimate, as a fraction of the slot (a 10-minute slot): long enough that a campaign
#: with a charge or two per slot keeps its estimate from one charge to the next (a memory of a quarter slot
#: forgot it, so the probability climbed until the next charge and charges bunched up mid-slot), short
#: against the daily curve; within the slot, the rule's feedback corrects what the estimate misses.
RATE_MEMORY: Final = 1.0
#: Serve probability of a campaign whose rate is not known yet (first seen, nothing earned so far).
START_P: Final = 1.0
#: While the rate is not known, the probability doubles every this fraction of a slot (10 s of a 10-minute
#: slot: 1 after ~7 doublings, 11% of the slot), whatever the tick.
RAMP_DOUBLING: Final = 1 / 60


class ThrottleState(NamedTuple):
    """One campaign's serve probability, and the exponentially weighted sums of its spend per tick and of
    the probability it was served at (sums, not means, so the first observation weighs no more than
    any other: a mean seeded with it would carry one lucky or unlucky tick for a whole memory)."""

    p: float = START_P
    spent_sum_micros: float = 0.0
    p_sum: float = 0.0

    @property
    def rate_micros(self) -> float | None:
        """Spend per tick at probability 1 (None: not known yet, nothing earned so far)."""
        if self.spent_sum_micros <= 0 or self.p_sum <= 0:
            return None
        return self.spent_sum_micros / self.p_sum


def wanted_per_tick(
    slot_budget_micros: int, slot_spent_micros: int, *, elapsed_fraction: float, tick_fraction: float
) -> float:
    """Spend to aim for in the next tick: what is left of the slot's budget spread evenly over what is
    left of the slot (up to ``1 - LEAD`` of it; all of it in the last tick), micros."""
    left = slot_budget_micros - slot_spent_micros
    if left <= 0:
        return 0.0
    time_left = 1.0 - LEAD - elapsed_fraction
    return left * min(1.0, tick_fraction / time_left) if time_left > 0 else float(left)


def next_state(
    state: ThrottleState,
    *,
    slot_budget_micros: int,
    slot_spent_micros: int,
    earned_micros: int | None,
    elapsed_fraction: float,
    tick_fraction: float,
) -> ThrottleState:
    """The state for the next tick. ``earned_micros``: what the campaign spent during the last tick, served
    at ``state.p`` (None when unknown, e.g. across a slot boundary: the estimate is then kept).

    ``wanted_per_tick / rate`` clamped to [MIN_P, 1]; the slot's budget spent: ``MIN_P``; the rate not
    known (nothing earned yet): the ramp from ``START_P``. A slot with no budget serves at 1: the budget
    filter blocks it anyway."""
    spent_sum, p_sum = state.spent_sum_micros, state.p_sum
    # A tick that began with the slot's budget spent tells nothing: the campaign was blocked.
    if earned_micros is not None and slot_spent_micros - earned_micros < slot_budget_micros:
        keep = 1.0 - min(1.0, tick_fraction / RATE_MEMORY)
        spent_sum = keep * spent_sum + earned_micros
        p_sum = keep * p_sum + state.p
    observed = ThrottleState(state.p, spent_sum, p_sum)
    rate = observed.rate_micros
    if slot_budget_micros <= 0:
        return observed._replace(p=1.0)
    wanted = wanted_per_tick(
        slot_budget_micros, slot_spent_micros, elapsed_fraction=elapsed_fraction, tick_fraction=tick_fraction
    )
    if wanted <= 0:
        p = MIN_P
    elif rate is None or rate <= 0:
        p = max(state.p, START_P) * 2 ** (tick_fraction / RAMP_DOUBLING)
    else:
        p = wanted / rate
    return observed._replace(p=min(1.0, max(MIN_P, p)))
