from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ingest.csvfile import RowError, iter_campaign_rows, read_campaign_csv, rebase_dates, validate_row
from ingest.instruction import COLUMNS, InstructionError, enrich, instruction_from_row


def _line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    return buf.getvalue()


def _write(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "campaigns.csv"
    path.write_bytes(body)
    return path


def test_reads_rows_and_reports_bad_lines(tmp_path: Path, good_row: dict[str, str]) -> None:
    good = _line([good_row[c] for c in COLUMNS]).encode()
    multiline = _line([good_row[c] if c != "text" else "two\nlines" for c in COLUMNS]).encode()
    body = (
        _line(list(COLUMNS)).encode()  # line 1
        + good  # line 2
        + b"a,b,c\r\n"  # line 3: too few columns
        + multiline  # lines 4-5
        + good.replace(b"Toyota", b"Toyota \xff")  # line 6: bad encoding
        + b"\r\n"  # line 7: blank, skipped
        + good  # line 8
    )
    path = _write(tmp_path, body)
    items = list(read_campaign_csv(path))
    errors = [str(i) for i in items if isinstance(i, RowError)]
    rows = [i for i in items if not isinstance(i, RowError)]
    assert errors == [f"{path}:3: expected 17 columns, got 3", f"{path}:6: not UTF-8"]
    assert [line for line, _ in rows] == [2, 4, 8]
    assert rows[0][1] == good_row
    assert rows[1][1]["text"] == "two\nlines"


def test_header_order_and_extra_columns(good_row: dict[str, str]) -> None:
    header = ["extra", *reversed(COLUMNS)]
    lines = [
        b"\xef\xbb\xbf" + _line(header).encode(),
        _line(["x", *(good_row[c] for c in reversed(COLUMNS))]).encode(),
    ]
    assert list(iter_campaign_rows(lines, "mem")) == [(2, good_row)]


def test_missing_header_columns_stop_the_file() -> None:
    lines = [b"text,category\r\n", b"a,b\r\n"]
    [error] = list(iter_campaign_rows(lines, "f.csv"))
    assert isinstance(error, RowError)
    assert (error.path, error.line) == ("f.csv", 1)
    assert error.reason.startswith("missing columns: keywords, campaign_id")


def test_empty_file() -> None:
    [error] = list(iter_campaign_rows([], "f.csv"))
    assert str(error) == "f.csv:1: empty file"


def test_oversized_field_is_reported_and_reading_goes_on(good_row: dict[str, str]) -> None:
    lines = [
        _line(list(COLUMNS)).encode(),
        b'"' + b"x" * 200_000 + b'",b\r\n',
        _line([good_row[c] for c in COLUMNS]).encode(),
    ]
    items = list(iter_campaign_rows(lines, "f.csv"))
    assert isinstance(items[0], RowError)
    assert items[0].line == 2
    assert items[0].reason.startswith("malformed CSV")
    assert items[-1] == (3, good_row)


def test_rebase_dates_starts_now_and_keeps_length(good_row: dict[str, str]) -> None:
    good_row["date_range"] = "{'start': '2025-09-13', 'end': '2025-09-14'}"
    good_row["time_range"] = "{'start': '22:00:00', 'end': '0:00:00'}"
    now = datetime(2026, 1, 5, 23, 30, 45, 123, tzinfo=UTC)
    rebased = rebase_dates(good_row, now)
    assert rebased["date_range"] == "{'start': '2026-01-05', 'end': '2026-01-06'}"
    assert rebased["time_range"] == "{'start': '23:30:00', 'end': '1:30:00'}"
    assert {k: v for k, v in rebased.items() if k not in ("date_range", "time_range")} == {
        k: v for k, v in good_row.items() if k not in ("date_range", "time_range")
    }
    campaign = enrich(instruction_from_row(rebased), version=1, now_s=0)
    assert campaign.flight_start_s == int(datetime(2026, 1, 5, 23, 30, tzinfo=UTC).timestamp())
    assert campaign.flight_end_s - campaign.flight_start_s == 2 * 3600
    assert campaign.live_at(now.timestamp())


def test_rebase_dates_converts_to_utc(good_row: dict[str, str]) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    rebased = rebase_dates(good_row, datetime(2026, 1, 6, 5, 0, 59, tzinfo=ist))
    assert rebased["date_range"] == "{'start': '2026-01-05', 'end': '2026-01-07'}"
    assert rebased["time_range"] == "{'start': '23:30:00', 'end': '12:30:00'}"
    naive = rebase_dates(good_row, datetime(2026, 1, 5, 23, 30))
    assert naive["time_range"] == "{'start': '23:30:00', 'end': '12:30:00'}"


def test_rebase_dates_rejects_bad_flight(good_row: dict[str, str]) -> None:
    good_row["date_range"] = "soon"
    with pytest.raises(InstructionError, match="unparsable date_range"):
        rebase_dates(good_row, datetime(2026, 1, 5, tzinfo=UTC))


def test_validate_row(good_row: dict[str, str]) -> None:
    assert validate_row(good_row).campaign_id == good_row["campaign_id"]
    good_row["budget"] = "0"
    with pytest.raises(InstructionError) as info:
        validate_row(good_row)
    assert info.value.reason == "budget must be positive"
