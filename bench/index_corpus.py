"""Seeded generator of campaigns and ad requests shaped like the original platform's seed data.

Distributions (from ``campaigns_seed.csv``): ~75% of campaigns target every city, the rest one of the 17
cities with its state; device mostly All, gender mostly All, income mostly All, age 0–0 for ~55%;
cpc 100–1500 micros in steps of 10, cpa 2,000–60,000 in steps of 100 (so bids tie, as in the seed data).
"""

from __future__ import annotations

import random
from typing import Final

from index.campaign import ACTIVE, ALL, DEVICE_TYPES, SLOT_S, Campaign
from index.geo import DEFAULT_GEO
from index.money import cpm_units
from index.pacing import planned_slot_budget
from index.targeting import AdRequest

#: The benchmark's "now": 2025-09-13 12:00 UTC.
NOW_S: Final = 1_757_764_800
_AGE_RANGES: Final = ((20, 30), (25, 35), (20, 40), (35, 50), (20, 45), (50, 60), (60, 70))
_AGE_WEIGHTS: Final = (861, 731, 552, 460, 420, 238, 83)
_DEVICE_WEIGHTS: Final = (649, 91, 363, 50, 71)


def _pick(rng: random.Random, p_all: float, values: tuple[str, ...], weights: tuple[int, ...]) -> str:
    if rng.random() < p_all:
        return ALL
    return rng.choices(values, weights)[0]


def make_campaign(rng: random.Random, n: int) -> Campaign:
    """Campaign number ``n``: ~80% live at ``NOW_S``, ~10% not started yet, ~10% already ended."""
    names, populations = DEFAULT_GEO.city_weights()
    city = _pick(rng, 0.75, names, populations)
    known = DEFAULT_GEO.city(city)
    state = known.state if known is not None else ALL
    age_start, age_end = (0, 0) if rng.random() < 0.55 else rng.choices(_AGE_RANGES, _AGE_WEIGHTS)[0]
    cpc = rng.randrange(100, 1501, 10)
    cpa = rng.randrange(2_000, 60_001, 100)
    budget = rng.randrange(100, 901) * 1_000_000
    phase = rng.random()
    length_s = rng.randrange(1, 25) * 3600
    if phase < 0.8:
        start = NOW_S - rng.randrange(0, length_s)
    elif phase < 0.9:
        start = NOW_S + rng.randrange(1, 86_400)
    else:
        start = NOW_S - length_s - rng.randrange(0, 86_400)
    end = start + length_s
    return Campaign(
        campaign_id=f"c{n:07d}",
        version=1,
        status=ACTIVE,
        action="New Campaign",
        text="",
        category="",
        keywords="",
        target_gender=_pick(rng, 0.77, ("F", "M"), (2, 1)),
        target_age_start=age_start,
        target_age_end=age_end,
        target_city=city,
        target_state=state,
        target_country="India",
        target_income_bucket=_pick(rng, 0.83, ("M", "H", "L"), (888, 339, 67)),
        target_device=_pick(rng, 0.84, DEVICE_TYPES, _DEVICE_WEIGHTS),
        cpc_micros=cpc,
        cpa_micros=cpa,
        cpm_units=cpm_units(cpc, cpa),
        budget_micros=budget,
        flight_start_s=start,
        flight_end_s=end,
        slot_budget_micros=planned_slot_budget(budget, start, end, slot_s=SLOT_S),
    )


def make_campaigns(count: int, seed: int = 42) -> list[Campaign]:
    rng = random.Random(seed)
    return [make_campaign(rng, n) for n in range(count)]


def make_requests(count: int, seed: int = 7) -> list[AdRequest]:
    """Users drawn by city population; ~10% without a city, ~15% without demographics (anonymous)."""
    rng = random.Random(seed)
    names, populations = DEFAULT_GEO.city_weights()
    out: list[AdRequest] = []
    for n in range(count):
        anonymous = rng.random() < 0.15
        out.append(
            AdRequest(
                user_id=f"u{n}",
                device_type=rng.choice(DEVICE_TYPES),
                city=None if rng.random() < 0.1 else rng.choices(names, populations)[0],
                age=None if anonymous else rng.randrange(18, 71),
                gender=None if anonymous else rng.choice(("M", "F")),
                income_bucket=None if anonymous else rng.choice(("L", "M", "H")),
            )
        )
    return out
