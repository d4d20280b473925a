"""Even pacing's serve probability: the rule alone, and a slot simulated with several workers."""

from __future__ import annotations

import random

from index.throttle import MIN_P, next_probability, target_spent


def test_behind_raises_ahead_lowers_and_bounds_hold() -> None:
    def at_half(p: float, spent: int, last_tick: int) -> float:
        return next_probability(
            p, slot_budget_micros=1_000_000, slot_spent_micros=spent, spent_last_tick_micros=last_tick,
            elapsed_fraction=0.5, tick_fraction=0.01,
        )  # fmt: skip

    # On the line (target 530,000 by the next tick): the same probability earns what the next tick needs.
    assert at_half(0.5, 520_000, 10_000) == 0.5
    assert at_half(0.5, 100_000, 10_000) == 1.0
    assert at_half(0.5, 900_000, 10_000) == MIN_P
    assert at_half(0.2, 0, 0) == 0.4
    assert at_half(0.2, 900_000, 0) == 0.1
    assert next_probability(0.3, slot_budget_micros=0, slot_spent_micros=0, spent_last_tick_micros=0,
                            elapsed_fraction=0.1, tick_fraction=0.01) == 1.0  # fmt: skip
    assert target_spent(1_000_000, 1.5) == 1_000_000 and target_spent(1_000_000, -1) == 0


def test_a_slot_with_plenty_of_traffic_spends_evenly() -> None:
    """Three workers, each with 50 eligible requests per tick (a price of 200 per serve, 5x what the slot
    needs), the shared spend capped by the budget as the debit script caps it; each worker reads only the
    slot's total spend (Redis) once per tick: each tenth of the slot spends its tenth of the budget within
    3% of the budget, and the slot ends at least 97% spent."""
    rng = random.Random(7)
    budget, price, ticks, workers = 600_000, 200, 600, 3
    spent = 0
    probabilities = [1.0] * workers
    last_read = [0] * workers  # the slot_spent each worker read from Redis at its previous tick
    tenths = [0] * 10
    for tick in range(ticks):
        f = tick / ticks
        for w in range(workers):
            if tick:
                probabilities[w] = next_probability(
                    probabilities[w], slot_budget_micros=budget, slot_spent_micros=spent,
                    spent_last_tick_micros=spent - last_read[w], elapsed_fraction=f, tick_fraction=1 / ticks,
                )  # fmt: skip
            last_read[w] = spent
            for _ in range(50):
                if spent + price <= budget and rng.random() < probabilities[w]:
                    spent += price
                    tenths[tick * 10 // ticks] += price
    assert spent >= 0.97 * budget
    for share in tenths:
        assert abs(share - budget / 10) <= 0.03 * budget, tenths
