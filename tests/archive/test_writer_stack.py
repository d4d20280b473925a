"""The streaming archive on real Kafka and Spark: exactly-once across stops, the corrupt area, compaction.

One archive is built for the module: events (and corrupt messages) are published while the writer runs;
the writer is stopped gracefully mid-stream, restarted in another process that is SIGKILLed in the middle of
a micro-batch, and finally run until idle. The tests then check what the archive holds. The compaction
test rewrites the archive, so it comes last.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from adplatform.config import ARCHIVE_JAVA_OPTIONS, Config
from adplatform.pidfile import children, cmdline
from adplatform.wire import FeedbackEvent, encoder
from archive.compact import FAULT_ENV, compact
from archive.feedback_writer import WriterOptions, WriterSummary, request_stop, run_writer
from archive.layout import ArchiveLayout
from archive.reader import iter_lines, read_lock, snapshot
from archive.sinklog import committed_files
from tests.archive.conftest import publish
from tests.archive.events import make_events

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

N = 3000
START_MS = 1_760_000_000_000  # 2025-10-09T08:53:20Z; 5 s per request → about three hours, four partitions
CORRUPT = (
    b"not json at all",
    b'{"event_id": "only-an-id"}',
    b"\xff\xfe\x00 binary garbage",
    b"[1, 2, 3]",
)


@dataclass(frozen=True)
class Archived:
    config: Config
    events: list[FeedbackEvent]
    corrupt: list[bytes]
    runs: list[WriterSummary]
    #: Part files left uncommitted by the crashed run.
    orphans: set[str]
    #: The command line of the crashed run's JVM (``archive run``, as the platform runs the archive).
    service_jvm: tuple[str, ...]


def _wrong_fields(event: FeedbackEvent) -> list[bytes]:
    """Valid JSON with a bad field: a string where an integer belongs; an action outside the literals."""
    good = orjson.loads(encoder.encode(event))
    return [
        orjson.dumps({**good, "event_id": "bad-type", "click": "yes"}),
        orjson.dumps({**good, "event_id": "bad-action", "user_action": "purchase"}),
    ]


def _committed_file_count(layout: ArchiveLayout) -> int:
    return len(committed_files(layout.feedback))


async def _wait_for(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.1)


async def _publish_slowly(config: Config, payloads: Sequence[bytes], pieces: int) -> None:
    size = max(1, len(payloads) // pieces)
    for i in range(0, len(payloads), size):
        await publish(config, payloads[i : i + size])
        await asyncio.sleep(0.3)


def _uncommitted(layout: ArchiveLayout) -> set[str]:
    on_disk = {str(p.relative_to(layout.feedback)) for p in layout.feedback.glob("date=*/hour=*/part-*.json")}
    return on_disk - set(committed_files(layout.feedback))


def _descendants(root: int) -> list[int]:
    """The processes under ``root`` (children, their children...)."""
    found = children(root)
    for child in found:  # each child's own children are appended, and visited in their turn
        found += children(child)
    return found


def _java_argv(root: int) -> tuple[str, ...]:
    """The command line of the JVM under ``root`` (empty if there is none)."""
    for pid in _descendants(root):
        argv = cmdline(pid)
        if argv and Path(argv[0]).name == "java":
            return argv
    return ()


async def _crash_writer(config: Config, repo_root: str, crash_when: Any) -> tuple[set[str], tuple[str, ...]]:
    """Run `adplatform archive run` in its own process group; SIGKILL the group once ``crash_when()``;
    returns the uncommitted files then and the JVM's command line."""
    layout = ArchiveLayout(config.archive_dir)
    env = {
        **os.environ,
        "ADP_TOPIC_PREFIX": config.topics.prefix,
        "ADP_GROUP_PREFIX": config.group_prefix,
        "ADP_ARCHIVE_DIR": str(config.archive_dir),
        "ADP_LOG_LEVEL": "WARNING",
        # The sink log's compaction interval of the module's session (3), not Spark's default (10): a log
        # with no compaction yet takes the interval of whoever writes next, and a batch-2 written as
        # `2` by this process is `2.compact` to the next session's reader (FileNotFoundException).
        "PYSPARK_SUBMIT_ARGS": "--conf spark.sql.streaming.fileSink.log.compactInterval=3 pyspark-shell",
    }
    env.pop("ADP_ARCHIVE_JAVA_OPTIONS", None)  # the service's default JVM options
    cmd = [sys.executable, "-m", "adplatform.cli", "archive", "run", "--trigger-s", "0.5"]
    cmd += ["--max-offsets-per-trigger", "300"]
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / "crashed-writer.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=repo_root, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            await _wait_for(lambda: proc.returncode is not None or crash_when(), timeout_s=120)
            assert proc.returncode is None, "the writer ended before the crash point"
            orphans = _uncommitted(layout)
            jvm = _java_argv(proc.pid)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 30)
    return orphans, jvm


