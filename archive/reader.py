"""What the archive holds right now: the files a reader must read, and a pure-Python record iterator.

The archive is the union of compacted partitions (the file each manifest names) and the committed sink
files not yet replaced by a compaction. Files the sink wrote but never committed are ignored (see
``archive.sinklog``). Take ``read_lock`` around the listing *and* the reading, so a concurrent compaction
cannot delete a file between the two.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from archive.durable import file_lock
from archive.layout import ArchiveLayout
from archive.manifest import load_manifests
from archive.sinklog import committed_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveSnapshot:
    """The data files of the archive at one moment."""

    compacted: tuple[Path, ...]
    uncompacted: tuple[Path, ...]
    #: Committed sink files that are neither on disk nor compacted: lost outside our control.
    missing: tuple[str, ...]

    @property
    def files(self) -> tuple[Path, ...]:
        return self.compacted + self.uncompacted


def snapshot(layout: ArchiveLayout) -> ArchiveSnapshot:
    """List the archive's current data files (call under ``read_lock``)."""
    manifests = load_manifests(layout.compacted)
    replaced = {source for m in manifests.values() for source in m.sources}
    compacted = tuple(layout.compacted / m.partition / m.file for m in manifests.values())
    uncompacted: list[Path] = []
    missing: list[str] = []
    for key in committed_files(layout.feedback):
        if key in replaced:
            continue
        path = layout.feedback / key
        if path.is_file():
            uncompacted.append(path)
        else:
            missing.append(key)
    if missing:
        logger.warning("%d committed archive files are missing, e.g. %s", len(missing), missing[0])
    return ArchiveSnapshot(compacted, tuple(uncompacted), tuple(missing))


@contextlib.contextmanager
def read_lock(layout: ArchiveLayout, timeout_s: float = 600.0) -> Iterator[None]:
    """Shared lock: compaction waits while readers read."""
    with file_lock(layout.lock_file, exclusive=False, timeout_s=timeout_s):
        yield


def iter_lines(files: tuple[Path, ...]) -> Iterator[bytes]:
    """Every non-empty JSON line of ``files``."""
    for path in files:
        with path.open("rb") as f:
            for line in f:
                line = line.rstrip(b"\n")
                if line:
                    yield line
