"""Where everything lives under the archive directory: one place spells every path.

```
<archive_dir>/
  feedback/date=YYYY-MM-DD/hour=HH/part-*.json   Spark's file sink (committed files listed in _spark_metadata)
  feedback/_spark_metadata/                       the sink's commit log (owned by Spark)
  feedback_compacted/date=.../hour=.../part-NNNNN.json + _manifest   compaction output (see compact.py)
  _corrupt/date=YYYY-MM-DD/part-*.json            messages that did not parse, with their raw value
  request_counts/date=YYYY-MM-DD/part-*.json      ad servers' exact request counts (archive/request_counts.py)
  _checkpoints/feedback, _checkpoints/corrupt, _checkpoints/request_counts   streaming checkpoints
  _STOP                                           stop request for a running writer
  warehouse/ads, warehouse/served_ads/date=...    Parquet snapshots exported from PostgreSQL
  reports/<timestamp>/                            report output
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArchiveLayout:
    """The paths of one archive directory."""

    root: Path

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    @property
    def sink_log(self) -> Path:
        return self.feedback / "_spark_metadata"

    @property
    def compacted(self) -> Path:
        return self.root / "feedback_compacted"

    @property
    def lock_file(self) -> Path:
        """Compaction takes it exclusively, readers shared: a reader never sees a half-swapped partition."""
        return self.compacted / ".lock"

    @property
    def corrupt(self) -> Path:
        return self.root / "_corrupt"

    @property
    def corrupt_log(self) -> Path:
        return self.corrupt / "_spark_metadata"

    @property
    def checkpoints(self) -> Path:
        return self.root / "_checkpoints"

    @property
    def feedback_checkpoint(self) -> Path:
        return self.checkpoints / "feedback"

    @property
    def corrupt_checkpoint(self) -> Path:
        return self.checkpoints / "corrupt"

    @property
    def request_counts(self) -> Path:
        return self.root / "request_counts"

    @property
    def request_counts_checkpoint(self) -> Path:
        return self.checkpoints / "request_counts"

    @property
    def stop_file(self) -> Path:
        return self.root / "_STOP"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse"

    @property
    def reports(self) -> Path:
        return self.root / "reports"
