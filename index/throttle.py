"""Even pacing: the probability with which a worker serves an even-paced campaign within a slot.

A slot's budget is spent evenly over the slot when spend follows the line ``target(f) = f · slot_budget``
(``f``: the elapsed fraction of the slot). Every tick, every worker reads the campaign's live
``slot_spent`` from Redis (the budget hash, which the debit script keeps) and sets its serve probability
to what brings spend back onto the line by the next tick: ``wanted / rate``, where ``rate`` is what the
campaign spends per tick when served at probability 1, estimated as (mean spend per tick) / (mean
probability) over the recent ticks (exponentially weighted; ticks without a charge included, so a
campaign with a few charges per slot is estimated without bias; a tick at a tiny probability weighs
little, so the ticks a campaign spends ahead of its line, throttled to the floor, do not drag the
estimate down and make the next slot open with a burst). The workers need no coordination beyond what
Redis already holds: each sees the same spend and applies the same rule, so together they serve at the
rate the line asks. The estimate carries over slot boundaries (traffic changes little in ten minutes), so
a slot does not open with a burst. The hard cap stays in the debit script.

``LEAD`` aims a little ahead of the line, so that a slot's budget is used up by its end rather than
undershot by the lag between a serve and its charge (feedback arrives after the ad).
"""

from __future__ import annotations

from typing import Final, NamedTuple

#: Lowest serve probability: a throttled campaign still wins now and then, so its spend stays observable.
MIN_P: Final = 0.001
#: Target lead, as a fraction of the slot.
LEAD: Final = 0.02
#: Memory of the rate estimate, as a fraction of the slot (150 s of a 10-minute slot): long enough that a
#: campaign with a charge or two per slot keeps its estimate from one charge to the next (a short memory
#: forgets it, the probability climbs back to 1 and the next slot opens with a burst), short against the
#: daily curve.
RATE_MEMORY: Final = 0.25


class ThrottleState(NamedTuple):
    """One campaign's serve probability, and the weighted means of its spend per tick and of the
    probability it was served at (None: nothing observed yet)."""

    p: float = 1.0
    spent_mean_micros: float | None = None
    p_mean: float = 0.0

    @property
    def rate_micros(self) -> float | None:
        """Spend per tick at probability 1 (None: not known yet)."""
        if self.spent_mean_micros is None or self.p_mean <= 0:
            return None
        return self.spent_mean_micros / self.p_mean


def target_spent(slot_budget_micros: int, elapsed_fraction: float) -> int:
    """Spend the even line asks for at ``elapsed_fraction`` of the slot (with the lead), micros."""
    f = min(max(elapsed_fraction + LEAD, 0.0), 1.0)
    return int(slot_budget_micros * f)


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

    Ahead of the line: ``MIN_P``. Behind it: ``wanted / rate`` clamped to [MIN_P, 1], or double while
    the rate is not known (nothing earned yet). A slot with no budget serves at 1: the budget filter
    blocks it anyway."""
    spent_mean, p_mean = state.spent_mean_micros, state.p_mean
    # A tick that began with the slot's budget spent tells nothing: the campaign was blocked.
    if earned_micros is not None and slot_spent_micros - earned_micros < slot_budget_micros:
        if spent_mean is None:
            spent_mean, p_mean = float(earned_micros), state.p
        else:
            weight = min(1.0, tick_fraction / RATE_MEMORY)
            spent_mean += weight * (earned_micros - spent_mean)
            p_mean += weight * (state.p - p_mean)
    observed = ThrottleState(state.p, spent_mean, p_mean)
    rate = observed.rate_micros
    if slot_budget_micros <= 0:
        return observed._replace(p=1.0)
    wanted = target_spent(slot_budget_micros, elapsed_fraction + tick_fraction) - slot_spent_micros
    if wanted <= 0:
        p = MIN_P
    elif rate is None or rate <= 0:
        p = state.p * 2
    else:
        p = wanted / rate
    return observed._replace(p=min(1.0, max(MIN_P, p)))
