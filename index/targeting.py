"""Targeting semantics: the ad request and the reference predicate ``matches``.

``matches`` is the specification the index is tested against: it is written for clarity, not speed
(``index.index.TargetingIndex`` answers the same question without scanning every campaign).
"""

from __future__ import annotations

import msgspec

from index.campaign import ALL, Campaign
from index.geo import DEFAULT_GEO, GeoTable, Location


class AdRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the ad server knows about the user asking for an ad. ``None`` means not known (anonymous)."""

    user_id: str
    device_type: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    age: int | None = None
    gender: str | None = None
    income_bucket: str | None = None


def value_matches(target: str, value: str | None) -> bool:
    """One categorical attribute: ``All`` is a wildcard; a value the request lacks matches only ``All``."""
    return target == ALL or (value is not None and target == value)


def age_matches(start: int, end: int, age: int | None) -> bool:
    """Inclusive age range; ``0–0`` means any age (also for a request without an age)."""
    if start == 0 and end == 0:
        return True
    return age is not None and start <= age <= end


def location_matches(campaign: Campaign, location: Location) -> bool:
    """City, state and country each equal to the request's resolved location or ``All``."""
    return (
        value_matches(campaign.target_city, location.city)
        and value_matches(campaign.target_state, location.state)
        and value_matches(campaign.target_country, location.country)
    )


def targets(campaign: Campaign, request: AdRequest, geo: GeoTable = DEFAULT_GEO) -> bool:
    """Whether the campaign's targeting accepts the request (ignores status, flight and budget)."""
    location = geo.resolve(request.city, request.state, request.country)
    return (
        location_matches(campaign, location)
        and value_matches(campaign.target_device, request.device_type)
        and value_matches(campaign.target_gender, request.gender)
        and value_matches(campaign.target_income_bucket, request.income_bucket)
        and age_matches(campaign.target_age_start, campaign.target_age_end, request.age)
    )


def matches(campaign: Campaign, request: AdRequest, now_s: float, geo: GeoTable = DEFAULT_GEO) -> bool:
    """Eligible by targeting and time: Active, ``flight_start_s <= now_s < flight_end_s``, targeting accepts.

    Budget and slot exhaustion are not a property of the campaign; callers (and the index) filter those.
    """
    return campaign.live_at(now_s) and targets(campaign, request, geo)
