from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from index import pacing
from index.campaign import ACTIVE, INACTIVE
from ingest.instruction import (
    COLUMNS,
    CampaignInstruction,
    InstructionError,
    decode_instruction,
    encode_instruction,
    enrich,
    instruction_from_row,
    parse_range,
    process_message,
)


def _message(row: dict[str, str]) -> bytes:
    return msgspec.json.encode(row)


def _reason(raw: bytes) -> str:
    with pytest.raises(InstructionError) as info:
        process_message(raw, version=1, now_s=0)
    return info.value.reason


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_columns_are_the_seed_columns_in_order() -> None:
    assert COLUMNS == (
        "text", "category", "keywords", "campaign_id", "action", "target_gender", "target_age_range",
        "target_city", "target_state", "target_country", "target_income_bucket", "target_device",
        "cpc", "cpa", "budget", "date_range", "time_range",
    )  # fmt: skip


def test_good_row_enriches(good_row: dict[str, str]) -> None:
    campaign = process_message(_message(good_row), version=7, now_s=1_757_000_000)
    assert campaign.campaign_id == good_row["campaign_id"]
    assert campaign.version == 7
    assert campaign.status == ACTIVE
    assert (campaign.target_age_start, campaign.target_age_end) == (20, 45)
    assert (campaign.cpc_micros, campaign.cpa_micros, campaign.budget_micros) == (660, 52_900, 500_000_000)
    # 0.0075·0.00066 + 0.0005·0.0529 = 0.0000314 = 314,000 units of 1e-10.
    assert campaign.cpm_units == 314_000
    assert campaign.flight_start_s == _epoch("2025-09-12T05:00:00")
    assert campaign.flight_end_s == _epoch("2025-09-13T18:00:00")
    # 37 hours = 222 ten-minute slots.
    assert campaign.slot_budget_micros == 500_000_000 // 222
    assert campaign.updated_at_s == 1_757_000_000


def test_stop_is_inactive(good_row: dict[str, str]) -> None:
    good_row["action"] = "Stop Campaign"
    assert process_message(_message(good_row), version=1, now_s=0).status == INACTIVE


def test_midnight_end_is_next_day(good_row: dict[str, str]) -> None:
    good_row["date_range"] = "{'start': '2025-09-13', 'end': '2025-09-14'}"
    good_row["time_range"] = "{'start': '22:00:00', 'end': '0:00:00'}"
    campaign = process_message(_message(good_row), version=1, now_s=0)
    assert campaign.flight_end_s - campaign.flight_start_s == 2 * 3600
    assert campaign.slot_budget_micros == 500_000_000 // 12


@pytest.mark.parametrize(
    ("time_range", "slot_s", "slots"),
    [
        ("{'start': '5:05:00', 'end': '6:05:00'}", 600, 7),  # an unaligned hour overlaps 7 aligned slots
        ("{'start': '5:05:30', 'end': '6:05:30'}", 60, 61),  # the configured slot length counts
        ("{'start': '5:00:00', 'end': '6:00:00'}", 3600, 1),
    ],
)
def test_slot_budget_is_the_pacing_rule_with_the_configured_slot(
    good_row: dict[str, str], time_range: str, slot_s: int, slots: int
) -> None:
    good_row["date_range"] = "{'start': '2025-09-13', 'end': '2025-09-13'}"
    good_row["time_range"] = time_range
    campaign = process_message(_message(good_row), version=1, now_s=0, slot_s=slot_s)
    assert campaign.slot_budget_micros == 500_000_000 // slots
    # The one rule: what the budget scripts give the flight's first slot (nothing spent).
    first = pacing.slot_bounds(pacing.slot_id(campaign.flight_start_s, slot_s), slot_s)[0]
    rule = pacing.slot_budget(500_000_000, first, campaign.flight_start_s, campaign.flight_end_s, slot_s)
    assert campaign.slot_budget_micros == rule


def test_extra_fields_are_ignored(good_row: dict[str, str]) -> None:
    raw = msgspec.json.encode({**good_row, "extra": 5})
    assert decode_instruction(raw) == instruction_from_row(good_row)


