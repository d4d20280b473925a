"""The request-count reporter without Kafka: windows hold exact differences, a record Kafka did not take is
sent again under the same ``record_id``, the queue is bounded, and ``stop`` ships the partial window."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from adplatform.config import Config, load_config
from adplatform.request_counts import RequestCounts, counts_decoder
from adserver.state import NO_ELIGIBLE_AD, ServeStats
from adserver.sync.counts import RequestCountReporter


@pytest.fixture
def config() -> Config:
    """A config read from no environment: nothing here connects."""
    return load_config({}, dotenv=Path("does-not-exist")).namespaced("unit-")


class FakeProducer:
    """Records what was acknowledged; fails the next ``failures`` sends."""

    def __init__(self, failures: int = 0, error: type[Exception] = KafkaTimeoutError) -> None:
        self.failures = failures
        self.error = error
        self.acked: list[tuple[str, RequestCounts, bytes | None]] = []
        self.attempts = 0
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> object:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error()
        self.acked.append((topic, counts_decoder.decode(value), key))
        return None


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def _reporter(
    config: Config, stats: ServeStats, clock: Clock, max_pending: int = 100
) -> RequestCountReporter:
    return RequestCountReporter(config, stats, clock=clock, worker="w1", max_pending=max_pending)


def test_a_window_holds_the_exact_difference_since_the_previous_one(config: Config) -> None:
    stats, clock = ServeStats(served=5, unfilled=2), Clock(1000.0)
    reporter = _reporter(config, stats, clock)  # counts before it started are not in any window
    stats.served, stats.unfilled, stats.rejected, stats.not_ready = 12, 5, 1, 4
    clock.now_s = 1060.0
    first = reporter.close_window()
    assert first == RequestCounts(
        record_id="w1:0",
        worker="w1",
        seq=0,
        start_ms=1_000_000,
        end_ms=1_060_000,
        served=7,
        no_fill=3,
        no_fill_reasons={NO_ELIGIBLE_AD: 3},
        rejected=1,
        not_ready=4,
    )
    assert first.requests == 10
    clock.now_s = 1120.0
    assert reporter.close_window() is None  # nothing answered: no record, and no seq used
    stats.served += 1
    clock.now_s = 1180.0
    second = reporter.close_window()
    assert second is not None
    assert (second.seq, second.start_ms, second.served, second.no_fill) == (1, 1_120_000, 1, 0)
    assert second.no_fill_reasons == {}
    assert [r.record_id for r in reporter.pending] == ["w1:0", "w1:1"]


@pytest.mark.parametrize("error", [KafkaTimeoutError, UnknownTopicOrPartitionError])
async def test_a_record_kafka_did_not_take_is_sent_again_with_its_id(
    config: Config, error: type[Exception]
) -> None:
    stats, clock = ServeStats(), Clock(0.0)
    reporter = _reporter(config, stats, clock)
    producer = FakeProducer(failures=1, error=error)  # a timeout; a stack without the topic yet
    stats.served = 3
    reporter.close_window()
    assert not await reporter.ship(producer)
    stats.unfilled = 2
    reporter.close_window()
    assert await reporter.ship(producer)
    assert [(t, r.record_id, r.served, r.no_fill, k) for t, r, k in producer.acked] == [
        (config.topics.request_counts, "w1:0", 3, 0, b"w1"),
        (config.topics.request_counts, "w1:1", 0, 2, b"w1"),
    ]
    assert (reporter.sent, reporter.failed_sends, len(reporter.pending)) == (2, 1, 0)


def test_the_queue_is_bounded_and_counts_what_it_drops(config: Config) -> None:
    stats, clock = ServeStats(), Clock(0.0)
    reporter = _reporter(config, stats, clock, max_pending=2)
    for _ in range(3):
        stats.served += 1
        reporter.close_window()
    assert [r.seq for r in reporter.pending] == [1, 2]
    assert reporter.dropped == 1


async def test_run_closes_windows_on_their_boundary_and_the_partial_one_on_stop(config: Config) -> None:
    stats = ServeStats()
    producer = FakeProducer()
    # A 1 s window: the first closes on the next whole second of the real clock.
    reporter = RequestCountReporter(
        replace(config, request_count_interval_s=1), stats, producer_factory=lambda: producer, worker="w2"
    )
    task = asyncio.create_task(reporter.run())
    stats.served = 4
    await asyncio.sleep(1.2)  # one boundary passed
    stats.unfilled = 1
    reporter.stop()
    await asyncio.wait_for(task, 5)
    records = [r for _, r, _ in producer.acked]
    assert sum(r.served for r in records) == 4 and sum(r.no_fill for r in records) == 1
    assert [r.seq for r in records] == list(range(len(records))) and len(records) >= 1
    # Windows never overlap; they touch unless an empty window between them was skipped (a loaded
    # machine can pass a second boundary during the sleep).
    assert all(a.start_ms < a.end_ms <= b.start_ms for a, b in itertools.pairwise(records))
    assert producer.started and producer.stopped
