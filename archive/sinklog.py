"""Spark's file-sink commit log (``<sink>/_spark_metadata``), read in pure Python.

A streaming file sink writes part files straight into the partition directories, then commits the batch by
writing ``_spark_metadata/<batch>``: a ``v1`` line and one JSON line per file (``path`` URI, ``action``
``add``/``delete``). Every ``compactInterval`` batches Spark writes ``<batch>.compact`` holding the whole
state so far, and later deletes older batch files. Files not in the log belong to a batch that never
committed (the job died or was stopped mid-batch); that batch is replayed on restart, so reading them would
duplicate events. This module is how the compactor and the readers know which files count.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from archive.error import ArchiveError

_BATCH_FILE = re.compile(r"^(\d+)(\.compact)?$")


def _local_path(uri: str) -> PurePosixPath:
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        raise ArchiveError(f"sink file {uri}: only local file systems are supported here")
    return PurePosixPath(unquote(parts.path))


def relative_key(uri: str) -> str:
    """``file:///…/feedback/date=D/hour=H/part-x.json`` → ``date=D/hour=H/part-x.json``.

    Keyed by the partition directories rather than the absolute path, so an archive directory that was
    moved or copied elsewhere is still read correctly."""
    parts = _local_path(uri).parts
    start = len(parts) - 1
    while start > 0 and "=" in parts[start - 1]:
        start -= 1
    return "/".join(parts[start:])


def _batches(log_dir: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, bool, Path]] = []
    for entry in log_dir.iterdir():
        match = _BATCH_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2) is not None, entry))
    compacts = [batch for batch, compact, _ in found if compact]
    latest_compact = max(compacts, default=-1)
    chosen = [
        (batch, path)
        for batch, compact, path in found
        if (compact and batch == latest_compact) or (not compact and batch > latest_compact)
    ]
    return sorted(chosen)


def _read_batch(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "v1":
        raise ArchiveError(f"{path}: unsupported file-sink log version {lines[:1]!r}")
    entries: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line.strip():
            record = json.loads(line)
            entries.append((str(record["action"]), str(record["path"])))
    return entries


def committed_files(sink_dir: Path, *, attempts: int = 3) -> list[str]:
    """Keys (``date=…/hour=…/part-….json``, relative to ``sink_dir``) of every committed file, in commit
    order. Empty when the sink has never committed a batch."""
    log_dir = sink_dir / "_spark_metadata"
    if not log_dir.is_dir():
        return []
    for attempt in range(attempts):
        try:
            live: dict[str, None] = {}
            for _, path in _batches(log_dir):
                for action, uri in _read_batch(path):
                    key = relative_key(uri)
                    if action == "add":
                        live[key] = None
                    elif action == "delete":
                        live.pop(key, None)
            return list(live)
        except FileNotFoundError:
            # Spark deleted a superseded batch file while we listed (after writing a newer .compact).
            if attempt == attempts - 1:
                raise
    return []
