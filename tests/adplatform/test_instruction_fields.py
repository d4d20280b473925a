"""``field_errors`` (the admin API's 422) and ``enrich`` (the Ad Manager's DLQ reason) are one validation:
on thousands of damaged instructions, the manager's reason is the first field reason, and an instruction
is accepted by one exactly when it is accepted by the other."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from adplatform.instruction import (
    COLUMNS,
    CampaignInstruction,
    InstructionError,
    _check,
    enrich,
    field_errors,
    format_flight,
    mapping_errors,
)
from ingest.generator import generate_campaigns

DAMAGE = [
    "", " ", "x" * 1001, "a\x00b", "NaN", "-1", "0", "1e308", "0.0000001", "{'start': '1', 'end': '2'",
    "{'start': '30', 'end': '20'}", "{'start': '2025-02-30', 'end': '2025-03-01'}", "Z", "All",
    "{'start': '25:00:00', 'end': '1:00:00'}", "bad id!", "Stop Campaign", "iPhone", "M", "H",
]  # fmt: skip


def _rows(n: int) -> list[dict[str, str]]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return [dict(r) for r in generate_campaigns(n, seed=3, now=now)]


def test_first_field_reason_is_the_managers_reason() -> None:
    rng = random.Random(11)
    rows = _rows(300)
    accepted = rejected = 0
    for i in range(3000):
        row = dict(rows[i % len(rows)])
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            row[rng.choice(COLUMNS)] = rng.choice(DAMAGE)
        instr = CampaignInstruction(**row)
        errors = field_errors(instr)
        try:
            enrich(instr, version=1, now_s=0)
        except InstructionError as exc:
            rejected += 1
            assert errors, exc.reason
            assert exc.reason == _check(instr)[0][0][1]
            assert exc.reason in errors.values()
            assert set(errors) <= set(COLUMNS)
        else:
            accepted += 1
            assert errors == {}
    assert accepted > 300 and rejected > 1000


def test_one_reason_per_bad_field() -> None:
    row = _rows(1)[0]
    row.update(cpc="abc", target_gender="X", budget="-5", campaign_id="no spaces")
    errors = field_errors(CampaignInstruction(**row))
    assert set(errors) == {"cpc", "target_gender", "budget", "campaign_id"}
    assert errors["target_gender"] == "unknown target_gender: 'X'"
    assert errors["budget"] == "budget must be positive"


def test_mapping_errors_name_missing_and_mistyped_fields() -> None:
    row: dict[str, object] = dict(_rows(1)[0])
    del row["cpc"]
    row["budget"] = 5
    errors = mapping_errors(row)
    assert errors == {"cpc": "missing field: cpc", "budget": "field budget: expected a string"}


@pytest.mark.parametrize("hours", [1, 24, 30])
def test_format_flight_round_trips(hours: int) -> None:
    start = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    row = _rows(1)[0]
    row["date_range"], row["time_range"] = format_flight(start, start + timedelta(hours=hours))
    campaign = enrich(CampaignInstruction(**row), version=1, now_s=0)
    assert campaign.flight_end_s - campaign.flight_start_s == hours * 3600
