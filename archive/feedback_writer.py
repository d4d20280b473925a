"""The streaming archive: ``ad-feedback`` → JSON files under ``<archive_dir>/feedback/date=…/hour=…``.

Run it either way (same job):

    adplatform archive run [--trigger-s 5] [--until-idle | --max-seconds N]
    adplatform archive submit [--master URL] [--packages] [--print] [-- --until-idle ...]

``archive submit`` runs this file under the virtualenv's ``spark-submit`` with its Python and the stack's
connector jars (``archive.submit``): the bare ``spark-submit`` launcher needs the virtualenv activated.

Two Structured Streaming queries read the topic, each with its own checkpoint: valid events go to the
file sink ``feedback/`` and messages that do not parse to ``_corrupt/``. A third archives the ad servers'
exact request counts (``ad-request-counts`` → ``request_counts/``, see ``archive.request_counts``).
Spark's file sink is exactly-once: a batch's files become visible only when the batch is recorded in
``_spark_metadata``, and a restart replays the uncommitted batch from the checkpointed offsets. Readers must
therefore list files through that log (``archive.sinklog``), never by globbing: an interrupted batch can
leave uncommitted part files.

The job stops cleanly on SIGTERM/SIGINT or when ``<archive_dir>/_STOP`` appears (``adplatform archive
stop``): it waits for the running micro-batch to finish, then stops the queries. ``until_idle`` uses
``Trigger.AvailableNow``: it processes every offset available at start, then ends (tests, backfills).

Degradation: when Kafka is unreachable the Kafka source retries, then the query fails; the process exits
non-zero (``ArchiveError``) for its supervisor to restart, and the restart resumes from the checkpoint.
A full disk fails the batch the same way; nothing is committed that was not written.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    # spark-submit runs this file as a script: sys.path[0] is archive/, not the project root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adplatform.config import Config, load_config
from adplatform.process import configure_logging
from archive.error import ArchiveError
from archive.layout import ArchiveLayout
from archive.parse import PARTITION_COLUMNS, corrupt_rows, feedback_rows, with_parsed
from archive.request_counts import PARTITION_COLUMNS as COUNTS_PARTITIONS
from archive.request_counts import QUERY_NAME as COUNTS_QUERY
from archive.request_counts import counts_rows

logger = logging.getLogger(__name__)

APP_NAME = "adplatform-feedback-archive"
#: The least trigger interval of the corrupt query (``corrupt_trigger_s``).
CORRUPT_TRIGGER_S = 30.0


@dataclass(frozen=True)
class WriterOptions:
    """How the streaming job runs."""

    trigger_s: float = 5.0
    #: Process what is in the topic now, then stop (Trigger.AvailableNow).
    until_idle: bool = False
    #: Stop gracefully after this long (None: until a stop request).
    max_seconds: float | None = None
    #: Bounds a micro-batch after downtime, so catching up does not build one giant batch.
    max_offsets_per_trigger: int | None = 500_000
    starting_offsets: str = "earliest"


@dataclass
class WriterSummary:
    """What a run did, per query: micro-batches with input and rows read (each query reads every record)."""

    batches: dict[str, int] = field(default_factory=dict)
    input_rows: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


class StopSignal:
    """A stop request from a signal handler or the stop file; checked between micro-batches."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self._event = threading.Event()
        self._stop_file = stop_file

    def set(self) -> None:
        self._event.set()

    def requested(self) -> bool:
        if self._stop_file is not None and self._stop_file.exists():
            self._event.set()
        return self._event.is_set()

    def install_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop; a second one stops without waiting for the batch
        (still safe: an interrupted batch is replayed from the checkpoint on restart)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._event.is_set():
                raise KeyboardInterrupt
            logger.info("signal %d: stopping after the current micro-batch", signum)
            self.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)


