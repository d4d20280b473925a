"""Where Redis itself stalled during a window, from its latency monitor: the disk's share of a feedback's
tail, printed beside the feedback figures by the demo and ``bench.feedback_http``.

With ``appendfsync always`` Redis answers no client while it fsyncs its AOF, so one slow ``fsync`` (a
disk or a virtual disk stalling for tens of milliseconds) holds every feedback in flight on every worker.
Redis records, for each second in which an event took at least ``latency-monitor-threshold`` ms, that
second's longest: ``aof-fsync-always`` (the fsync before the answers), ``command`` (a slow command or
script), ``expire-cycle``, ... (``LATENCY HISTORY``, its last 160 such seconds per event). The stack's
Redis runs with the monitor on (``devstack.redis.REDIS_DIAGNOSTICS``); a Redis with it off, or a cluster
(one monitor per node), reports nothing rather than "no stall".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import msgspec
from redis.exceptions import ResponseError

from adplatform.redis_client import REDIS_FAILURES, RedisClient, is_cluster, open_redis


class Stalls(msgspec.Struct, frozen=True):
    """One latency-monitor event inside a window (``aof-fsync-always``: an fsync of the AOF held every
    client; ``command``: a slow command or script): in how many seconds it took at least the threshold,
    and its longest."""

    event: str
    seconds: int
    worst_ms: int


class StallReport(msgspec.Struct, frozen=True):
    """What the monitor saw over ``window_s`` seconds, events of ``threshold_ms`` and more, the worst
    first (empty ``events``: no stall). Also the dashboard's JSON (``admin.board_schema.Overview``)."""

    threshold_ms: int
    window_s: int
    events: tuple[Stalls, ...]

    def line(self) -> str:
        """One line for a person: ``Redis stalls >= 5 ms in 8 s: aof-fsync-always in 3 s (worst 41 ms)``."""
        head = f"Redis stalls >= {self.threshold_ms} ms in {self.window_s} s:"
        if not self.events:
            return f"{head} none"
        return f"{head} " + ", ".join(
            f"{e.event} in {e.seconds} s (worst {e.worst_ms} ms)" for e in self.events
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "threshold_ms": self.threshold_ms,
            "window_s": self.window_s,
            "events": {e.event: {"seconds": e.seconds, "worst_ms": e.worst_ms} for e in self.events},
        }


def stalls_in_window(
    history: Iterable[tuple[str, Sequence[tuple[int, int]]]], since_s: float, until_s: float
) -> tuple[Stalls, ...]:
    """Each event's samples (unix second, milliseconds) from ``since_s`` to ``until_s`` (whole seconds: a
    sample names the second it was taken in), worst event first; events without a sample left out."""
    first, last = int(since_s), int(until_s)
    out = []
    for event, samples in history:
        inside = [ms for ts, ms in samples if first <= ts <= last]
        if inside:
            out.append(Stalls(event, len(inside), max(inside)))
    return tuple(sorted(out, key=lambda s: (-s.worst_ms, s.event)))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def monitor_threshold_ms(client: RedisClient) -> int | None:
    """The monitor's threshold in ms; None when it is off, on a cluster, or ``CONFIG`` is refused."""
    if is_cluster(client):
        return None
    try:
        reply = await client.config_get("latency-monitor-threshold")
    except ResponseError:  # a managed Redis may rename or refuse CONFIG
        return None
    threshold = int(reply.get("latency-monitor-threshold") or 0)
    return threshold or None


async def redis_stalls(client: RedisClient, since_s: float, until_s: float) -> StallReport | None:
    """Redis's stalls from unix time ``since_s`` to ``until_s``; None when its monitor cannot say (off,
    a cluster, ``LATENCY`` refused) or Redis does not answer: a diagnostic never fails its caller. Reads
    the server's monitor only: it resets nothing."""
    try:
        threshold = await monitor_threshold_ms(client)
        if threshold is None:
            return None
        latest = await client.execute_command("LATENCY", "LATEST")
        events = [_text(entry[0]) for entry in latest]
        pipe = client.pipeline(transaction=False)  # one round trip for every event's history
        for event in events:
            pipe.execute_command("LATENCY", "HISTORY", event)
        replies = await pipe.execute()
    except REDIS_FAILURES:  # ResponseError (a refused LATENCY) included
        return None
    history = [
        (event, [(int(ts), int(ms)) for ts, ms in samples])
        for event, samples in zip(events, replies, strict=True)
    ]
    window = max(int(until_s) - int(since_s) + 1, 1)
    return StallReport(threshold, window, stalls_in_window(history, since_s, until_s))


async def stalls_since(redis_url: str, since_s: float) -> StallReport | None:
    """``redis_stalls`` from unix time ``since_s`` until now, on a client of its own."""
    client = open_redis(redis_url)
    try:
        return await redis_stalls(client, since_s, time.time())
    finally:
        await client.aclose()
