"""Deterministic generators of campaign files (in the seed format) and user profiles, for a seed.

Distributions follow ``campaigns_seed.csv`` (most targeting ``All``, 17 Indian cities, five device types),
but flights are placed around ``now`` so a generated file is live when produced. Same seed, same output.
"""

from __future__ import annotations

import csv
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Final, Generic, TypeVar

import msgspec

from index.campaign import ALL, DEVICE_TYPES
from ingest.csvfile import format_flight
from ingest.instruction import FIELDS, NEW, STOP, UPDATE

T = TypeVar("T")

COUNTRY: Final = "India"
#: (city, state, weight): spellings as in the seed ("Gujrat", "Vadodra", "Madhya pradesh"); weights are
#: the seed's row counts. Our own copy on purpose: ``index.geo`` is the serving-side table.
CITY_STATES: Final[tuple[tuple[str, str, int], ...]] = (
    ("Mumbai", "Maharashtra", 780),
    ("Delhi", "Delhi", 538),
    ("Bangalore", "Karnataka", 352),
    ("Kolkata", "West Bengal", 299),
    ("Chennai", "Tamil Nadu", 251),
    ("Hyderabad", "Telangana", 201),
    ("Ahmedabad", "Gujrat", 167),
    ("Pune", "Maharashtra", 151),
    ("Surat", "Gujrat", 133),
    ("Jaipur", "Rajasthan", 94),
    ("Lucknow", "Uttar Pradesh", 90),
    ("Nagpur", "Maharashtra", 81),
    ("Vadodra", "Gujrat", 68),
    ("Patna", "Bihar", 64),
    ("Coimbatore", "Tamil Nadu", 62),
    ("Ludhiana", "Punjab", 54),
    ("Indore", "Madhya pradesh", 49),
)
#: Row shares of the seed: 55% New, 28% Stop, 17% Update.
ACTION_WEIGHTS: Final = ((NEW, 55), (STOP, 28), (UPDATE, 17))
#: Share of rows targeting every location (seed: 4,243 of 7,677).
ALL_LOCATIONS_PCT: Final = 55
GENDER_WEIGHTS: Final = ((ALL, 77), ("F", 15), ("M", 8))
INCOME_WEIGHTS: Final = ((ALL, 83), ("M", 12), ("H", 4), ("L", 1))
DEVICE_WEIGHTS: Final = ((ALL, 840), *zip(DEVICE_TYPES, (85, 12, 47, 7, 9), strict=True))
AGE_RANGE_WEIGHTS: Final = (
    ((0, 0), 4332),
    ((20, 30), 861),
    ((25, 35), 731),
    ((20, 40), 552),
    ((35, 50), 460),
    ((20, 45), 420),
    ((50, 60), 238),
    ((60, 70), 83),
)
BUDGET_WEIGHTS: Final = ((100, 1), *((b, 13) for b in range(200, 1000, 100)))
CATEGORIES: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # category: (product nouns, keywords)
    "Sports & Fitness": (
        ("Yoga Mat", "Backpack", "Dumbbell Set", "Water Bottle"),
        ("outdoor", "sports", "fitness", "hiking"),
    ),
    "Tools & Hardware": (
        ("Drill Kit", "Wrench Set", "Oil Cooler", "Tool Box"),
        ("automotive", "tools", "hardware", "oils"),
    ),
    "Home & Kitchen": (
        ("Cookware Set", "Blender", "Storage Jar", "Table Lamp"),
        ("kitchen", "home", "dining", "storage"),
    ),
    "Clothing & Accessories": (
        ("Swaddle Blanket", "T-Shirt", "Wrist Watch", "Sneakers"),
        ("baby", "clothing", "fashion", "shoes"),
    ),
    "Arts & Crafts": (
        ("Paint Set", "Sketchbook", "Yarn Bundle", "Brush Kit"),
        ("art", "crafts", "painting", "knitting"),
    ),
    "Electronics": (
        ("Earbuds", "Power Bank", "Smart Speaker", "USB Hub"),
        ("electronics", "audio", "gadgets", "chargers"),
    ),
    "Computer": (
        ("Keyboard", "Mouse", "Monitor Stand", "SSD Drive"),
        ("computer", "accessories", "storage", "office"),
    ),
}
_BRANDS: Final = ("Acme", "Nimbus", "Orbit", "Zenith", "Kaveri", "Lotus", "Summit", "Vega")
_ADJECTIVES: Final = ("Lightweight", "Premium", "Compact", "Durable", "Classic", "Organic", "Portable")


