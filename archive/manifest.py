"""The manifest of one compacted partition: which data file is current and which sink files it replaced.

``feedback_compacted/date=D/hour=H/_manifest`` is the commit point of a compaction: written atomically
(temp, fsync, rename, fsync) after the merged data file is durable. From that moment readers take the data
file named here and ignore every sink file listed in ``sources`` (cumulative over generations), whether or
not the compactor got to delete it yet.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from archive.durable import atomic_write
from archive.error import ArchiveError

#: No ``.json`` suffix: tools that glob ``*.json`` for records must not pick the manifest up.
MANIFEST_NAME = "_manifest"


class PartitionManifest(msgspec.Struct, frozen=True, kw_only=True):
    """State of one compacted partition (``partition`` = ``date=D/hour=H``)."""

    partition: str
    generation: int
    #: The current data file, in the partition's compacted directory.
    file: str
    records: int
    #: Sink files (keys relative to ``feedback/``) whose records ``file`` holds.
    sources: tuple[str, ...]
    compacted_at: str
    version: int = 1


_decoder = msgspec.json.Decoder(PartitionManifest)
_encoder = msgspec.json.Encoder()


def data_file_name(generation: int) -> str:
    return f"part-{generation:05d}.json"


def load_manifest(directory: Path) -> PartitionManifest | None:
    """The manifest in ``directory`` or None when the partition was never compacted."""
    path = directory / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        # Cannot happen through atomic_write; a hand-edited or truncated-by-disk manifest stops compaction
        # rather than letting it guess which records are where.
        raise ArchiveError(f"{path}: unreadable compaction manifest: {exc}") from None


def store_manifest(directory: Path, manifest: PartitionManifest) -> None:
    atomic_write(directory / MANIFEST_NAME, _encoder.encode(manifest) + b"\n")


def load_manifests(compacted_dir: Path) -> dict[str, PartitionManifest]:
    """Every committed manifest under the compacted tree, keyed by partition."""
    found: dict[str, PartitionManifest] = {}
    if not compacted_dir.is_dir():
        return found
    for path in sorted(compacted_dir.glob(f"*/*/{MANIFEST_NAME}")):
        manifest = load_manifest(path.parent)
        if manifest is not None:
            found[manifest.partition] = manifest
    return found