def start_queries(spark: Any, config: Config, options: WriterOptions) -> list[Any]:
    """Start the feedback and corrupt queries; returns them (feedback first)."""
    layout = ArchiveLayout(config.archive_dir)
    # Partition values and corrupt dates are UTC whatever the machine's zone (spark-submit has no default).
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", config.kafka_bootstrap)
        .option("subscribe", config.topics.feedback)
        # First start only; afterwards the checkpoint holds the offsets.
        .option("startingOffsets", options.starting_offsets)
        # Records deleted by retention before we read them cannot be recovered; failing would stop the
        # archive for good. Spark logs the gap, we keep archiving what exists.
        .option("failOnDataLoss", "false")
    )
    if options.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(options.max_offsets_per_trigger))
    parsed = with_parsed(reader.load())

    def sink(
        frame: Any,
        name: str,
        path: Path,
        checkpoint: Path,
        partitions: Sequence[str],
        trigger_s: float = options.trigger_s,
    ) -> Any:
        writer = (
            frame.writeStream.queryName(name)
            .format("json")
            .outputMode("append")
            .partitionBy(*partitions)
            .option("path", str(path))
            .option("checkpointLocation", str(checkpoint))
        )
        if options.until_idle:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{int(trigger_s * 1000)} milliseconds")
        return writer.start()

    feedback = sink(
        feedback_rows(parsed),
        "feedback-archive",
        layout.feedback,
        layout.feedback_checkpoint,
        PARTITION_COLUMNS,
    )
    corrupt = sink(
        corrupt_rows(parsed),
        "feedback-corrupt",
        layout.corrupt,
        layout.corrupt_checkpoint,
        ["date"],
        corrupt_trigger_s(options.trigger_s),
    )
    counts_reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", config.kafka_bootstrap)
        # A pattern, not ``subscribe``: on a stack created before the topic existed (no `adplatform
        # topics` since) it matches nothing and the query idles instead of failing the whole archive.
        .option("subscribePattern", exact_pattern(config.topics.request_counts))
        .option("startingOffsets", options.starting_offsets)
        .option("failOnDataLoss", "false")
    )
    counts = sink(
        counts_rows(counts_reader.load()),
        COUNTS_QUERY,
        layout.request_counts,
        layout.request_counts_checkpoint,
        COUNTS_PARTITIONS,
    )
    return [feedback, corrupt, counts]


def corrupt_trigger_s(trigger_s: float) -> float:
    """The corrupt query's trigger: at least ``CORRUPT_TRIGGER_S``. It reads every record of the topic as the
    feedback query does, to keep the rare one that does not parse, and a micro-batch costs its fixed
    overhead (planning, offsets and commit logs, the sink's metadata) however few records it holds: at the
    feedback query's 5 s it ran as many micro-batches as that query, nearly all with nothing to write. Its
    files are late by up to this long; the feedback's are not."""
    return max(trigger_s, CORRUPT_TRIGGER_S)


def exact_pattern(topic: str) -> str:
    """A Java regex matching exactly ``topic`` (topic names are ``[A-Za-z0-9._-]``: escape the rest)."""
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in topic)


def _record_progress(queries: Sequence[Any], summary: WriterSummary, seen: dict[str, set[int]]) -> None:
    for query in queries:
        name = query.name
        done = seen.setdefault(name, set())
        last = query.lastProgress
        if last is None or int(last["batchId"]) in done:
            continue
        # recentProgress (up to 100 JSON documents) only when batches were missed since the last poll.
        progresses = [last] if int(last["batchId"]) - 1 in done else query.recentProgress
        for progress in progresses:
            batch = int(progress["batchId"])
            if batch in done:
                continue
            done.add(batch)
            rows = int(progress.get("numInputRows", 0))
            summary.batches[name] = summary.batches.get(name, 0) + 1
            summary.input_rows[name] = summary.input_rows.get(name, 0) + rows
            if rows:
                logger.info("%s: batch %d, %d rows", name, batch, rows)


def _stop_gracefully(queries: Sequence[Any], wait_s: float = 120.0) -> None:
    """Stop each query between micro-batches: a stop mid-batch is safe (the batch is replayed on restart)
    but throws its work away, so wait for the trigger to go idle first, within reason."""
    for query in queries:
        deadline = time.monotonic() + wait_s
        while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.05)
        query.stop()