def test_encode_round_trips(good_row: dict[str, str]) -> None:
    instr = instruction_from_row(good_row)
    assert decode_instruction(encode_instruction(instr)) == instr


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("action", "Pause Campaign", "unknown action: 'Pause Campaign'"),
        ("budget", "0", "budget must be positive"),
        ("budget", "-100", "budget must be positive"),
        ("cpc", "-0.001", "cpc must be >= 0"),
        ("cpa", "-1", "cpa must be >= 0"),
        ("date_range", "{'start': '2025-09-14', 'end': '2025-09-12'}", "flight end <= start"),
        ("target_gender", "X", "unknown target_gender: 'X'"),
        ("target_device", "Nokia", "unknown target_device: 'Nokia'"),
        ("target_income_bucket", "XL", "unknown target_income_bucket: 'XL'"),
        ("target_age_range", "{'start': '40', 'end': '20'}", "invalid target_age_range"),
        ("target_age_range", "{'start': '20', 'end': '151'}", "invalid target_age_range"),
        ("target_age_range", "{'start': '-1', 'end': '20'}", "invalid target_age_range"),
        ("campaign_id", "", "invalid campaign_id"),
        ("campaign_id", "a" * 65, "invalid campaign_id"),
        ("campaign_id", "id with space", "invalid campaign_id"),
        ("target_city", "", "empty target_city"),
        ("target_country", "", "empty target_country"),
        ("text", "x" * 1001, "field text: longer than 1000 chars"),
        ("keywords", "k" * 1001, "field keywords: longer than 1000 chars"),
        ("cpc", "0.0000001", "field cpc: finer than a micro-unit"),
        ("budget", "lots", "field budget: not a number"),
        ("budget", "NaN", "field budget: not a finite number"),
        ("date_range", "{'start': '2025-09-12'}", "unparsable date_range"),
        ("date_range", "{'start': '2025-13-12', 'end': '2025-09-13'}", "unparsable date_range"),
        ("date_range", "2025-09-12..2025-09-13", "unparsable date_range"),
        ("time_range", "{'start': '25:00:00', 'end': '5:00:00'}", "unparsable time_range"),
        ("time_range", "{'start': 5, 'end': 6}", "unparsable time_range"),
    ],
)
def test_rule_violations(good_row: dict[str, str], field: str, value: str, reason: str) -> None:
    good_row[field] = value
    got = _reason(_message(good_row))
    assert got.startswith(reason), got


def test_flight_end_equal_start(good_row: dict[str, str]) -> None:
    good_row["date_range"] = "{'start': '2025-09-12', 'end': '2025-09-12'}"
    good_row["time_range"] = "{'start': '5:00:00', 'end': '5:00:00'}"
    assert _reason(_message(good_row)) == "flight end <= start"


def test_unknown_places_are_allowed(good_row: dict[str, str]) -> None:
    good_row["target_city"], good_row["target_state"] = "Atlantis", "Sea"
    assert process_message(_message(good_row), version=1, now_s=0).target_city == "Atlantis"


def test_missing_field(good_row: dict[str, str]) -> None:
    del good_row["budget"]
    assert _reason(_message(good_row)) == "missing field: budget"


def test_non_string_field(good_row: dict[str, str]) -> None:
    raw = msgspec.json.encode({**good_row, "cpc": 0.00066})
    assert _reason(raw) == "field cpc: expected a string"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe\x00garbage\x80", "not UTF-8"),
        (b'{"text": "\xff"}', "not UTF-8"),
        (b"", "not JSON"),
        (b"text,category\n", "not JSON"),
        (b'{"text": "a",', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b" " * 200_000, "message too large: 200000 bytes"),
    ],
)
def test_garbage(raw: bytes, reason: str) -> None:
    assert _reason(raw) == reason


def test_reason_is_bounded(good_row: dict[str, str]) -> None:
    good_row["action"] = "z" * 900
    assert len(_reason(_message(good_row))) < 100


def test_instruction_error_is_value_error() -> None:
    assert issubclass(InstructionError, ValueError)
    assert InstructionError("x").reason == "x"


def test_parse_range() -> None:
    assert parse_range("{'start': '20', 'end': '45'}", "r") == ("20", "45")
    assert parse_range('{"end": "b", "start": "a"}', "r") == ("a", "b")
    # Off the canonical fast path: escapes and other spacing still parse as Python literals.
    assert parse_range("{'start': 'a\\'b', 'end': 'c'}", "r") == ("a'b", "c")
    assert parse_range("{ 'start':'1' , 'end':'2' }", "r") == ("1", "2")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "{'start': '1', 'end': '2', 'x': '3'}",
        "['start', 'end']",
        "{'start': '1', 'end': 2}",
        "{" * 150,
        "{'start': '" + "1" * 200 + "', 'end': '2'}",
        "",
    ],
)
def test_parse_range_rejects(text: str) -> None:
    with pytest.raises(InstructionError) as info:
        parse_range(text, "age")
    assert info.value.reason.startswith("unparsable age: ")


def test_instruction_from_row_missing() -> None:
    with pytest.raises(InstructionError, match="missing field: text"):
        instruction_from_row({})


def test_enrich_takes_the_struct(good_row: dict[str, str]) -> None:
    instr = CampaignInstruction(**good_row)
    assert enrich(instr, version=3, now_s=5).version == 3
