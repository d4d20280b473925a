"""Redis's own stalls in a window, from its latency monitor (``adplatform.redis_latency``)."""

from __future__ import annotations

import time

import pytest

from adplatform.redis_client import RedisClient, is_cluster
from adplatform.redis_latency import StallReport, Stalls, monitor_threshold_ms, redis_stalls, stalls_in_window
from devstack.redis import REDIS_DIAGNOSTICS

HISTORY = [
    ("command", [(99, 7), (100, 12), (105, 6), (111, 30)]),
    ("aof-fsync-always", [(100, 9), (101, 41), (102, 5), (110, 8)]),
    ("expire-cycle", [(50, 70)]),
]


def test_a_window_counts_each_events_seconds_inside_it_and_its_worst_worst_event_first() -> None:
    assert stalls_in_window(HISTORY, 100.4, 110.9) == (
        Stalls("aof-fsync-always", 4, 41),
        Stalls("command", 2, 12),
    )  # the sample of second 100 counts (taken in it), 111 does not; expire-cycle's is older


def test_a_window_without_samples_has_no_stall() -> None:
    assert stalls_in_window(HISTORY, 60, 98) == ()
    assert stalls_in_window([], 0, 1e10) == ()


def test_the_line_names_each_event_or_says_none() -> None:
    report = StallReport(5, 9, (Stalls("aof-fsync-always", 8, 59), Stalls("command", 1, 12)))
    assert report.line() == (
        "Redis stalls >= 5 ms in 9 s: aof-fsync-always in 8 s (worst 59 ms), command in 1 s (worst 12 ms)"
    )
    assert StallReport(5, 60, ()).line() == "Redis stalls >= 5 ms in 60 s: none"
    assert report.as_dict()["events"] == {
        "aof-fsync-always": {"seconds": 8, "worst_ms": 59},
        "command": {"seconds": 1, "worst_ms": 12},
    }


#: A script that keeps Redis busy for 12 ms (its clock, no key): a "command" stall of the monitor's.
BUSY_12_MS = """
local t = redis.call('TIME')
local start = t[1] * 1e6 + t[2]
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > 12000
return 1
"""


@pytest.mark.redis
async def test_the_stacks_redis_reports_a_slow_script_as_a_stall_of_its_window(
    redis_client: RedisClient,
) -> None:
    if is_cluster(redis_client):  # one monitor per node: nothing to sum, so nothing is claimed
        assert await redis_stalls(redis_client, 0, time.time()) is None
        return
    assert REDIS_DIAGNOSTICS == ("--latency-monitor-threshold", "5")
    assert await monitor_threshold_ms(redis_client) == 5
    since = time.time()
    await redis_client.eval(BUSY_12_MS, 0)
    report = await redis_stalls(redis_client, since, time.time())
    assert report is not None and report.threshold_ms == 5 and report.window_s >= 1
    command = [e for e in report.events if e.event == "command"]
    assert command and command[0].worst_ms >= 12, report
