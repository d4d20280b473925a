"""Even pacing's serve probability: the rule alone, and slots simulated with several workers."""

from __future__ import annotations

import random

import pytest

from index.throttle import (
    LEAD,
    MIN_P,
    RAMP_DOUBLING,
    RATE_MEMORY,
    START_P,
    ThrottleState,
    next_state,
    wanted_per_tick,
)


def _at_half(state: ThrottleState, spent: int, earned: int | None) -> ThrottleState:
    return next_state(
        state, slot_budget_micros=1_000_000, slot_spent_micros=spent, earned_micros=earned,
        elapsed_fraction=0.5, tick_fraction=0.01,
    )  # fmt: skip


def test_the_rate_of_what_is_left_and_bounds_hold() -> None:
    # Half-way through the slot, a tick 1% of it: what is left is aimed at over the 48% of the slot left
    # before the lead, so 480,000 left is 10,000 a tick. The first observation sets the rate: 10,000
    # earned at p 0.5 is 20,000 a tick at p 1, hence p 0.5 again.
    first = _at_half(ThrottleState(0.5), 520_000, 10_000)
    assert first[1:] == (10_000.0, 0.5) and first.rate_micros == 20_000 and first.p == pytest.approx(0.5)
    assert _at_half(ThrottleState(0.5), 0, 10_000).p == 1.0  # far behind: 20,833 a tick wanted
    # Ahead of the even line (900,000 at half-way): what is left is still spread, not stopped, since a
    # charge that came early must not make the rest of the slot wait.
    assert _at_half(ThrottleState(0.5), 910_000, 10_000).p == pytest.approx(90_000 / 48 / 20_000)
    assert _at_half(ThrottleState(0.5), 1_000_000, 10_000).p == MIN_P  # the slot's budget spent: the floor
    assert ThrottleState().p == START_P == 1.0  # first sight, rate unknown: a new campaign serves at once
    ramped = _at_half(ThrottleState(0.2), 0, None)
    assert ramped.p == pytest.approx(min(1.0, max(0.2, START_P) * 2 ** (0.01 / RAMP_DOUBLING)))
    assert ramped.rate_micros is None
    assert _at_half(ThrottleState(MIN_P), 0, None).p == pytest.approx(
        min(1.0, START_P * 2 ** (0.01 / RAMP_DOUBLING))
    )
    # A long history of 10,000 a tick at p 0.5 (weighted sums): 20,000 a tick at p 1.
    w = 0.01 / RATE_MEMORY
    known = ThrottleState(0.5, 10_000 / w, 0.5 / w)
    assert _at_half(known, 0, None).rate_micros == pytest.approx(20_000)  # no observation: kept
    # A tick without a charge is an observation too; the same tick at the floor probability hardly moves
    # the estimate.
    k = 1 - w
    assert _at_half(known, 520_000, 0).rate_micros == pytest.approx(20_000 * k / (k + w))
    assert _at_half(known._replace(p=MIN_P), 520_000, 0).rate_micros == pytest.approx(
        20_000 * k / (k + 2 * w * MIN_P)
    )
    assert _at_half(known, 1_000_000, 0).rate_micros == pytest.approx(20_000)  # began blocked: no news
    free = next_state(ThrottleState(0.3), slot_budget_micros=0, slot_spent_micros=0, earned_micros=0,
                      elapsed_fraction=0.1, tick_fraction=0.01)  # fmt: skip
    assert free.p == 1.0


def test_wanted_spreads_what_is_left_over_what_is_left() -> None:
    def wanted(spent: int, elapsed: float) -> float:
        return wanted_per_tick(980_000, spent, elapsed_fraction=elapsed, tick_fraction=0.01)

    assert wanted(0, 0.0) == pytest.approx(10_000)  # the even line's rate, ending at 1 - LEAD
    assert wanted(490_000, 0.49) == pytest.approx(10_000)  # on the line: the same
    assert wanted(0, 0.49) == pytest.approx(20_000)  # behind: faster
    assert wanted(735_000, 0.49) == pytest.approx(5_000)  # ahead: slower, never 0 while budget is left
    assert wanted(400_000, 1 - LEAD - 0.005) == 580_000  # the last tick: all that is left
    assert wanted(400_000, 0.999) == 580_000 and wanted(980_000, 0.5) == 0 and wanted(990_000, 0.5) == 0


