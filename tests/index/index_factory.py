"""Test helpers for ``index``: a campaign factory with overridable fields and hypothesis strategies."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import strategies as st

from index.campaign import ACTIVE, ALL, INACTIVE, Campaign
from index.money import cpm_units
from index.targeting import AdRequest

NOW_S = 1_757_764_800
#: Small value pools so random campaigns and requests collide often (ties, shared locations).
CITIES = ("Mumbai", "Pune", "Delhi", "Goa")  # Goa: not in the geo table
STATES = ("Maharashtra", "Delhi", "Kerala")
COUNTRIES = ("India", "Nepal")
DEVICES = ("Android Mobile", "iPhone", "Macbook")
GENDERS = ("M", "F")
INCOMES = ("L", "M", "H")


def campaign(**overrides: Any) -> Campaign:
    """An Active, all-wildcard campaign live at ``NOW_S``; keyword arguments replace fields."""
    cpc = overrides.pop("cpc_micros", 1_000)
    cpa = overrides.pop("cpa_micros", 20_000)
    base = Campaign(
        campaign_id="c1",
        version=1,
        status=ACTIVE,
        action="New Campaign",
        text="an ad",
        category="cat",
        keywords="k",
        target_gender=ALL,
        target_age_start=0,
        target_age_end=0,
        target_city=ALL,
        target_state=ALL,
        target_country=ALL,
        target_income_bucket=ALL,
        target_device=ALL,
        cpc_micros=cpc,
        cpa_micros=cpa,
        cpm_units=cpm_units(cpc, cpa),
        budget_micros=100_000_000,
        flight_start_s=NOW_S - 3600,
        flight_end_s=NOW_S + 3600,
        slot_budget_micros=1_000_000,
    )
    return msgspec.structs.replace(base, **overrides)


def request(**overrides: Any) -> AdRequest:
    """An anonymous request without location or device; keyword arguments set fields."""
    return AdRequest(user_id=overrides.pop("user_id", "u1"), **overrides)


def _target(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.one_of(st.just(ALL), st.sampled_from(values))


def _maybe(values: tuple[str, ...]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from(values))


@st.composite
def campaigns(draw: st.DrawFn, ids: tuple[str, ...] = ("a", "b", "c", "d", "e", "f")) -> Campaign:
    """Random campaign over small pools; bids drawn from a few values so ties are common."""
    any_age = draw(st.booleans())
    lo = draw(st.integers(10, 60))
    start = NOW_S + draw(st.sampled_from((-7200, -10, 0, 10)))
    return campaign(
        campaign_id=draw(st.sampled_from(ids)),
        version=draw(st.integers(1, 5)),
        status=draw(st.sampled_from((ACTIVE, ACTIVE, ACTIVE, INACTIVE))),
        target_gender=draw(_target(GENDERS)),
        target_age_start=0 if any_age else lo,
        target_age_end=0 if any_age else lo + draw(st.integers(0, 20)),
        target_city=draw(_target(CITIES)),
        target_state=draw(_target(STATES)),
        target_country=draw(_target(COUNTRIES)),
        target_income_bucket=draw(_target(INCOMES)),
        target_device=draw(_target(DEVICES)),
        cpc_micros=draw(st.sampled_from((0, 100, 200, 400))),
        cpa_micros=draw(st.sampled_from((0, 1_000, 2_000))),
        flight_start_s=start,
        flight_end_s=start + draw(st.sampled_from((1, 20, 7200))),
    )


@st.composite
def requests(draw: st.DrawFn) -> AdRequest:
    """Random request, often missing parts (anonymous users, no location)."""
    return AdRequest(
        user_id="u",
        device_type=draw(_maybe(DEVICES)),
        city=draw(_maybe((*CITIES, "mumbai", "Nowhere"))),
        state=draw(_maybe(STATES)),
        country=draw(_maybe(COUNTRIES)),
        age=draw(st.one_of(st.none(), st.integers(5, 90))),
        gender=draw(_maybe((*GENDERS, "X"))),
        income_bucket=draw(_maybe(INCOMES)),
    )
