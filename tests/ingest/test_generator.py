from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from index.campaign import DEVICE_TYPES
from ingest.csvfile import RowError, read_campaign_csv, validate_row
from ingest.generator import (
    ACTION_RATES,
    CITY_STATES,
    action_rate,
    generate_campaigns,
    generate_users,
    write_campaigns_csv,
)
from ingest.instruction import COLUMNS, FIELDS, enrich, instruction_from_row

NOW = datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)
N = 5_000


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return generate_campaigns(N, seed=42, now=NOW)


def test_deterministic(rows: list[dict[str, str]]) -> None:
    assert generate_campaigns(N, seed=42, now=NOW) == rows
    assert generate_campaigns(50, seed=43, now=NOW) != rows[:50]
    assert generate_users(100, seed=1) == generate_users(100, seed=1)
    assert generate_users(100, seed=1) != generate_users(100, seed=2)


def test_round_trips_through_csv_and_enrich(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    path = tmp_path / "generated.csv"
    assert write_campaigns_csv(path, rows) == N
    # The seed's 17 columns in their order, then the optional ones (empty: uncapped, even pacing).
    assert (*COLUMNS, "frequency_cap", "pacing_mode") == FIELDS
    assert path.read_bytes().startswith(",".join(FIELDS).encode() + b"\r\n")
    read = []
    for item in read_campaign_csv(path):
        assert not isinstance(item, RowError), str(item)
        read.append(item[1])
        validate_row(item[1])
    assert read == rows


def test_capped_share_is_seeded_and_leaves_other_columns_alone(rows: list[dict[str, str]]) -> None:
    assert all(row["frequency_cap"] == "" for row in rows)  # the library default: uncapped
    capped = generate_campaigns(N, seed=42, now=NOW, capped_share=0.3)
    assert capped == generate_campaigns(N, seed=42, now=NOW, capped_share=0.3)
    assert [{**r, "frequency_cap": ""} for r in capped] == rows
    news = [r for r in capped if r["action"] == "New Campaign"]
    share = sum(1 for r in news if r["frequency_cap"]) / len(news)
    assert 0.27 < share < 0.33
    caps = {r["campaign_id"]: r["frequency_cap"] for r in news}
    # Updates and stops carry their campaign's cap.
    assert all(r["frequency_cap"] == caps[r["campaign_id"]] for r in capped)
    for r in capped:
        assert (
            enrich(instruction_from_row(r), version=1, now_s=0).frequency_cap is not None
            or not r["frequency_cap"]
        )


def test_live_now(rows: list[dict[str, str]]) -> None:
    now_s = int(NOW.timestamp())
    for row in rows:
        campaign = enrich(instruction_from_row(row), version=1, now_s=now_s)
        start_ago_s = now_s - campaign.flight_start_s
        assert 0 <= start_ago_s < 3600
        assert (campaign.flight_end_s - campaign.flight_start_s) % 3600 == 0
        assert 1 <= (campaign.flight_end_s - campaign.flight_start_s) // 3600 <= 24
        assert campaign.live_at(now_s) == (row["action"] != "Stop Campaign")


def test_updates_and_stops_refer_to_earlier_live_campaigns(rows: list[dict[str, str]]) -> None:
    created: set[str] = set()
    stopped: set[str] = set()
    for row in rows:
        cid = row["campaign_id"]
        if row["action"] == "New Campaign":
            assert cid not in created
            created.add(cid)
        else:
            assert cid in created and cid not in stopped
            if row["action"] == "Stop Campaign":
                stopped.add(cid)


def _share(rows: list[dict[str, str]], field: str, value: str) -> float:
    return sum(r[field] == value for r in rows) / len(rows)


def test_distribution_like_the_seed(rows: list[dict[str, str]]) -> None:
    assert _share(rows, "action", "New Campaign") == pytest.approx(0.55, abs=0.03)
    assert _share(rows, "action", "Stop Campaign") == pytest.approx(0.28, abs=0.03)
    assert _share(rows, "action", "Update Campaign") == pytest.approx(0.17, abs=0.03)
    assert _share(rows, "target_city", "All") == pytest.approx(0.55, abs=0.04)
    assert _share(rows, "target_gender", "All") == pytest.approx(0.77, abs=0.04)
    assert _share(rows, "target_income_bucket", "All") == pytest.approx(0.83, abs=0.04)
    assert _share(rows, "target_device", "All") == pytest.approx(0.84, abs=0.04)
    assert _share(rows, "target_age_range", "{'start': '0', 'end': '0'}") == pytest.approx(0.56, abs=0.04)
    assert {r["target_device"] for r in rows} == {"All", *DEVICE_TYPES}
    assert {r["target_gender"] for r in rows} == {"All", "M", "F"}
    assert {r["target_income_bucket"] for r in rows} == {"All", "L", "M", "H"}
    assert {r["target_country"] for r in rows} == {"India"}
    places = {(r["target_city"], r["target_state"]) for r in rows}
    assert places == {("All", "All"), *((c, s) for c, s, _ in CITY_STATES)}
    assert {int(r["budget"]) for r in rows} <= set(range(100, 1000, 100))
    for row in rows:
        assert re.fullmatch(r"0\.\d{5}", row["cpc"]) and 0.0001 <= float(row["cpc"]) <= 0.0015
        assert re.fullmatch(r"0\.\d{4}", row["cpa"]) and 0.002 <= float(row["cpa"]) <= 0.06
        assert re.fullmatch(r"[0-9a-f-]{36}", row["campaign_id"])


def test_city_table_matches_the_seed_spelling() -> None:
    states = {city: state for city, state, _ in CITY_STATES}
    assert len(states) == 17
    assert states["Vadodra"] == "Gujrat"
    assert states["Indore"] == "Madhya pradesh"
    assert states["Nagpur"] == "Maharashtra"


def test_users() -> None:
    users = generate_users(2_000, seed=7)
    assert len({u.user_id for u in users}) == len(users)
    assert len({u.email for u in users}) == len(users)
    states = {city: state for city, state, _ in CITY_STATES}
    for user in users:
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", user.user_id
        )
        assert 18 <= user.age <= 70
        assert user.gender in ("M", "F")
        assert user.income_bucket in ("L", "M", "H")
        assert user.device_type in DEVICE_TYPES
        assert states[user.city] == user.state
        assert user.country == "India"
        assert user.created_at.tzinfo is not None
    assert {u.device_type for u in users} == set(DEVICE_TYPES)


def test_action_rates() -> None:
    assert [(r.min_age, r.max_age) for r in ACTION_RATES][:4] == [(18, 24), (25, 34), (35, 44), (45, 54)]
    assert all(r.view == 1.0 and 0 < r.click < 1 and 0 < r.acquisition < 1 for r in ACTION_RATES)
    assert action_rate(18).min_age == 18
    assert action_rate(12).min_age == 18
    assert action_rate(34).min_age == 25
    assert action_rate(35).min_age == 35
    assert action_rate(80).min_age == 55
