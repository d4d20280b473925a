"""Compaction and the archive reader on a synthetic file-sink layout (no Spark, no services)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from archive.compact import FAULT_ENV, FAULT_POINTS, compact, partition_start
from archive.layout import ArchiveLayout
from archive.reader import iter_lines, read_lock, snapshot
from archive.sinklog import committed_files, relative_key
from tests.archive.fake_sink import commit, line, orphan, write_batch

P8 = "date=2025-10-09/hour=08"
P9 = "date=2025-10-09/hour=09"
NOW = datetime(2025, 10, 9, 10, 5, tzinfo=UTC)


def event_ids(layout: ArchiveLayout) -> list[str]:
    with read_lock(layout, timeout_s=5):
        files = snapshot(layout).files
        return [str(orjson.loads(raw)["event_id"]) for raw in iter_lines(files)]


def data_files(layout: ArchiveLayout) -> dict[str, list[str]]:
    """Visible data files per compacted partition (what a glob of the compacted tree would see)."""
    found: dict[str, list[str]] = {}
    for path in sorted(layout.compacted.glob("*/*/*.json")):
        if not path.name.startswith(("_", ".")):
            found.setdefault(f"{path.parent.parent.name}/{path.parent.name}", []).append(path.name)
    return found


@pytest.fixture
def layout(tmp_path: Path) -> ArchiveLayout:
    """An archive: 3 committed batches over two hours (the third in a .compact), one orphan file."""
    layout = ArchiveLayout(tmp_path / "archive")
    sink = layout.feedback
    write_batch(
        sink, 0, [(P8, [line(f"e{i}") for i in range(0, 40)]), (P9, [line(f"e{i}") for i in range(40, 50)])]
    )
    keys1 = write_batch(sink, 1, [(P8, [line(f"e{i}") for i in range(50, 70)])])
    # Batch 2 is a log compaction: the whole state (batches 0..2) in one file; batch 3 follows it.
    keys2 = write_batch(sink, 2, [(P9, [line(f"e{i}") for i in range(70, 90)])])
    commit(sink, 2, committed_files(sink) + keys1 + keys2, compact=True)
    write_batch(sink, 3, [(P9, [line(f"e{i}") for i in range(90, 100)])])
    orphan(sink, P8, [line("e5"), line("uncommitted")])
    return layout


def test_sinklog_lists_committed_files_only(layout: ArchiveLayout) -> None:
    keys = committed_files(layout.feedback)
    assert len(keys) == len(set(keys)) == 5
    assert all(k.startswith((P8, P9)) for k in keys)
    ids = event_ids(layout)
    assert sorted(ids) == sorted(f"e{i}" for i in range(100)), "orphan lines must not be read"


def test_sinklog_applies_delete_entries(layout: ArchiveLayout) -> None:
    victim = committed_files(layout.feedback)[0]
    commit(layout.feedback, 4, [victim], action="delete")
    assert victim not in committed_files(layout.feedback)


def test_relative_key_survives_a_moved_archive() -> None:
    uri = "file:///old/place/feedback/date=2025-10-09/hour=08/part-0%20x.json"
    assert relative_key(uri) == "date=2025-10-09/hour=08/part-0 x.json"


def test_partition_start() -> None:
    assert partition_start(P8) == datetime(2025, 10, 9, 8, tzinfo=UTC)
    assert partition_start("date=2025-10-09") is None
    assert partition_start("x=1/y=2") is None


def test_compacts_closed_partitions_into_one_file_each(layout: ArchiveLayout) -> None:
    # 10:05 with a 15 min grace: hour 08 is closed, hour 09 (ended 10:00) is still open.
    first = compact(layout, now=NOW, grace=timedelta(minutes=15))
    assert (first.partitions_compacted, first.partitions_open, first.records_written) == (1, 1, 60)
    assert data_files(layout) == {P8: ["part-00001.json"]}
    assert sorted(event_ids(layout)) == sorted(f"e{i}" for i in range(100))
    remaining = [p.name for p in (layout.feedback / P8).glob("part-*.json")]
    assert len(remaining) == 1, "only the uncommitted orphan stays in the sink partition"
    assert not list((layout.feedback / P8).glob(".*.crc")), "checksums of compacted files removed too"

    second = compact(layout, now=NOW, all_partitions=True)
    assert (second.partitions_compacted, second.records_written) == (1, 40)
    assert data_files(layout) == {P8: ["part-00001.json"], P9: ["part-00001.json"]}
    again = compact(layout, now=NOW, all_partitions=True)
    assert again.partitions_compacted == 0, "idempotent"
    assert Counter(event_ids(layout)) == Counter(f"e{i}" for i in range(100))


def test_late_files_go_into_the_next_generation_content_unchanged(layout: ArchiveLayout) -> None:
    compact(layout, now=NOW, all_partitions=True)
    # A late event for hour 08 and a redelivered one (same event_id), committed after the compaction; the
    # last line without its newline (compaction must not glue it to the next file's first line).
    keys = write_batch(layout.feedback, 4, [(P8, [line("late"), line("e3")])])
    path = layout.feedback / keys[0]
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    expected = Counter([*(f"e{i}" for i in range(100)), "late", "e3"])
    assert Counter(event_ids(layout)) == expected
    summary = compact(layout, now=NOW, all_partitions=True)
    assert (summary.partitions_compacted, summary.records_written) == (1, 62)
    assert data_files(layout)[P8] == ["part-00002.json"]
    assert Counter(event_ids(layout)) == expected, "layout changes, content does not (readers de-duplicate)"


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_compaction_killed_at_any_point_then_rerun(layout: ArchiveLayout, point: str, repo_root: str) -> None:
    expected = Counter(f"e{i}" for i in range(100))
    compact(layout, now=NOW, grace=timedelta(minutes=15))  # hour 08 compacted: the kill hits generation 2
    write_batch(layout.feedback, 4, [(P8, [line("late")])])
    expected["late"] += 1
    env = {**os.environ, "ADP_ARCHIVE_DIR": str(layout.root), FAULT_ENV: point, "ADP_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "adplatform.cli", "archive", "compact", "--all"]
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    try:
        for raw in proc.stderr:
            if raw.decode().strip() == f"FAULT {point}":
                break
        else:
            pytest.fail(f"compaction ended without reaching {point} (exit {proc.wait()})")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # At the crash point itself a reader sees every record exactly once.
    assert Counter(event_ids(layout)) == expected
    env.pop(FAULT_ENV)
    done = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, timeout=60, check=True)
    assert b"compacted" in done.stdout
    assert Counter(event_ids(layout)) == expected
    files = data_files(layout)
    assert set(files) == {P8, P9} and all(len(names) == 1 for names in files.values()), files
    assert not [p for p in layout.compacted.rglob("*") if p.name.endswith(".tmp")]
    assert all(not (layout.feedback / k).exists() for k in committed_files(layout.feedback))
