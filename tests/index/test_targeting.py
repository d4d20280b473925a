from __future__ import annotations

import pytest

from index.campaign import ALL, INACTIVE
from index.targeting import matches
from tests.index.index_factory import NOW_S, campaign, request


@pytest.mark.parametrize(
    ("field", "target", "request_field", "value", "expected"),
    [
        ("target_device", ALL, "device_type", "iPhone", True),
        ("target_device", "iPhone", "device_type", "iPhone", True),
        ("target_device", "iPhone", "device_type", "Macbook", False),
        ("target_device", "iPhone", "device_type", None, False),
        ("target_device", ALL, "device_type", None, True),
        ("target_gender", "F", "gender", "F", True),
        ("target_gender", "F", "gender", "M", False),
        ("target_gender", "F", "gender", None, False),
        ("target_gender", ALL, "gender", None, True),
        ("target_income_bucket", "H", "income_bucket", "H", True),
        ("target_income_bucket", "H", "income_bucket", "L", False),
        ("target_income_bucket", "H", "income_bucket", None, False),
        ("target_income_bucket", ALL, "income_bucket", "L", True),
    ],
)
def test_categorical_attributes(
    field: str, target: str, request_field: str, value: str | None, expected: bool
) -> None:
    c = campaign(**{field: target})
    assert matches(c, request(**{request_field: value}), NOW_S) is expected


@pytest.mark.parametrize(
    ("start", "end", "age", "expected"),
    [
        (0, 0, None, True),
        (0, 0, 33, True),
        (20, 30, 20, True),
        (20, 30, 30, True),
        (20, 30, 19, False),
        (20, 30, 31, False),
        (20, 30, None, False),
    ],
)
def test_age_range(start: int, end: int, age: int | None, expected: bool) -> None:
    c = campaign(target_age_start=start, target_age_end=end)
    assert matches(c, request(age=age), NOW_S) is expected


def test_city_implies_state_and_country() -> None:
    c = campaign(target_state="Maharashtra", target_country="India")
    assert matches(c, request(city="Nagpur"), NOW_S)
    assert not matches(c, request(city="Delhi"), NOW_S)


def test_city_target() -> None:
    c = campaign(target_city="Mumbai", target_state="Maharashtra", target_country="India")
    assert matches(c, request(city="Mumbai"), NOW_S)
    assert not matches(c, request(city="Pune"), NOW_S)
    assert not matches(c, request(state="Maharashtra"), NOW_S)  # no city: only All matches
    assert not matches(c, request(), NOW_S)


def test_missing_country_is_default() -> None:
    india = campaign(target_country="India")
    assert matches(india, request(), NOW_S)
    assert not matches(india, request(country="Nepal"), NOW_S)
    assert matches(campaign(), request(country="Nepal"), NOW_S)


def test_anonymous_user_matches_only_wildcards() -> None:
    anonymous = request(device_type="iPhone", city="Mumbai")
    assert matches(campaign(), anonymous, NOW_S)
    assert not matches(campaign(target_gender="M"), anonymous, NOW_S)
    assert not matches(campaign(target_age_start=18, target_age_end=99), anonymous, NOW_S)


def test_status_and_flight() -> None:
    c = campaign(flight_start_s=NOW_S, flight_end_s=NOW_S + 10)
    assert matches(c, request(), NOW_S)
    assert matches(c, request(), NOW_S + 9.999)
    assert not matches(c, request(), NOW_S - 0.001)
    assert not matches(c, request(), NOW_S + 10)  # end is exclusive
    assert not matches(campaign(status=INACTIVE), request(), NOW_S)
