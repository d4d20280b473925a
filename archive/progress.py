"""How far the archive has committed: the Kafka offsets of its last committed micro-batch, read from the
streaming query's checkpoint in pure Python, and the commit lag against the topic's end (a gauge).

A Structured Streaming checkpoint writes ``offsets/<batch>`` (the planned end offsets of each micro-batch:
a version line, a metadata line, then one JSON object per source, ``{"topic": {"0": 123, ...}}``) before
the batch runs and ``commits/<batch>`` once its output is committed. The committed offsets are therefore
those of the highest batch that has a commit file; records before them are in the archive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adplatform.config import Config
from adplatform.metrics import ARCHIVE_COMMITTED_BATCHES, ARCHIVE_LAG
from archive.layout import ArchiveLayout

logger = logging.getLogger(__name__)

LAG_INTERVAL_S: Final = 5.0


def _batch_ids(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def last_committed_batch(checkpoint: Path) -> int | None:
    """Id of the newest batch with both an offsets file and a commit file; None before the first."""
    planned = set(_batch_ids(checkpoint / "offsets"))
    committed = [b for b in _batch_ids(checkpoint / "commits") if b in planned]
    return committed[-1] if committed else None


def committed_offsets(checkpoint: Path) -> dict[tuple[str, int], int]:
    """(topic, partition) → the next offset after the last committed batch; {} before the first commit."""
    batch = last_committed_batch(checkpoint)
    if batch is None:
        return {}
    lines = (checkpoint / "offsets" / str(batch)).read_text(encoding="utf-8").splitlines()
    out: dict[tuple[str, int], int] = {}
    for line in lines[2:]:  # after the version and the batch metadata: one line per source
        if not line.strip().startswith("{"):
            continue
        for topic, partitions in json.loads(line).items():
            for partition, offset in partitions.items():
                out[(topic, int(partition))] = int(offset)
    return out


async def commit_lag(config: Config) -> dict[int, int]:
    """Partition → records of ``ad-feedback`` after the archive's committed offset (from the beginning
    offset, retention included, when the archive has committed nothing of that partition yet)."""
    checkpoint = ArchiveLayout(config.archive_dir).feedback_checkpoint
    committed = await asyncio.to_thread(committed_offsets, checkpoint)
    topic = config.topics.feedback
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # Synchronous in aiokafka (from its metadata cache, None before the topic's metadata arrived).
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return {
        tp.partition: max(ends[tp] - max(committed.get((topic, tp.partition), 0), starts[tp]), 0)
        for tp in tps
    }


class ArchiveLagTracker:
    """A daemon thread of the archive's driver that refreshes ``archive_commit_lag_records`` (its own
    event loop: the driver's main thread is Spark's)."""

    def __init__(self, config: Config, interval_s: float = LAG_INTERVAL_S) -> None:
        self._config = config
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archive-lag", daemon=True)

    def start(self) -> ArchiveLagTracker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 10)

    def refresh(self) -> None:
        lag = asyncio.run(commit_lag(self._config))
        for partition, records in lag.items():
            ARCHIVE_LAG.labels(self._config.topics.feedback, str(partition)).set(records)
        checkpoint = ArchiveLayout(self._config.archive_dir).feedback_checkpoint
        batch = last_committed_batch(checkpoint)
        ARCHIVE_COMMITTED_BATCHES.set(-1 if batch is None else batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except (KafkaError, OSError, ValueError) as exc:  # ValueError: a checkpoint file mid-write
                logger.debug("archive lag not refreshed: %s", exc)
            except Exception:  # top-level guard of the thread: a bug logs, the next refresh still runs
                logger.exception("archive lag refresh failed")
            self._stop.wait(self._interval_s)
