"""The optional columns (``frequency_cap``, ``pacing_mode``) on the CSV path and in instructions: files and
messages without them stay valid, bad values are rejected with a reason."""

from __future__ import annotations

import csv
import io

import msgspec
import pytest

from adplatform.instruction import mapping_errors
from index.campaign import Campaign
from index.fcap import FrequencyCap
from ingest.csvfile import iter_campaign_rows, validate_row
from ingest.instruction import (
    COLUMNS,
    FIELDS,
    InstructionError,
    decode_instruction,
    encode_instruction,
    enrich,
    field_errors,
    instruction_from_row,
)


def _csv(header: list[str], rows: list[list[str]]) -> list[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return [line.encode() for line in buf.getvalue().splitlines(keepends=True)]


def test_file_without_the_column_is_uncapped(good_row: dict[str, str]) -> None:
    lines = _csv(list(COLUMNS), [[good_row[c] for c in COLUMNS]])
    [(line, row)] = list(iter_campaign_rows(lines, "old.csv"))  # type: ignore[misc]  # one good row
    assert line == 2 and "frequency_cap" not in row
    campaign = enrich(validate_row(row), version=1, now_s=0)
    assert campaign.frequency_cap is None


def test_file_with_the_column(good_row: dict[str, str]) -> None:
    rows = [
        [{**good_row, "frequency_cap": cap}.get(c, "") for c in FIELDS] for cap in ("3/1h", "", "5/flight")
    ]
    read = list(iter_campaign_rows(_csv(list(FIELDS), rows), "new.csv"))
    caps = [enrich(validate_row(item[1]), version=1, now_s=0).frequency_cap for item in read]  # type: ignore[index]
    assert caps == [FrequencyCap(count=3, window_s=3600), None, FrequencyCap(count=5, window_s=0)]


@pytest.mark.parametrize(
    ("cap", "reason"),
    [
        ("0/1h", "invalid frequency_cap '0/1h': count must be 1 to 1000, got 0"),
        (
            "3/",
            "invalid frequency_cap '3/': expected N/window, e.g. 3/1h, 10/1d or 5/flight (units s, m, h, d)",
        ),
        ("x/1d", "invalid frequency_cap 'x/1d': expected N/window"),
        ("3/400d", "invalid frequency_cap '3/400d': window longer than 365d"),
    ],
)
def test_malformed_cap_is_rejected_with_the_reason(good_row: dict[str, str], cap: str, reason: str) -> None:
    instr = instruction_from_row({**good_row, "frequency_cap": cap})
    with pytest.raises(InstructionError) as caught:
        enrich(instr, version=1, now_s=0)
    assert caught.value.reason.startswith(reason)
    assert field_errors(instr) == {"frequency_cap": caught.value.reason}
    assert mapping_errors({**good_row, "frequency_cap": cap}) == {"frequency_cap": caught.value.reason}


def test_an_earlier_field_reason_comes_first(good_row: dict[str, str]) -> None:
    instr = instruction_from_row({**good_row, "budget": "-1", "frequency_cap": "0/1h"})
    with pytest.raises(InstructionError, match="budget must be positive"):
        enrich(instr, version=1, now_s=0)
    assert set(field_errors(instr)) == {"budget", "frequency_cap"}


def test_messages_with_and_without_the_field(good_row: dict[str, str]) -> None:
    plain = instruction_from_row(good_row)
    raw = encode_instruction(plain)
    assert b"frequency_cap" not in raw  # an uncapped instruction is the message of before caps existed
    assert decode_instruction(raw) == plain
    capped = instruction_from_row({**good_row, "frequency_cap": "10/1d"})
    assert decode_instruction(encode_instruction(capped)).frequency_cap == "10/1d"
    assert mapping_errors(good_row) == {}  # the API may omit it
    assert mapping_errors({**good_row, "frequency_cap": 3}) == {
        "frequency_cap": "field frequency_cap: expected a string"
    }
    with pytest.raises(InstructionError, match="field frequency_cap: expected a string"):
        decode_instruction(msgspec.json.encode({**good_row, "frequency_cap": 3}))


def test_pacing_mode_column(good_row: dict[str, str]) -> None:
    """``pacing_mode``: ``asap`` or ``even``; an instruction without it is even (the default of new
    instructions); an ad-change from before the field existed decodes as asap (its behaviour then)."""
    modes = {
        mode: enrich(instruction_from_row({**good_row, "pacing_mode": mode}), version=1, now_s=0).pacing_mode
        for mode in ("asap", "even", "")
    }
    assert modes == {"asap": "asap", "even": "even", "": "even"}
    assert enrich(instruction_from_row(good_row), version=1, now_s=0).pacing_mode == "even"
    for bad in ("ASAP", "fast", " even"):
        instr = instruction_from_row({**good_row, "pacing_mode": bad})
        assert field_errors(instr) == {
            "pacing_mode": f"invalid pacing_mode {bad!r}: expected one of asap, even"
        }
    raw = msgspec.json.decode(msgspec.json.encode(enrich(instruction_from_row(good_row), version=1, now_s=0)))
    del raw["pacing_mode"]
    assert msgspec.json.decode(msgspec.json.encode(raw), type=Campaign).pacing_mode == "asap"
    assert b"pacing_mode" not in encode_instruction(instruction_from_row(good_row))
