"""Deterministic ``FeedbackEvent`` streams for the archive tests and the lag benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

from adplatform.wire import FeedbackEvent, UserAction
from index.money import cpm_units, cpm_units_to_decimal, micros_to_decimal

DEVICES = ("Android Mobile", "iPhone", "Windows Computer", "Macbook", "Linux Computer")
CITIES = ("Mumbai", "Delhi", "Bengaluru", "Chennai", "Kolkata", "Pune", "Hyderabad")
GENDERS = ("M", "F")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    request_no: int,
    action: UserAction,
    ts_ms: int,
    *,
    flags: tuple[int, int, int] | None = None,
    campaigns: int = 12,
) -> FeedbackEvent:
    """One event of request ``request_no``; prices and the user derive from the request number.
    ``flags`` are the body's (view, click, acquisition); by default only the action's own flag."""
    req = random.Random(request_no)
    campaign = f"camp-{req.randrange(campaigns):03d}"
    cpc_micros, cpa_micros = req.randrange(100, 5_000), req.randrange(1_000, 100_000)
    charge = {"view": 0, "click": cpc_micros, "acquisition": cpa_micros}[action]
    request_id = f"req-{request_no:08d}"
    return FeedbackEvent(
        event_id=f"{request_id}:{action}",
        campaign_id=campaign,
        user_id=f"user-{req.randrange(500):04d}",
        request_id=request_id,
        auction_cpm=cpm_units_to_decimal(cpm_units(cpc_micros, cpa_micros)),
        auction_cpc=micros_to_decimal(cpc_micros),
        auction_cpa=micros_to_decimal(cpa_micros),
        target_age_range="{'start': '20', 'end': '45'}",
        target_location="All/All/India",
        target_gender="All",
        target_income_bucket="All",
        target_device_type="All",
        campaign_start_time="2025-09-12T05:00:00Z",
        campaign_end_time="2025-09-13T18:00:00Z",
        expenditure_amount=micros_to_decimal(charge),
        expenditure_micros=charge,
        user_action=action,
        timestamp=_iso(ts_ms),
        timestamp_ms=ts_ms,
        view=flags[0] if flags else int(action == "view"),
        click=flags[1] if flags else int(action == "click"),
        acquisition=flags[2] if flags else int(action == "acquisition"),
        user_age=req.choice([None, 16, *range(18, 70)]),
        user_gender=req.choice([None, *GENDERS]),
        user_device_type=req.choice([None, *DEVICES]),
        user_city=req.choice([None, *CITIES]),
    )


def event_stream(seed: int, start_ms: int, step_ms: int) -> Iterator[FeedbackEvent]:
    """Feedback of successive requests: about a third clicked, a fifth of those acquired. Half report the
    simulator's way (one event with every flag, charged for the top action), half as it happens (a view,
    then a click carrying view=1, then an acquisition carrying all three): per-event flag sums would
    count the latter's views two or three times."""
    rng = random.Random(seed)
    request_no = seed * 10_000_000
    ts = start_ms
    while True:
        request_no += 1
        clicked = rng.random() < 0.35
        acquired = clicked and rng.random() < 0.2
        if rng.random() < 0.5:
            top: UserAction = "acquisition" if acquired else "click" if clicked else "view"
            yield make_event(request_no, top, ts, flags=(1, int(clicked), int(acquired)))
        else:
            yield make_event(request_no, "view", ts, flags=(1, 0, 0))
            if clicked:
                yield make_event(request_no, "click", ts + 1, flags=(1, 1, 0))
            if acquired:
                yield make_event(request_no, "acquisition", ts + 2, flags=(1, 1, 1))
        ts += step_ms


def make_events(n: int, *, seed: int = 1, start_ms: int, step_ms: int = 1000) -> list[FeedbackEvent]:
    """The first ``n`` events of ``event_stream``."""
    stream = event_stream(seed, start_ms, step_ms)
    return [next(stream) for _ in range(n)]
