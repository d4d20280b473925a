"""The archive's side of the books, for the demo and the fault scenarios: what the JSON archive holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from archive.layout import ArchiveLayout
from archive.reader import iter_lines, read_lock, snapshot


@dataclass(frozen=True)
class ArchiveBooks:
    events: int
    #: Records whose event_id was already seen: a duplicate in the archive.
    duplicates: int
    spend_micros: int
    #: Committed files that are gone: lost outside the platform's control.
    missing_files: int


def archive_books(archive_dir: Path) -> ArchiveBooks:
    """Count the committed archive (compacted and not), each event once by ``event_id``."""
    layout = ArchiveLayout(archive_dir)
    counts: dict[str, int] = {}
    spend: dict[str, int] = {}
    with read_lock(layout):
        snap = snapshot(layout)
        for line in iter_lines(snap.files):
            event = orjson.loads(line)
            event_id = event["event_id"]
            counts[event_id] = counts.get(event_id, 0) + 1
            spend[event_id] = int(event["expenditure_micros"])
    return ArchiveBooks(
        events=len(counts),
        duplicates=sum(n - 1 for n in counts.values()),
        spend_micros=sum(spend.values()),
        missing_files=len(snap.missing),
    )
