"""Even pacing's serve probability: the rule alone, and slots simulated with several workers."""

from __future__ import annotations

import random

import pytest

from index.throttle import MIN_P, ThrottleState, next_state, target_spent


def _at_half(state: ThrottleState, spent: int, earned: int | None) -> ThrottleState:
    return next_state(
        state, slot_budget_micros=1_000_000, slot_spent_micros=spent, earned_micros=earned,
        elapsed_fraction=0.5, tick_fraction=0.01,
    )  # fmt: skip


def test_behind_raises_ahead_lowers_and_bounds_hold() -> None:
    # The first observation sets the rate: 10,000 earned at p 0.5 is 20,000 a tick at p 1; on the line
    # (530,000 wanted by the next tick, 520,000 spent), 10,000 more is p 0.5 again.
    first = _at_half(ThrottleState(0.5), 520_000, 10_000)
    assert first == ThrottleState(0.5, 10_000.0, 0.5) and first.rate_micros == 20_000
    assert _at_half(ThrottleState(0.5), 100_000, 10_000).p == 1.0  # far behind
    assert _at_half(ThrottleState(0.5), 900_000, 10_000).p == MIN_P  # ahead
    assert _at_half(ThrottleState(0.2), 0, None) == ThrottleState(0.4)  # behind, rate unknown: double
    known = ThrottleState(0.5, 10_000.0, 0.5)  # 20,000 a tick at p 1
    assert _at_half(known, 0, None).rate_micros == 20_000  # no observation: kept
    # A tick without a charge is an observation too, weighing 0.01 / 0.25 (at p 0.5: 10,000 x 0.96 /
    # 0.5); the same tick at the floor probability hardly moves the estimate.
    assert _at_half(known, 520_000, 0).rate_micros == pytest.approx(19_200)
    assert _at_half(known._replace(p=MIN_P), 520_000, 0).rate_micros == pytest.approx(
        9_600 / (0.48 + 0.04 * MIN_P)
    )
    assert _at_half(known, 1_000_000, 0).rate_micros == 20_000  # began blocked: no news
    free = next_state(ThrottleState(0.3), slot_budget_micros=0, slot_spent_micros=0, earned_micros=0,
                      elapsed_fraction=0.1, tick_fraction=0.01)  # fmt: skip
    assert free.p == 1.0
    assert target_spent(1_000_000, 1.5) == 1_000_000 and target_spent(1_000_000, -1) == 0


def _slot(*, price: int, requests: int, seed: int, slots: int = 1) -> tuple[list[int], int]:
    """Three workers, each with ``requests`` eligible requests per tick (600 ticks a slot), the shared
    spend capped by the slot budget as the debit script caps it; each worker reads only the slot's total
    spend (Redis) once per tick, and keeps its state across slots. Returns the last slot's spend per tenth
    and in all."""
    rng = random.Random(seed)
    budget, ticks, workers = 600_000, 600, 3
    states = [ThrottleState()] * workers
    last_read: list[int | None] = [None] * workers
    for _ in range(slots):
        spent = 0
        tenths = [0] * 10
        last_read = [None] * workers  # a new slot: what was earned at its end is not known
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
    return tenths, spent


def test_a_slot_with_plenty_of_traffic_spends_evenly() -> None:
    """A price of 200 per serve and 5x the traffic the slot needs: each tenth of the slot spends its tenth
    of the budget within 3% of the budget, and the slot ends at least 97% spent."""
    tenths, spent = _slot(price=200, requests=50, seed=7)
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
