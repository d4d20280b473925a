"""The pacing simulator's world (``bench.pacing``): a seeded day of users, campaigns and traffic.

Traffic follows a daily curve (night trough around 04:00, evening peak at 20:00) around ``peak_rps``.
Users have fixed profiles (city, device, gender, age); campaigns target some of those attributes, bid a
log-normal cpc, start on a slot boundary in the first 16 hours and run 4 to 24 hours (within the day);
a quarter carry a frequency cap. A cap's window is ``1d`` or ``flight`` only: the caps' script counts in
Redis's own clock, in which a simulated day lasts minutes, so a shorter window would never roll there.

A served ad is charged (clicked) with the campaign's charge rate, 0.5 to 1: real click rates are lower,
but then a slot of a few hundred campaigns at a simulated rate Python replays in minutes would see one or
two charges, too few to tell a paced slot from a noisy one (fewer charges make spend noisier, not paced
differently). Budgets are sized from traffic: a campaign's *fair share* is the value (served requests x
click rate x cpc) of the requests it matches during its flight divided by how many campaigns match them
on average; its budget is ``appetite`` x that share, ``appetite`` log-uniform in [0.1, 1.5]. Campaigns with
``appetite <= ENOUGH`` have enough eligible traffic: the delivery figures are about them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

import msgspec

from index.campaign import ALL, Campaign, PacingMode
from index.fcap import FrequencyCap
from index.geo import DEFAULT_GEO
from index.money import cpm_units
from index.pacing import planned_slot_budget
from index.targeting import AdRequest, targets

SLOT_S: Final = 600
DAY_S: Final = 86_400
#: 2026-01-01T00:00:00Z: the simulated day (slot-aligned, so are the flights).
DAY_START_S: Final = 1_767_225_600
#: Traffic by hour of day, as a share of the peak (linear between the points).
CURVE: Final = (0.35, 0.27, 0.2, 0.15, 0.12, 0.15, 0.22, 0.33, 0.45, 0.55, 0.6, 0.63, 0.65, 0.62, 0.6, 0.62,
                0.66, 0.72, 0.82, 0.92, 1.0, 0.9, 0.7, 0.5, 0.35)  # fmt: skip
#: Appetite at or below which a campaign has enough eligible traffic to spend its budget.
ENOUGH: Final = 0.5
DEVICES: Final = ("Android Mobile", "iPhone", "Windows Computer", "Macbook", "Linux Computer")
CAPS: Final = tuple(FrequencyCap(count=n, window_s=w) for n, w in ((2, 86_400), (3, 86_400), (3, 0), (5, 0)))


def rate_share(t_s: float) -> float:
    """The daily curve at ``t_s`` seconds into the day."""
    hour = (t_s % DAY_S) / 3600
    lo = int(hour)
    return CURVE[lo] + (CURVE[lo + 1] - CURVE[lo]) * (hour - lo)


@dataclass(frozen=True)
class World:
    """One seeded day: user profiles (as requests), campaigns with their click rates and appetites."""

    users: list[AdRequest]
    campaigns: list[Campaign]
    click_rate: dict[str, float]
    appetite: dict[str, float]
    peak_rps: float
    day_s: int

    def enough(self, campaign_id: str) -> bool:
        return self.appetite[campaign_id] <= ENOUGH

    def with_mode(self, mode: PacingMode, prefix: str) -> list[Campaign]:
        """The campaigns in ``mode``, their ids prefixed (each mode's run has keys of its own)."""
        return [
            msgspec.structs.replace(c, campaign_id=prefix + c.campaign_id, pacing_mode=mode)
            for c in self.campaigns
        ]


def _users(rng: random.Random, n: int) -> list[AdRequest]:
    cities = [c.name for c in DEFAULT_GEO.cities[:8]]
    return [
        AdRequest(
            user_id=f"u{i}",
            city=rng.choice(cities) if rng.random() < 0.9 else None,
            device_type=rng.choice(DEVICES),
            gender=rng.choice(("M", "F")),
            age=rng.randint(18, 70),
        )
        for i in range(n)
    ]


def _campaign(rng: random.Random, i: int, day_s: int) -> Campaign:
    cities = [c.name for c in DEFAULT_GEO.cities[:8]]
    slots = day_s // SLOT_S
    start_slot = rng.randrange(0, max(1, slots * 2 // 3))
    length = rng.randint(max(1, slots // 6), slots)
    start_s = DAY_START_S + start_slot * SLOT_S
    end_s = min(start_s + length * SLOT_S, DAY_START_S + day_s)
    age = rng.choice(((18, 34), (35, 70))) if rng.random() < 0.25 else (0, 0)
    cpc = max(100, int(math.exp(rng.gauss(math.log(1000), 0.6))))
    return Campaign(
        campaign_id=f"c{i:04d}", version=1, status="Active", action="New Campaign", text=f"ad {i}",
        category="Sim", keywords="sim", target_gender=rng.choice(("M", "F")) if rng.random() < 0.25 else ALL,
        target_age_start=age[0], target_age_end=age[1],
        target_city=rng.choice(cities) if rng.random() < 0.4 else ALL, target_state=ALL, target_country=ALL,
        target_income_bucket=ALL, target_device=rng.choice(DEVICES) if rng.random() < 0.25 else ALL,
        cpc_micros=cpc, cpa_micros=0, cpm_units=cpm_units(cpc, 0), budget_micros=0,
        flight_start_s=start_s, flight_end_s=end_s, slot_budget_micros=0,
        frequency_cap=rng.choice(CAPS) if rng.random() < 0.25 else None,
    )  # fmt: skip


def _requests_in(start_s: int, end_s: int, peak_rps: float) -> float:
    """Expected requests between two instants of the day (the curve integrated per slot)."""
    total = 0.0
    for t in range(start_s, end_s, SLOT_S):
        total += rate_share(t - DAY_START_S + SLOT_S / 2) * peak_rps * min(SLOT_S, end_s - t)
    return total


def build_world(
    *, seed: int, campaigns: int, users: int, peak_rps: float, day_s: int = DAY_S, sample: int = 1500
) -> World:
    """Draw the world; budgets from each campaign's fair share of a sample of users (see the module)."""
    rng = random.Random(seed)
    people = _users(rng, users)
    drafts = [_campaign(rng, i, day_s) for i in range(campaigns)]
    click_rate = {c.campaign_id: rng.uniform(0.5, 1.0) for c in drafts}
    appetite = {c.campaign_id: math.exp(rng.uniform(math.log(0.1), math.log(1.5))) for c in drafts}
    probe = people[:sample]
    matched = [[u for u, r in enumerate(probe) if targets(c, r)] for c in drafts]
    per_user = [0] * len(probe)
    for users_of in matched:
        for u in users_of:
            per_user[u] += 1
    built: list[Campaign] = []
    for c, users_of in zip(drafts, matched, strict=True):
        share = len(users_of) / len(probe)
        rivals = sum(per_user[u] for u in users_of) / len(users_of) if users_of else 1.0
        value = _requests_in(c.flight_start_s, c.flight_end_s, peak_rps) * share * click_rate[c.campaign_id]
        budget = max(10_000, int(appetite[c.campaign_id] * value * c.cpc_micros / rivals))
        slot_budget = planned_slot_budget(budget, c.flight_start_s, c.flight_end_s, slot_s=SLOT_S)
        built.append(_replace_budget(c, budget, slot_budget))
    return World(people, built, click_rate, appetite, peak_rps, day_s)


def _replace_budget(c: Campaign, budget: int, slot_budget: int) -> Campaign:
    return msgspec.structs.replace(c, budget_micros=budget, slot_budget_micros=slot_budget)