def run_writer(
    spark: Any,
    config: Config,
    options: WriterOptions,
    *,
    stop: StopSignal | None = None,
) -> WriterSummary:
    """Run the archive until idle, until ``max_seconds``, or until ``stop`` is requested."""
    from pyspark.errors import StreamingQueryException

    layout = ArchiveLayout(config.archive_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    # A stop file left by an earlier stop request must not end this run at once.
    layout.stop_file.unlink(missing_ok=True)
    stop = stop if stop is not None else StopSignal(layout.stop_file)
    started = time.monotonic()
    deadline = started + options.max_seconds if options.max_seconds is not None else None
    queries = start_queries(spark, config, options)
    summary, seen = WriterSummary(), dict[str, set[int]]()
    try:
        while any(q.isActive for q in queries):
            for query in queries:
                error = query.exception()
                if error is not None:
                    raise ArchiveError(f"streaming query {query.name} failed: {error}")
            if stop.requested() or (deadline is not None and time.monotonic() >= deadline):
                _stop_gracefully(queries)
                break
            time.sleep(0.25)
            _record_progress(queries, summary, seen)
        for query in queries:
            try:
                query.awaitTermination()
            except StreamingQueryException as exc:
                raise ArchiveError(f"streaming query {query.name} failed: {exc}") from exc
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
        layout.stop_file.unlink(missing_ok=True)
    _record_progress(queries, summary, seen)
    summary.elapsed_s = time.monotonic() - started
    return summary


def request_stop(config: Config) -> Path:
    """Ask a running writer on this archive directory to stop after its current micro-batch."""
    layout = ArchiveLayout(config.archive_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.stop_file.touch()
    return layout.stop_file


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trigger-s", type=float, default=5.0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--until-idle", action="store_true")
    mode.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=500_000)
    parser.add_argument("--archive-dir", type=Path, default=None, help="Overrides ADP_ARCHIVE_DIR.")
    parser.add_argument("--bootstrap", default=None, help="Overrides ADP_KAFKA_BOOTSTRAP.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: config from ADP_* (arguments override), session from spark-submit."""
    from dataclasses import replace

    from pyspark.sql import SparkSession

    args = _parse_args(argv)
    config = load_config()
    if args.archive_dir is not None:
        config = replace(config, archive_dir=args.archive_dir.absolute())
    if args.bootstrap is not None:
        config = replace(config, kafka_bootstrap=args.bootstrap)
    configure_logging(config.log_level)
    options = WriterOptions(
        trigger_s=args.trigger_s,
        until_idle=args.until_idle,
        max_seconds=args.max_seconds,
        max_offsets_per_trigger=args.max_offsets_per_trigger or None,
    )
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Launched by spark-submit: master and the connector (--packages/--jars) come from its command line.
        spark = SparkSession.builder.appName(APP_NAME).getOrCreate()
    else:
        from archive.session import create_session, driver_java_options

        spark = create_session(APP_NAME, config.stack_dir, **driver_java_options(config.archive_java_options))
    stop = StopSignal(ArchiveLayout(config.archive_dir).stop_file)
    stop.install_handlers()
    tracker = None
    if not options.until_idle and options.max_seconds is None:  # a service: commit lag on its metrics port
        from adplatform.metrics import serve_metrics
        from archive.progress import ArchiveLagTracker

        serve_metrics(config, "archive")
        tracker = ArchiveLagTracker(config).start()
    try:
        summary = run_writer(spark, config, options, stop=stop)
    finally:
        spark.stop()
        if tracker is not None:
            tracker.stop()
    logger.info("archive stopped: %s", summary)
    return 0


if __name__ == "__main__":
    # Run as a file (spark-submit): its folder, archive/, is sys.path[0], where archive/html.py would be
    # imported as the standard library's html (by http.server, under the metrics' prometheus_client) and
    # the streaming job would die at start. The package is importable from the installation anyway.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.exit(main())
