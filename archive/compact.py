"""Compaction: merge the small part files of each closed archive partition into one file per partition.

Layout decision. Spark's file sink owns ``feedback/`` and its ``_spark_metadata`` log; rewriting files
there would either race the running query (which appends to that log by batch id) or leave the log listing
files that no longer exist. So compaction writes a separate tree, ``feedback_compacted/date=D/hour=H/``,
holding one data file ``part-NNNNN.json`` (the sink's JSON lines, byte for byte) and a ``_manifest``
naming that file and the sink files it replaced. Readers (``archive.reader``) read the compacted files
plus the committed sink files no manifest lists. After compaction Spark's own ``spark.read.json("feedback/")``
is no longer a valid way to read the archive (its log still lists the deleted sources); ours do not use it.

Only files committed in ``_spark_metadata`` are touched, so a part file Spark is still writing is never
read or deleted. A partition is compacted once it is closed (its hour ended more than ``grace`` ago), or
any partition with ``all_partitions`` (meant for when the writer is stopped; even then only committed
files are merged). Events that arrive late for a compacted partition land in new sink files; the next run
merges them into the next generation.

Compaction changes the layout, never the content: it copies lines in constant memory and does not
de-duplicate (an hour at 5,000 events/s is ~18M ids); readers de-duplicate by ``event_id``.

Crash safety, per partition, in this order:
1. merged data → ``.part-G.json.tmp``; fsync;             (crash: the temp file is garbage)
2. rename to ``part-G.json``; fsync the directory;        (crash: unreferenced file, garbage)
3. atomic replace of ``_manifest``  ← commit point   (readers switch to part-G, ignore its sources)
4. delete the sources and the previous generation.        (crash: leftovers, deleted by the next run)
Every run starts by finishing step 4 and removing garbage of steps 1–2, under a lock it holds exclusively
and readers take shared, so a run killed at any point and run again yields each committed line exactly once.
Fault injection for tests: ``ADP_COMPACT_FAULT=<point>`` makes the process announce the point on stderr and
hang there (to be SIGKILLed); points are ``FAULT_POINTS``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archive.durable import file_lock, fsync_dir
from archive.layout import ArchiveLayout
from archive.manifest import (
    MANIFEST_NAME,
    PartitionManifest,
    data_file_name,
    load_manifest,
    load_manifests,
    store_manifest,
)
from archive.sinklog import committed_files

logger = logging.getLogger(__name__)

FAULT_ENV = "ADP_COMPACT_FAULT"
FAULT_POINTS = ("after_temp_write", "after_data_rename", "after_manifest", "mid_source_delete")


@dataclass
class CompactionSummary:
    """What one run did."""

    partitions_compacted: int = 0
    files_merged: int = 0
    records_written: int = 0
    #: Partitions with new files left alone because they are still open.
    partitions_open: int = 0
    #: Leftovers of an interrupted run removed (sources, temp files, superseded generations).
    leftovers_removed: int = 0
    partitions: list[str] = field(default_factory=list)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.write(2, f"FAULT {point}\n".encode())
        while True:  # wait for the test to SIGKILL us here
            time.sleep(60)


def partition_start(partition: str) -> datetime | None:
    """``date=2025-10-09/hour=08`` → 2025-10-09T08:00Z (None for a directory of another shape)."""
    try:
        date_part, hour_part = partition.split("/")
        if not (date_part.startswith("date=") and hour_part.startswith("hour=")):
            return None
        day = datetime.strptime(date_part[5:], "%Y-%m-%d").replace(tzinfo=UTC)
        return day + timedelta(hours=int(hour_part[5:]))
    except ValueError:
        return None


def _unlink(path: Path) -> bool:
    """Delete a sink or compacted file and Hadoop's ``.<name>.crc`` beside it; True if the file existed."""
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _recover(layout: ArchiveLayout) -> int:
    """Finish or undo what an interrupted run left: returns the number of leftovers removed."""
    removed = 0
    if not layout.compacted.is_dir():
        return 0
    for directory in sorted(p for p in layout.compacted.glob("*/*") if p.is_dir()):
        manifest = load_manifest(directory)
        keep = {MANIFEST_NAME} | ({manifest.file} if manifest else set())
        for entry in directory.iterdir():
            if entry.name not in keep and entry.is_file():
                entry.unlink()
                removed += 1
        if manifest is None:
            continue
        touched: set[Path] = set()
        for source in manifest.sources:
            path = layout.feedback / source
            if _unlink(path):
                removed += 1
                touched.add(path.parent)
        for parent in touched:
            fsync_dir(parent)
        fsync_dir(directory)
    return removed