def _slots(
    *, price: int, requests: int, seed: int, slots: int = 1, ticks: int = 600
) -> list[tuple[list[int], int]]:
    """Three workers, each with ``requests`` eligible requests per tick (``ticks`` a slot), the shared
    spend capped by the slot budget as the debit script caps it; each worker reads only the slot's total
    spend (Redis) once per tick, and keeps its state across slots. Returns each slot's spend per tenth
    and in all."""
    rng = random.Random(seed)
    budget, workers = 600_000, 3
    states = [ThrottleState()] * workers
    out = []
    for _ in range(slots):
        spent = 0
        tenths = [0] * 10
        last_read: list[int | None] = [None] * workers  # a new slot: what was earned at its end is unknown
        for tick in range(ticks):
            for w in range(workers):
                seen = last_read[w]
                states[w] = next_state(
                    states[w], slot_budget_micros=budget, slot_spent_micros=spent,
                    earned_micros=None if seen is None else spent - seen, elapsed_fraction=tick / ticks,
                    tick_fraction=1 / ticks,
                )  # fmt: skip
                last_read[w] = spent
                for _ in range(requests):
                    if spent + price <= budget and rng.random() < states[w].p:
                        spent += price
                        tenths[tick * 10 // ticks] += price
        out.append((tenths, spent))
    return out


def _slot(*, price: int, requests: int, seed: int, slots: int = 1) -> tuple[list[int], int]:
    """The last slot of ``_slots``."""
    return _slots(price=price, requests=requests, seed=seed, slots=slots)[-1]


def test_a_slot_with_plenty_of_traffic_spends_evenly() -> None:
    """A price of 200 per serve and 5x the traffic the slot needs, in a campaign's second slot (a new
    campaign serves at once, so its first tick spends about 5 ticks' share before its rate is known):
    each tenth of the slot spends its tenth of the budget within 3% of the budget, and the slot ends at
    least 97% spent."""
    tenths, spent = _slot(price=200, requests=50, seed=7, slots=2)
    assert spent >= 0.97 * 600_000
    for share in tenths:
        assert abs(share - 60_000) <= 0.03 * 600_000, tenths


def test_a_slot_of_few_charges_is_not_front_loaded() -> None:
    """Sparse charges (a price of 20,000: 30 charges fill the slot) and 60x the traffic needed, in a
    campaign's second slot (its rate known from the first): spend is not front-loaded (asap would spend it
    all in the first tenth), within 5% of the budget per tenth on average over seeds, and the slot ends
    at least 90% spent."""
    per_tenth = [0.0] * 10
    seeds = range(10)
    for seed in seeds:
        tenths, spent = _slot(price=20_000, requests=1, seed=seed, slots=2)
        assert spent >= 0.9 * 600_000
        per_tenth = [a + b / len(seeds) for a, b in zip(per_tenth, tenths, strict=True)]
    for share in per_tenth:
        assert abs(share - 60_000) <= 0.05 * 600_000, per_tenth


def test_slots_of_a_few_charges_are_not_front_loaded_at_coarse_ticks() -> None:
    """The pacing simulator's case: 60 ticks a slot, 3 charges fill it (a price of 200,000), 60x the
    traffic needed. Pooled over slots and seeds (after each campaign's first slot), the first tenth of a
    slot takes at most 15% of the spend (asap: all of it; the rule that closed the gap to the even line
    within one tick: 28%), no tenth more than 15%, and slots end at least 95% spent on average."""
    pooled = [0] * 10
    spent = budgets = 0
    for seed in range(8):
        for tenths, slot_spent in _slots(price=200_000, requests=1, seed=seed, slots=25, ticks=60)[1:]:
            pooled = [a + b for a, b in zip(pooled, tenths, strict=True)]
            spent, budgets = spent + slot_spent, budgets + 600_000
    shares = [t / sum(pooled) for t in pooled]
    assert max(shares) <= 0.15, shares
    assert spent >= 0.95 * budgets