@pytest.fixture(scope="module")
async def archived(spark: Any, feedback_topic: Config, repo_root: str) -> Archived:
    config = feedback_topic
    layout = ArchiveLayout(config.archive_dir)
    events = make_events(N, seed=3, start_ms=START_MS, step_ms=5_000)
    payloads = [encoder.encode(e) for e in events]
    corrupt = [*CORRUPT, *_wrong_fields(events[0])]
    # Corrupt messages spread through the stream, so each run meets some.
    for i, bad in enumerate(corrupt):
        payloads.insert((i + 1) * len(payloads) // (len(corrupt) + 1), bad)
    first, second, third = payloads[:1000], payloads[1000:2200], payloads[2200:]
    options = WriterOptions(trigger_s=0.5, max_offsets_per_trigger=300)
    runs: list[WriterSummary] = []

    # Run 1: publish while running, then a graceful stop mid-stream through the stop file (`archive stop`).
    await publish(config, first)
    run = asyncio.create_task(asyncio.to_thread(run_writer, spark, config, options))
    await _publish_slowly(config, second, pieces=4)
    await _wait_for(lambda: _committed_file_count(layout) >= 3)
    request_stop(config)
    runs.append(await run)
    assert not layout.stop_file.exists()

    # Run 2: restart from the checkpoint in another process and SIGKILL it (JVM included) in the middle
    # of a micro-batch: the moment a part file exists that no committed batch lists.
    await publish(config, third)
    before = set(committed_files(layout.feedback))
    orphans, service_jvm = await _crash_writer(
        config,
        repo_root,
        lambda: bool(_uncommitted(layout)) and len(committed_files(layout.feedback)) > len(before),
    )

    # Run 3: until idle; everything the topic holds is archived exactly once.
    runs.append(await asyncio.to_thread(run_writer, spark, config, WriterOptions(until_idle=True)))
    return Archived(config, events, corrupt, runs, orphans, service_jvm)


def test_the_archive_service_jvm_compiles_with_c1_alone(archived: Archived) -> None:
    assert archived.service_jvm, "no JVM found under `archive run`"
    assert set(ARCHIVE_JAVA_OPTIONS.split()) <= set(archived.service_jvm), archived.service_jvm


def archived_ids(layout: ArchiveLayout) -> Counter[str]:
    with read_lock(layout, timeout_s=10):
        return Counter(str(orjson.loads(raw)["event_id"]) for raw in iter_lines(snapshot(layout).files))


def test_restart_mid_stream_archives_each_event_exactly_once(archived: Archived, spark: Any) -> None:
    layout = ArchiveLayout(archived.config.archive_dir)
    total = len(archived.events) + len(archived.corrupt)
    read_per_run = [r.input_rows.get("feedback-archive", 0) for r in archived.runs]
    assert 0 < read_per_run[0] < total, f"the first run must stop mid-stream: {read_per_run}"
    assert archived.orphans, "the crash must hit a micro-batch after it wrote files, before its commit"
    assert archived.orphans <= _uncommitted(layout), "uncommitted files stay on disk, ignored by readers"
    ids = archived_ids(layout)
    assert sum(ids.values()) == N and max(ids.values()) == 1
    assert set(ids) == {e.event_id for e in archived.events}
    # Spark's own reader (through _spark_metadata) agrees, and sees the same exact money.
    frame = spark.read.json(str(layout.feedback))
    assert frame.count() == N
    spent = sum(e.expenditure_micros for e in archived.events)
    assert frame.agg({"expenditure_micros": "sum"}).first()[0] == spent


def test_partitions_follow_event_time(archived: Archived) -> None:
    layout = ArchiveLayout(archived.config.archive_dir)
    by_key = {e.event_id: e for e in archived.events}
    with read_lock(layout, timeout_s=10):
        for path in snapshot(layout).uncompacted[:20]:
            date, hour = path.parent.parent.name, path.parent.name
            for raw in iter_lines((path,)):
                event = by_key[orjson.loads(raw)["event_id"]]
                assert f"date={event.timestamp[:10]}" == date and f"hour={event.timestamp[11:13]}" == hour


def test_corrupt_messages_are_kept_with_their_raw_value(archived: Archived) -> None:
    layout = ArchiveLayout(archived.config.archive_dir)
    records = [
        orjson.loads(raw)
        for raw in iter_lines(tuple(layout.corrupt / key for key in committed_files(layout.corrupt)))
    ]
    assert Counter(base64.b64decode(r["value_base64"]) for r in records) == Counter(archived.corrupt)
    for record in records:
        assert record["topic"] == archived.config.topics.feedback
        assert record["partition"] >= 0 and record["offset"] >= 0 and record["reason"]
    reasons = {base64.b64decode(r["value_base64"]): r["reason"] for r in records}
    assert reasons[b'{"event_id": "only-an-id"}'].startswith("missing required field(s): campaign_id")
    assert any("user_action" in reason for reason in reasons.values())
    assert records[0]["value"] is not None


def test_compaction_killed_half_way_then_rerun(archived: Archived, repo_root: str) -> None:
    layout = ArchiveLayout(archived.config.archive_dir)
    partitions = {f"date={e.timestamp[:10]}/hour={e.timestamp[11:13]}" for e in archived.events}
    env = {
        **os.environ,
        "ADP_ARCHIVE_DIR": str(layout.root),
        "ADP_LOG_LEVEL": "WARNING",
        FAULT_ENV: "mid_source_delete",
    }
    cmd = [sys.executable, "-m", "adplatform.cli", "archive", "compact", "--all"]
    proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()
        assert line.strip() == b"FAULT mid_source_delete", line
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert archived_ids(layout) == Counter(e.event_id for e in archived.events)

    env.pop(FAULT_ENV)
    subprocess.run(cmd, cwd=repo_root, env=env, check=True, capture_output=True, timeout=120)
    ids = archived_ids(layout)
    assert sum(ids.values()) == N and set(ids) == {e.event_id for e in archived.events}
    files = [p for p in layout.compacted.rglob("*.json") if not p.name.startswith(("_", "."))]
    assert sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in files) == sorted(partitions)
    assert not any((layout.feedback / key).exists() for key in committed_files(layout.feedback))
    assert Path(layout.compacted / sorted(partitions)[0] / "_manifest").is_file()