def _merge(out: Path, inputs: list[Path]) -> int:
    """Concatenate ``inputs`` into ``out`` byte for byte (every file ending in a newline); fsync. Returns
    the number of records (lines). Constant memory: an hour at 5,000 events/s is ~18M lines."""
    records = 0
    with out.open("wb") as sink:
        for path in inputs:
            last = b"\n"
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    sink.write(chunk)
                    records += chunk.count(b"\n")
                    last = chunk[-1:]
            if last != b"\n":  # a file whose last line lacks its newline must not glue onto the next
                sink.write(b"\n")
                records += 1
        sink.flush()
        os.fsync(sink.fileno())
    return records


def _compact_partition(
    layout: ArchiveLayout, partition: str, new_sources: list[str], summary: CompactionSummary
) -> None:
    directory = layout.compacted / partition
    directory.mkdir(parents=True, exist_ok=True)
    fsync_dir(directory.parent)
    fsync_dir(layout.compacted)
    previous = load_manifest(directory)
    generation = previous.generation + 1 if previous else 1
    inputs = ([directory / previous.file] if previous else []) + [layout.feedback / s for s in new_sources]
    name = data_file_name(generation)
    tmp = directory / f".{name}.tmp"
    records = _merge(tmp, inputs)
    _fault("after_temp_write")
    os.replace(tmp, directory / name)
    fsync_dir(directory)
    _fault("after_data_rename")
    sources = tuple(sorted({*(previous.sources if previous else ()), *new_sources}))
    store_manifest(
        directory,
        PartitionManifest(
            partition=partition,
            generation=generation,
            file=name,
            records=records,
            sources=sources,
            compacted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ),
    )
    _fault("after_manifest")
    # Committed: from here on the sources are dead weight; a crash leaves them for _recover.
    for i, source in enumerate(new_sources):
        _unlink(layout.feedback / source)
        if i == 0:
            _fault("mid_source_delete")
    if previous:
        _unlink(directory / previous.file)
    fsync_dir(layout.feedback / partition)
    fsync_dir(directory)
    summary.partitions_compacted += 1
    summary.files_merged += len(new_sources)
    summary.records_written += records
    summary.partitions.append(partition)


def compact(
    layout: ArchiveLayout,
    *,
    now: datetime | None = None,
    grace: timedelta = timedelta(minutes=15),
    all_partitions: bool = False,
    lock_timeout_s: float = 600.0,
) -> CompactionSummary:
    """Compact every closed partition (every partition with ``all_partitions``) that has committed sink
    files not yet compacted. Idempotent; safe to re-run after a crash at any point."""
    now = now if now is not None else datetime.now(UTC)
    summary = CompactionSummary()
    with file_lock(layout.lock_file, exclusive=True, timeout_s=lock_timeout_s):
        summary.leftovers_removed = _recover(layout)
        replaced = {s for m in load_manifests(layout.compacted).values() for s in m.sources}
        pending: dict[str, list[str]] = defaultdict(list)
        for key in committed_files(layout.feedback):
            if key in replaced or not (layout.feedback / key).is_file():
                continue
            partition, _, _ = key.rpartition("/")
            pending[partition].append(key)
        for partition, sources in sorted(pending.items()):
            start = partition_start(partition)
            if start is None:
                logger.warning("skipping %s: not a date=/hour= partition", partition)
                continue
            if not all_partitions and start + timedelta(hours=1) + grace > now:
                summary.partitions_open += 1
                continue
            _compact_partition(layout, partition, sources, summary)
    logger.info(
        "compaction: %d partitions, %d files → %d records, %d open, %d leftovers removed",
        summary.partitions_compacted,
        summary.files_merged,
        summary.records_written,
        summary.partitions_open,
        summary.leftovers_removed,
    )
    return summary