class _Choice(Generic[T]):
    """A weighted random choice; cumulative weights are computed once (generators run to 1M rows)."""

    def __init__(self, weighted: Iterable[tuple[T, int]]) -> None:
        pairs = list(weighted)
        self._values = [value for value, _ in pairs]
        self._cum_weights = list(accumulate(weight for _, weight in pairs))

    def __call__(self, rng: random.Random) -> T:
        return rng.choices(self._values, cum_weights=self._cum_weights)[0]


_ACTION: Final = _Choice(ACTION_WEIGHTS)
_CITY: Final = _Choice(((city, state), weight) for city, state, weight in CITY_STATES)
_GENDER: Final = _Choice(GENDER_WEIGHTS)
_INCOME: Final = _Choice(INCOME_WEIGHTS)
_DEVICE: Final = _Choice(DEVICE_WEIGHTS)
_AGE_RANGE: Final = _Choice(AGE_RANGE_WEIGHTS)
_BUDGET: Final = _Choice(BUDGET_WEIGHTS)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _price_fields(rng: random.Random) -> dict[str, str]:
    # cpc 0.00010–0.00150 (5 decimals) and cpa 0.0020–0.0600 (4 decimals), as spelled in the seed.
    return {
        "cpc": f"0.{rng.randint(10, 150):05d}",
        "cpa": f"0.{rng.randint(20, 600):04d}",
        "budget": str(_BUDGET(rng)),
    }


def _new_row(rng: random.Random, now: datetime) -> dict[str, str]:
    category = rng.choice(sorted(CATEGORIES))
    nouns, keywords = CATEGORIES[category]
    text = f"{rng.choice(_BRANDS)} {rng.choice(_ADJECTIVES)} {rng.choice(nouns)} {rng.randint(1, 99)}"
    if rng.randrange(100) < ALL_LOCATIONS_PCT:
        city = state = ALL
    else:
        city, state = _CITY(rng)
    age_start, age_end = _AGE_RANGE(rng)
    # Live now: starts within the last hour (whole minutes), lasts 1–24 hours.
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=rng.randrange(60))
    date_range, time_range = format_flight(start, start + timedelta(hours=rng.randint(1, 24)))
    row = {
        "text": text,
        "category": category,
        "keywords": ",".join(rng.sample(keywords, rng.randint(1, len(keywords)))),
        "campaign_id": _uuid(rng),
        "action": NEW,
        "target_gender": _GENDER(rng),
        "target_age_range": f"{{'start': '{age_start}', 'end': '{age_end}'}}",
        "target_city": city,
        "target_state": state,
        "target_country": COUNTRY,
        "target_income_bucket": _INCOME(rng),
        "target_device": _DEVICE(rng),
        **_price_fields(rng),
        "date_range": date_range,
        "time_range": time_range,
    }
    return {c: row.get(c, "") for c in FIELDS}


#: Frequency caps of the capped share of generated campaigns, with weights.
CAP_WEIGHTS: Final = (("3/1h", 30), ("5/1d", 25), ("10/1d", 15), ("2/10m", 15), ("5/flight", 10), ("1/1d", 5))
_CAP: Final = _Choice(CAP_WEIGHTS)


def generate_campaigns(
    count: int, seed: int, now: datetime, *, capped_share: float = 0.0
) -> list[dict[str, str]]:
    """``count`` instruction rows in the seed format, live at ``now`` (UTC; naive means UTC).

    Updates (new prices and budget) and Stops refer to earlier, not yet stopped campaigns of the same file,
    as in the seed; the first row, or any row with no campaign left to change, is a New. A share
    ``capped_share`` of the New campaigns carries a ``frequency_cap`` (``CAP_WEIGHTS``), drawn from a
    generator of its own so every other column is the same whatever the share.
    """
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    rng = random.Random(seed)
    cap_rng = random.Random(f"frequency-cap:{seed}")
    latest: dict[str, dict[str, str]] = {}
    live: list[str] = []  # not yet stopped, in creation order
    rows: list[dict[str, str]] = []
    for _ in range(count):
        action = _ACTION(rng)
        if action == NEW or not live:
            row = _new_row(rng, now)
            if cap_rng.random() < capped_share:
                row["frequency_cap"] = _CAP(cap_rng)
            live.append(row["campaign_id"])
        else:
            i = rng.randrange(len(live))
            campaign_id = live[i]
            row = {**latest[campaign_id], "action": action}
            if action == STOP:
                live[i] = live[-1]  # O(1) removal; order in `live` does not matter for picking
                live.pop()
            else:
                row.update(_price_fields(rng))
        latest[row["campaign_id"]] = row
        rows.append(row)
    return rows


