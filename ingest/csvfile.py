"""Reading campaign CSV files in the seed format, row by row, reporting bad rows without stopping.

``read_campaign_csv`` yields ``(line, row)`` for good rows and a ``RowError`` for each bad one, so a
producer can print ``FILE:LINE: reason`` and go on with the rest of the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from adplatform.instruction import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    CampaignInstruction,
    InstructionError,
    enrich,
    format_flight,
    instruction_from_row,
    parse_flight,
)
from ingest.error import IngestError

__all__ = [
    "RowError",
    "format_flight",
    "iter_campaign_rows",
    "read_campaign_csv",
    "rebase_dates",
    "validate_row",
]

_BOM: Final = b"\xef\xbb\xbf"


class RowError(IngestError):
    """A bad row (or file) at ``path:line``; ``str()`` gives the ``FILE:LINE: reason`` report."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class _Lines:
    """Decodes a binary file line by line, remembering which physical lines were not UTF-8.

    Decoding per line (rather than opening the file as text) lets one bad byte spoil one row, not the file.
    """

    def __init__(self, raw_lines: Iterable[bytes]) -> None:
        self._raw = iter(raw_lines)
        self.number = 0
        self.bad: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self._raw)
        self.number += 1
        if self.number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad.add(self.number)
            return raw.decode("utf-8", errors="replace")


def read_campaign_csv(path: str | Path) -> Iterator[tuple[int, dict[str, str]] | RowError]:
    """Yield ``(line, row)`` per good data row (line numbers are 1-based, the header is line 1)."""
    name = str(path)
    with open(path, "rb") as fh:
        yield from iter_campaign_rows(fh, name)


def iter_campaign_rows(
    raw_lines: Iterable[bytes], name: str
) -> Iterator[tuple[int, dict[str, str]] | RowError]:
    """``read_campaign_csv`` over any iterable of binary lines (a file, a socket, a test's list)."""
    lines = _Lines(raw_lines)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        yield RowError(name, 1, "empty file")
        return
    except csv.Error as exc:
        yield RowError(name, 1, f"malformed header: {exc}")
        return
    if lines.bad:
        yield RowError(name, 1, "header is not UTF-8")
        return
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        yield RowError(name, 1, f"missing columns: {', '.join(missing)}")
        return
    # Optional columns (``frequency_cap``) are read when the file has them; without them a row means the
    # defaults (uncapped), so files written before they existed stay valid.
    index = {c: header.index(c) for c in (*COLUMNS, *OPTIONAL_COLUMNS) if c in header}
    while True:
        # A quoted field may span lines: report the record's first physical line.
        start = lines.number + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines.bad.clear()
            yield RowError(name, start, f"malformed CSV: {exc}")
            continue
        # The reader never reads ahead, so bad lines seen now belong to this record.
        if lines.bad:
            lines.bad.clear()
            yield RowError(name, start, "not UTF-8")
            continue
        if not record:
            continue  # blank line
        if len(record) != len(header):
            yield RowError(name, start, f"expected {len(header)} columns, got {len(record)}")
            continue
        yield start, {c: record[i] for c, i in index.items()}


def rebase_dates(row: Mapping[str, str], now: datetime) -> dict[str, str]:
    """A copy of ``row`` whose flight starts at ``now`` (UTC, truncated to the minute), same length.

    Raises ``InstructionError`` if the row's flight does not parse. A naive ``now`` is taken as UTC.
    """
    for name in ("date_range", "time_range"):
        if name not in row:
            raise InstructionError(f"missing field: {name}")
    start_s, end_s = parse_flight(row["date_range"], row["time_range"])
    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    start = moment.replace(second=0, microsecond=0)
    date_range, time_range = format_flight(start, start + timedelta(seconds=end_s - start_s))
    return {**row, "date_range": date_range, "time_range": time_range}


def validate_row(row: Mapping[str, str]) -> CampaignInstruction:
    """Run the Ad Manager's checks on a row (raises ``InstructionError``); returns the instruction to send."""
    instr = instruction_from_row(row)
    enrich(instr, version=0, now_s=0)
    return instr