async def test_sigterm_stops_the_writer_cleanly_and_late_events_join_compacted_hours(
    archived: Archived, repo_root: str
) -> None:
    config = archived.config
    layout = ArchiveLayout(config.archive_dir)
    compact(layout, all_partitions=True)  # a no-op after the compaction test; makes this one standalone
    # Late events: timestamps of hours that are already compacted.
    late = [msgspec.structs.replace(e, event_id=f"late-{i}") for i, e in enumerate(archived.events[::300])]
    env = {
        **os.environ,
        "ADP_TOPIC_PREFIX": config.topics.prefix,
        "ADP_ARCHIVE_DIR": str(config.archive_dir),
    }
    cmd = [
        sys.executable,
        "-m",
        "adplatform.cli",
        "archive",
        "run",
        "--trigger-s",
        "0.5",
        "--max-seconds",
        "300",
    ]
    with (layout.root / "sigterm-writer.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            await publish(config, [encoder.encode(e) for e in late])
            await _wait_for(lambda: len(snapshot(layout).uncompacted) > 0, timeout_s=120)
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert proc.returncode == 0, out
    assert out.decode().startswith(f"archive: {len(late)} records"), out

    summary = compact(layout, all_partitions=True)
    expected = Counter([e.event_id for e in archived.events] + [e.event_id for e in late])
    assert archived_ids(layout) == expected
    late_partitions = {f"date={e.timestamp[:10]}/hour={e.timestamp[11:13]}" for e in late}
    assert sorted(summary.partitions) == sorted(late_partitions)
    for partition in late_partitions:
        names = [p.name for p in (layout.compacted / partition).glob("part-*.json")]
        assert names == ["part-00002.json"], names