def write_campaigns_csv(path: str | Path, rows: Iterable[Mapping[str, str]]) -> int:
    """Write rows as a seed-format CSV (header, minimal quoting, CRLF as the seed); returns the row count."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for row in rows:
            writer.writerow([row.get(c, "") for c in FIELDS])
            count += 1
    return count


class User(msgspec.Struct, frozen=True, kw_only=True):
    """A user profile, with the columns of the original platform's ``user`` table."""

    user_id: str
    name: str
    age: int
    gender: str
    income_bucket: str
    device_type: str
    city: str
    state: str
    country: str
    email: str
    created_at: datetime


_FIRST_NAMES: Final = {
    "M": ("Aarav", "Vivaan", "Aditya", "Arjun", "Rohan"),
    "F": ("Ananya", "Diya", "Isha", "Priya", "Kavya"),
}
_LAST_NAMES: Final = ("Sharma", "Verma", "Patel", "Reddy", "Iyer", "Nair", "Gupta", "Singh", "Das", "Khan")
#: (age bounds, weight) of generated users.
USER_AGE_WEIGHTS: Final = (((18, 24), 25), ((25, 34), 30), ((35, 44), 20), ((45, 54), 15), ((55, 70), 10))
USER_INCOME_WEIGHTS: Final = (("L", 40), ("M", 45), ("H", 15))
USER_DEVICE_WEIGHTS: Final = tuple(zip(DEVICE_TYPES, (55, 15, 18, 7, 5), strict=True))
_CREATED_EPOCH: Final = datetime(2025, 1, 1, tzinfo=UTC)
_USER_AGE: Final = _Choice(USER_AGE_WEIGHTS)
_USER_INCOME: Final = _Choice(USER_INCOME_WEIGHTS)
_USER_DEVICE: Final = _Choice(USER_DEVICE_WEIGHTS)


def generate_users(count: int, seed: int) -> list[User]:
    """``count`` user profiles, deterministic for ``seed`` (``created_at`` too: no clock is read)."""
    rng = random.Random(seed)
    users: list[User] = []
    for i in range(count):
        gender = rng.choice(("M", "F"))
        first, last = rng.choice(_FIRST_NAMES[gender]), rng.choice(_LAST_NAMES)
        lo, hi = _USER_AGE(rng)
        city, state = _CITY(rng)
        users.append(
            User(
                user_id=_uuid(rng),
                name=f"{first} {last}",
                age=rng.randint(lo, hi),
                gender=gender,
                income_bucket=_USER_INCOME(rng),
                device_type=_USER_DEVICE(rng),
                city=city,
                state=state,
                country=COUNTRY,
                # The index keeps emails unique within one generated population.
                email=f"{first}.{last}.{i}@example.com".lower(),
                created_at=_CREATED_EPOCH + timedelta(seconds=rng.randrange(365 * 86_400)),
            )
        )
    return users


class ActionRate(msgspec.Struct, frozen=True, kw_only=True):
    """Feedback probabilities for users aged ``min_age..max_age`` (inclusive), for the load simulator.

    ``view`` is per served ad (always 1), ``click`` is P(click | view), ``acquisition`` is
    P(acquisition | click).
    """

    min_age: int
    max_age: int
    view: float
    click: float
    acquisition: float


ACTION_RATES: Final[tuple[ActionRate, ...]] = (
    ActionRate(min_age=18, max_age=24, view=1.0, click=0.12, acquisition=0.05),
    ActionRate(min_age=25, max_age=34, view=1.0, click=0.10, acquisition=0.08),
    ActionRate(min_age=35, max_age=44, view=1.0, click=0.08, acquisition=0.10),
    ActionRate(min_age=45, max_age=54, view=1.0, click=0.06, acquisition=0.09),
    ActionRate(min_age=55, max_age=200, view=1.0, click=0.04, acquisition=0.07),
)


def action_rate(age: int, table: Sequence[ActionRate] = ACTION_RATES) -> ActionRate:
    """The rate bucket for ``age``; ages below the first bucket use the first (youngest) one."""
    for rate in table:
        if age <= rate.max_age:
            return rate
    return table[-1]
