"""End-to-end archive lag: event created → readable in the JSON archive, at a steady publish rate.

    python -m bench.archive_lag [--rate 5000] [--seconds 20] [--trigger-s 1] [--java-options '...']

Runs the real streaming job (``archive.feedback_writer``, local[2]) on a fresh topic while an async
producer publishes ``FeedbackEvent``s at ``--rate`` for ``--seconds``, each stamped with its creation time.
Lag per event = commit time of the micro-batch that archived it (mtime of ``_spark_metadata/<batch>``: the
moment readers can see it) − the event's ``timestamp_ms``. Also reported: the part file's mtime − event
time (written, not yet committed). The job is warmed up on a few hundred events first (a running archive
is warm). Also reported: the Spark JVM's CPU over the measured phase (publish start to the last event
archived), per thousand events. The JVM runs with the archive service's options (``ADP_ARCHIVE_JAVA_OPTIONS``,
C1 alone by default); ``--java-options ''`` measures the JVM's defaults, for the reference row. Results go
to ``bench/results/archive_lag-<UTC time>.json``. Target: p99 ≤ 10 s at 5,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from adplatform.cli.common import script_main
from adplatform.config import Config, load_config
from adplatform.kafka import delete_topics, ensure_topics, make_producer, wait_for_topics
from adplatform.wire import encoder
from archive.feedback_writer import StopSignal, WriterOptions, WriterSummary, run_writer
from archive.layout import ArchiveLayout
from archive.session import create_session, driver_java_options
from archive.sinklog import relative_key
from loadtest.cpu import TICKS_PER_S, parse_stat
from tests.archive.events import make_event

RESULTS = Path(__file__).parent / "results"
TARGET_P99_S = 10.0
WARMUP_EVENTS = 500


class _Stamp(msgspec.Struct):
    event_id: str
    timestamp_ms: int


_stamp = msgspec.json.Decoder(_Stamp)


async def publish_at_rate(config: Config, rate: float, seconds: float, *, prefix: str) -> tuple[int, float]:
    """Publish ``rate`` events/s for ``seconds`` in 10 ms ticks; returns (events, achieved seconds)."""
    producer = make_producer(config, linger_ms=5)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        tick_s = 0.01
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + 1
            now_ms = time.time_ns() // 1_000_000
            for _ in range(due - sent):
                sent += 1
                event = msgspec.structs.replace(make_event(sent, "view", now_ms), event_id=f"{prefix}{sent}")
                await producer.send(config.topics.feedback, encoder.encode(event))
            await asyncio.sleep(max(0.0, tick_s - (time.monotonic() - started - elapsed)))
        await producer.flush()
    finally:
        await producer.stop()
    return sent, time.monotonic() - started


class LagCollector:
    """Reads committed batches incrementally (a batch's log file never changes once written)."""

    def __init__(self, layout: ArchiveLayout, prefix: str) -> None:
        self.layout = layout
        self.prefix = prefix
        self.seen: set[str] = set()
        self.commit_lags: list[float] = []
        self.write_lags: list[float] = []

    def scan(self) -> int:
        """Take in newly committed batches; returns the number of measured events archived so far."""
        log_dir = self.layout.sink_log
        if not log_dir.is_dir():
            return 0
        for entry in sorted(log_dir.iterdir(), key=lambda p: p.name):
            # Plain batch files only: .crc and temp files are skipped, and log compaction is disabled.
            if not entry.name.isdigit() or entry.name in self.seen:
                continue
            self.seen.add(entry.name)
            committed_ms = entry.stat().st_mtime_ns / 1e6
            for line in entry.read_text().splitlines()[1:]:
                part = self.layout.feedback / relative_key(json.loads(line)["path"])
                written_ms = part.stat().st_mtime_ns / 1e6
                with part.open("rb") as f:
                    for raw in f:
                        stamp = _stamp.decode(raw)
                        if stamp.event_id.startswith(self.prefix):
                            self.commit_lags.append((committed_ms - stamp.timestamp_ms) / 1000)
                            self.write_lags.append((written_ms - stamp.timestamp_ms) / 1000)
        return len(self.commit_lags)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)

    return {
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def process_cpu_s(pid: int) -> float:
    """CPU seconds ``pid`` has used so far (user and system)."""
    return parse_stat(Path(f"/proc/{pid}/stat").read_text()).cpu_ticks / TICKS_PER_S


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = load_config()
    java_options = base.archive_java_options if args.java_options is None else args.java_options.strip()
    tag = f"bench{uuid.uuid4().hex[:8]}-"
    config = base.namespaced(tag, archive_dir=base.stack_dir / "bench-archive" / tag.rstrip("-"))
    layout = ArchiveLayout(config.archive_dir)
    await ensure_topics(config, [config.topics.feedback])
    await wait_for_topics(config, [config.topics.feedback])
    spark = create_session(
        "adplatform-bench-archive-lag",
        config.stack_dir,
        # One log file per batch (no log compaction) so each batch's commit time is its file's mtime.
        **{"spark.sql.streaming.fileSink.log.compactInterval": "1000000"},
        **driver_java_options(java_options),
    )
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    stop = StopSignal()
    options = WriterOptions(trigger_s=args.trigger_s, max_offsets_per_trigger=None)
    writer: asyncio.Task[WriterSummary] = asyncio.create_task(
        asyncio.to_thread(run_writer, spark, config, options, stop=stop)
    )
    try:
        print(f"archive_lag: warming up on {WARMUP_EVENTS} events", file=sys.stderr)
        warm, _ = await publish_at_rate(config, WARMUP_EVENTS, 1.0, prefix="warmup-")
        warmup = LagCollector(layout, "warmup-")
        await _until(lambda: warmup.scan() >= warm, 120)
        measured = LagCollector(layout, "m-")
        measured.seen |= warmup.seen
        print(f"archive_lag: publishing {args.rate:,.0f}/s for {args.seconds:.0f}s", file=sys.stderr)
        cpu_before = process_cpu_s(jvm_pid)
        sent, took_s = await publish_at_rate(config, args.rate, args.seconds, prefix="m-")
        await _until(lambda: measured.scan() >= sent, 180)
        jvm_cpu_s = process_cpu_s(jvm_pid) - cpu_before
    finally:
        stop.set()
        try:
            summary = await writer
        finally:
            spark.stop()
            await delete_topics(config, [config.topics.feedback])  # the run's own topic, by its prefix
            if not args.keep:
                shutil.rmtree(config.archive_dir, ignore_errors=True)
    commit_lags, write_lags = measured.commit_lags, measured.write_lags
    batches = len(measured.seen) - len(warmup.seen)
    result = {
        "benchmark": "archive_lag",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target_rate_per_s": args.rate,
        "achieved_rate_per_s": round(sent / took_s, 1),
        "events": sent,
        "archived": len(commit_lags),
        "publish_seconds": round(took_s, 2),
        "trigger_s": args.trigger_s,
        "micro_batches_measured": batches,
        "writer_batches": summary.batches,
        "commit_lag_s": percentiles(commit_lags),
        "file_write_lag_s": percentiles(write_lags),
        "target_p99_s": TARGET_P99_S,
        "machine": {"cpus": os.cpu_count(), "spark_master": "local[2]"},
        "java_options": java_options,
        "jvm_cpu_s": round(jvm_cpu_s, 2),
        "jvm_cpu_ms_per_1k_events": round(jvm_cpu_s * 1e6 / max(sent, 1), 1),
    }
    result["meets_target"] = bool(commit_lags) and result["commit_lag_s"]["p99"] <= TARGET_P99_S
    return result


async def _until(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"archive did not catch up within {timeout_s:.0f}s")
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="End-to-end archive lag at a steady publish rate.")
    parser.add_argument("--rate", type=float, default=5000.0, help="Events per second.")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--trigger-s", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark's archive directory.")
    parser.add_argument(
        "--java-options",
        default=None,
        help="The Spark JVM's options (default: ADP_ARCHIVE_JAVA_OPTIONS, as the service; '' for none).",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"archive_lag-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    lag = result["commit_lag_s"]
    print(
        f"archive lag at {result['achieved_rate_per_s']:,.0f} events/s (trigger {args.trigger_s}s): "
        f"p50 {lag.get('p50')}s, p99 {lag.get('p99')}s, max {lag.get('max')}s over {result['archived']:,} "
        f"events → {'meets' if result['meets_target'] else 'MISSES'} the {TARGET_P99_S:.0f}s p99 target"
        f"; JVM ({result['java_options'] or 'default options'}) {result['jvm_cpu_s']} CPU s, "
        f"{result['jvm_cpu_ms_per_1k_events']} ms per 1,000 events; {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(script_main(main))
