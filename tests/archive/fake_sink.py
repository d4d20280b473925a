"""A directory laid out as Spark's streaming file sink leaves it, for pure-Python tests of compaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson


def line(event_id: str, **fields: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "campaign_id": "c1", "expenditure_micros": 1, **fields})


def write_batch(
    sink: Path, batch: int, files: Sequence[tuple[str, Sequence[bytes]]], *, compact: bool = False
) -> list[str]:
    """Write part files (partition, lines) and commit them as ``batch`` in ``_spark_metadata``."""
    log = sink / "_spark_metadata"
    log.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for partition, lines in files:
        directory = sink / partition
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-00000-{uuid.uuid4()}.c000.json"
        (directory / name).write_bytes(b"".join(lc + b"\n" for lc in lines))
        (directory / f".{name}.crc").write_bytes(b"crc")
        keys.append(f"{partition}/{name}")
    commit(sink, batch, keys, compact=compact)
    return keys


def commit(
    sink: Path, batch: int, keys: Sequence[str], *, compact: bool = False, action: str = "add"
) -> None:
    entries = [
        json.dumps({"path": f"file://{sink / key}", "size": 1, "isDir": False, "action": action})
        for key in keys
    ]
    name = f"{batch}.compact" if compact else str(batch)
    (sink / "_spark_metadata" / name).write_text("\n".join(["v1", *entries]) + "\n")


def orphan(sink: Path, partition: str, lines: Sequence[bytes]) -> Path:
    """A part file of a batch that never committed (the job died mid-batch)."""
    path = sink / partition / f"part-00001-{uuid.uuid4()}.c000.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lc + b"\n" for lc in lines))
    return path
